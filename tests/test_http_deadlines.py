"""The OpenAI-compatible client against real misbehaving servers on loopback: backend specs that would
leak to another endpoint, one deadline per request, Retry-After, and probes asked once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from rerank.backends import load_backend, parse_spec
from rerank.backends.openai import OpenAIBackend
from rerank.errors import BackendError, ConfigError


# ---- specs and URLs: never another endpoint than the one written ----------------------------------
@pytest.mark.parametrize("spec, message", [
    ("openai:ftp://127.0.0.1:1/v1#m", "URL scheme 'ftp' is not supported"),
    ("openai:file:///etc/passwd#m", "URL scheme 'file' is not supported"),
    ("openai:http://127.0.0.1:99999/v1#m", "port between 1 and 65535"),
    ("openai:http://127.0.0.1:0/v1#m", "port between 1 and 65535"),
    ("openai:http:///v1#m", "not a valid URL"),
    ("openai:http://[::1/v1#m", "Invalid IPv6 URL"),
    ("openai:http://127.0.0.1:8000/v1#m?timeout=1", "options go before the model"),
    ("openai:127.0.0.1:8000/v1#m", "without http:// or https://"),
    ("openai:localhost:8000/v1", "without http:// or https://"),
    ("openai:gpt#4", "without http:// or https://"),
    ("vllm:http://127.0.0.1:8000/v1", "only openai: takes a server URL"),
    ("openai:http://127.0.0.1:8000/v1?timeout=abc#m", "timeout must be a number or None, got 'abc'"),
    ("openai:http://127.0.0.1:8000/v1?timeout=-1#m", "timeout must be > 0"),
    ("openai:http://127.0.0.1:8000/v1?timeout=1&timeout=2#m", "'timeout' is given twice"),
    ("openai:http://127.0.0.1:8000/v1?nosuch=1#m", "unexpected keyword argument 'nosuch'"),
    ("openai:http://127.0.0.1:8000/v1?timeout#m", "is not key=value"),
    ("openai:http://127.0.0.1:8000/v1?base_url=http://x:1/v1#m", "base_url given twice"),
])
def test_bad_backend_specs_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(spec)


def test_spec_options_reach_the_backend():
    assert parse_spec("openai:http://127.0.0.1:8000/v1?timeout=2.5&guided=off#m") == (
        "openai", {"base_url": "http://127.0.0.1:8000/v1", "model": "m", "timeout": 2.5, "guided": "off"})
    assert parse_spec("openai:gpt-4o-mini?max_retries=0") == ("openai", {"model": "gpt-4o-mini", "max_retries": 0})
    assert parse_spec("openai:ollama/llama3:8b") == ("openai", {"model": "ollama/llama3:8b"})
    backend = load_backend("openai:http://127.0.0.1:9/v1?timeout=2.5&probe_timeout=1#m")
    assert (backend.timeout, backend.probe_timeout, backend.model) == (2.5, 1, "m")


def test_no_base_url_is_an_error_not_a_public_default(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="never defaults to a public endpoint"):
        load_backend("openai:gpt-4o-mini")
    monkeypatch.setenv("OPENAI_BASE_URL", "ftp://127.0.0.1:1/v1")
    with pytest.raises(ConfigError, match=r"\$OPENAI_BASE_URL: URL scheme 'ftp'"):
        OpenAIBackend("m")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert OpenAIBackend("m").base_url == "http://127.0.0.1:9/v1"
    with pytest.raises(ConfigError, match="port between 1 and 65535"):
        OpenAIBackend("m", base_url="http://127.0.0.1:99999/v1")


def test_timeout_defaults_to_a_minute_and_follows_the_environment(monkeypatch):
    monkeypatch.delenv("RERANK_HTTP_TIMEOUT", raising=False)
    assert OpenAIBackend("m", base_url="http://127.0.0.1:9/v1").timeout == 60
    monkeypatch.setenv("RERANK_HTTP_TIMEOUT", "7.5")
    assert OpenAIBackend("m", base_url="http://127.0.0.1:9/v1").timeout == 7.5
    monkeypatch.setenv("RERANK_HTTP_TIMEOUT", "nan")
    with pytest.raises(ConfigError, match="RERANK_HTTP_TIMEOUT"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")


# ---- deadlines against real servers ---------------------------------------------------------------
@pytest.mark.server
def test_a_trickling_server_is_cut_off_at_the_deadline(misbehaving_server):
    backend = OpenAIBackend("m", base_url=misbehaving_server.url("trickle"), timeout=1.5, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(BackendError, match="did not answer within 1.5 s"):
        backend.generate(["hi"])
    assert time.monotonic() - started < 10  # the body alone would take over a minute at one byte per 0.5 s
    assert misbehaving_server.hits["trickle"] == 1  # the deadline covers the retries too


@pytest.mark.server
def test_a_silent_server_is_reported_once_within_the_deadline(misbehaving_server):
    before = misbehaving_server.hits.get("silent", 0)
    backend = load_backend(f"openai:{misbehaving_server.url('silent')}?timeout=1#m")
    with pytest.raises(BackendError, match="did not answer within 1 s"):
        backend.generate(["hi", "there"])
    assert misbehaving_server.hits["silent"] == before + 2  # one attempt per prompt, no retry past the deadline


@pytest.mark.server
def test_retry_after_is_honoured_within_the_deadline(misbehaving_server):
    backend = OpenAIBackend("m", base_url=misbehaving_server.url("busy"), timeout=10, max_retries=3, backoff=0.01)
    assert backend.generate(["hi"], max_new_tokens=4)[0].text == "ok"
    first, second = misbehaving_server.times["busy"]
    assert second - first >= 0.9  # waited the 1 s asked for, not the 0.01 s back-off


@pytest.mark.server
def test_retry_after_beyond_the_deadline_fails_at_once(misbehaving_server):
    backend = OpenAIBackend("m", base_url=misbehaving_server.url("busylong"), timeout=2, max_retries=3)
    with pytest.raises(BackendError, match="429.*retry after 3600 s, which would end past the request's deadline of 2 s"):
        backend.generate(["hi"])
    assert misbehaving_server.hits["busylong"] == 1


@pytest.mark.server
def test_probes_are_short_and_asked_once(misbehaving_server):
    started = time.monotonic()
    with pytest.raises(BackendError, match="/models did not answer within 0.5 s"):
        OpenAIBackend(base_url=misbehaving_server.url("silent"), timeout=30, probe_timeout=0.5)
    backend = OpenAIBackend("m", base_url=misbehaving_server.url("silent"), timeout=30, probe_timeout=0.5)
    with pytest.raises(BackendError, match="/tokenize did not answer within 0.5 s"):
        backend.count_tokens("hello")
    assert time.monotonic() - started < 10  # not the 30 s request deadline, and no retries

    backend = OpenAIBackend("m", base_url=misbehaving_server.url("notfound"), guided="auto")
    assert [backend.count_tokens("four word long text") for _ in range(3)] == [5, 5, 5]  # estimated, chars / 4
    assert backend.constrains == "no" and backend.guided == "off"
    paths = misbehaving_server.paths
    assert paths["/notfound/tokenize"] == paths["/notfound/extras/tokenize"] == 1
    assert paths["/notfound/v1/models"] == 1


@pytest.mark.server
def test_cli_http_timeout_reports_a_dead_server_in_one_line(misbehaving_server, tmp_path):
    backend = f"openai:{misbehaving_server.url('silent')}#m"
    proc = subprocess.run(
        [sys.executable, "-m", "rerank.cli", "--quiet", "--http-timeout", "1", "search", "--dataset", "cranfield",
         "--pipeline", f"bm25 % 2 >> yes-no(backend='{backend}')", "boundary layer"],
        capture_output=True, text=True, env={**os.environ, "RERANK_CACHE": str(tmp_path)}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "did not answer within 1 s" in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("spec", ["openai:http://127.0.0.1:99999/v1#m", "openai:ftp://127.0.0.1:1/v1#m"])
def test_cli_refuses_bad_backend_urls_before_running(spec):
    proc = subprocess.run(
        [sys.executable, "-m", "rerank.cli", "--quiet", "search", "--dataset", "trec-dl-2019",
         "--pipeline", f"run % 2 >> listwise(backend='{spec}')", "anything"],
        capture_output=True, text=True, env=os.environ, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and "ExceptionGroup" not in proc.stderr


@pytest.mark.server
def test_listwise_on_a_dead_server_fails_after_one_short_probe(misbehaving_server):
    import numpy as np

    from rerank.rerankers.listwise import Listwise
    from rerank.types import Candidates

    before = misbehaving_server.hits.get("silent", 0)
    backend = OpenAIBackend("m", base_url=misbehaving_server.url("silent"), timeout=30, probe_timeout=0.5)
    candidates = Candidates("q1", "numbers", ["d0", "d1", "d2"], ["passage 0", "passage 1", "passage 2"],
                            np.arange(3, 0, -1, dtype=float))
    started = time.monotonic()
    with pytest.raises(BackendError, match="tokenize did not answer within 0.5 s"):
        Listwise(backend, window=3, step=1).rerank_candidates(candidates)
    assert time.monotonic() - started < 10 and misbehaving_server.hits["silent"] == before + 1


# -- answers of the OpenAI shape gone wrong (review helper-47) -----------------------------------------
@pytest.mark.server
@pytest.mark.parametrize("mode, call, message", [
    ("usagelist", "generate", "without a completion of the OpenAI shape"),
    ("usagestr", "generate", "without a completion of the OpenAI shape"),
    ("reasoningdict", "chat", "without a completion of the OpenAI shape"),
    ("toptokenint", "score", "top_logprobs of an unexpected shape"),
    ("toplogprobstr", "score", "top_logprobs of an unexpected shape"),
    ("echonotokens", "echo", "echoed logprobs of an unexpected shape"),
    ("echostrings", "echo", "echoed logprobs of an unexpected shape"),
    # review helper-67: NaN read as -inf (a certain Yes for yes-no), +inf and positive values as log-probabilities
    ("topnan", "score", "top_logprobs of an unexpected shape"),
    ("topinf", "score", "top_logprobs of an unexpected shape"),
    ("toppositive", "score", "top_logprobs of an unexpected shape"),
    ("echonan", "echo", "echoed logprobs of an unexpected shape"),
    ("filtered", "chat", "without the model's answer: it stopped it \\(finish_reason 'content_filter'\\)"),  # was kept as an empty answer
])
def test_a_malformed_answer_is_one_backend_error_naming_the_server(misbehaving_server, mode, call, message):
    backend = OpenAIBackend("m", base_url=misbehaving_server.url(mode), timeout=5, max_retries=0)
    chat = [{"role": "user", "content": "Is it relevant?"}]
    run = {"generate": lambda: backend.generate(["hi"]), "chat": lambda: backend.generate([chat]),
           "score": lambda: backend.score([chat], ["Yes", "No"]), "echo": lambda: backend.score(["Is it? "], ["Yes"])}[call]
    with pytest.raises(BackendError, match=f"{misbehaving_server.url(mode)}.* answered {message}"):
        run()


@pytest.mark.server
def test_a_server_that_ignores_max_tokens_is_refused(misbehaving_server):
    backend = OpenAIBackend("m", base_url=misbehaving_server.url("verbose"), timeout=5)
    with pytest.raises(BackendError, match="answered 20,000 characters for max_tokens=8; the server ignores max_tokens"):
        backend.generate([[{"role": "user", "content": "rank"}]], max_new_tokens=8)
    assert backend.generate([[{"role": "user", "content": "rank"}]], max_new_tokens=400)[0].text.startswith("[1] > [2]")


@pytest.mark.server
def test_options_none_of_which_the_server_lists_are_unknown_not_tied(misbehaving_server):
    """An option outside the top_logprobs gets the lowest listed value; when no option is listed the row
    is NaN, which the rerankers count as an invalid answer ("not_finite") and repair."""
    from rerank.rerankers.pointwise import YesNo

    chat = [{"role": "user", "content": "Is it relevant?"}]
    listed = OpenAIBackend("m", base_url=misbehaving_server.url("listed"), timeout=5).score([chat], ["Yes", "No"])
    assert listed.tolist() == [[-0.2, -1.0]]
    unlisted = OpenAIBackend("m", base_url=misbehaving_server.url("unlisted"), timeout=5)
    assert np.isnan(unlisted.score([chat], ["Yes", "No"])).all()
    ranked = YesNo(unlisted).rerank("cats", ["cats purr", "dogs bark"])
    assert ranked.info["parse"]["problems"] == {"not_finite": 2} and ranked.info["parse"]["valid"] == 0


@pytest.mark.server
def test_an_unfinished_answer_is_continued_when_scoring_as_when_generating(misbehaving_server):
    backend = OpenAIBackend("m", base_url=misbehaving_server.url("listed"), timeout=5)
    backend.score([[{"role": "user", "content": "Which passage?"}, {"role": "assistant", "content": "Passage"}]], ["A", "B"])
    sent = misbehaving_server.bodies[-1]
    assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False
    backend.score([[{"role": "user", "content": "Which passage?"}]], ["A", "B"])
    assert "continue_final_message" not in misbehaving_server.bodies[-1]
