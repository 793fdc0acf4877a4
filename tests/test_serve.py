"""``rerank serve``: real servers on 127.0.0.1, called by real clients (the cohere SDK v1 and v2, httpx,
and the request shapes Jina's and vLLM's docs show).

Most servers run in this process (uvicorn in a thread, a real socket), so the served answers can be
compared with ``reranker.rerank(query, docs)`` on the same model object. One test starts the
``rerank serve`` command as a subprocess to check the CLI, /v1/search over a bundled dataset, and
graceful shutdown. The cross-encoder is the offline MiniLM body with a fresh one-score head (no
trained cross-encoder installs offline), so these tests check mechanics, not effectiveness.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import cohere  # the dev extra installs the cohere SDK and the serve stack
import httpx
import numpy as np
import pytest
import uvicorn
from servers import free_port

from rerank.encoders import DEFAULT_ENCODER, resolve_encoder
from rerank.errors import ConfigError, DataError
from rerank.rerankers.base import PointwiseReranker, Reranker
from rerank.rerankers.biencoder import BiEncoderReranker
from rerank.serve.app import create_app
from rerank.serve.config import ServeConfig
from rerank.serve.engine import Engine, SearchJob

pytestmark = pytest.mark.server

FLEA = "how long is the life cycle of a flea"
DOCS = ["The stock market fell sharply on Monday.",
        "The life cycle of a flea lasts from two weeks to several months.",
        "Paris is the capital of France.",
        "Adult fleas feed on blood and lay eggs in the host's fur."]
LIMITS = dict(max_documents=8, max_doc_chars=2000, max_query_chars=300, max_body_bytes=20_000, max_top_n=20)


def wait_for(condition, what: str, timeout: float = 60) -> None:
    """Poll ``condition()`` until it holds; fail naming ``what`` after ``timeout`` seconds (a test never hangs)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.01)


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in a thread; yield its base URL; stop it after."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(60)


def assert_same_ranking(results: Sequence[tuple[int, float]], expected, atol: float = 1e-4) -> None:
    """Served ``(index, score)`` pairs equal the in-process RankedResults (docids are input positions)."""
    assert [i for i, _ in results] == [int(r.docid) for r in expected]
    np.testing.assert_allclose([s for _, s in results], [r.score for r in expected], atol=atol)


@pytest.fixture(scope="module")
def biencoder() -> BiEncoderReranker:
    return BiEncoderReranker()


@pytest.fixture(scope="module")
def bi_url(biencoder) -> Iterator[str]:
    with running(create_app(biencoder, ServeConfig(**LIMITS, batch_wait_ms=20))) as url:
        yield url


@pytest.fixture(scope="module")
def search_url(biencoder) -> Iterator[str]:
    from rerank.data import load
    from rerank.expr import build

    pipe = build("bm25 % 8", load("cranfield")) >> biencoder
    with running(create_app(pipe, ServeConfig(**LIMITS), searchable=True, warmup=False)) as url:
        yield url


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> str:
    """Folder of a real BERT cross-encoder (offline MiniLM body, untrained one-score head)."""
    from sentence_transformers import CrossEncoder

    folder = tmp_path_factory.mktemp("tiny-ce")
    CrossEncoder(resolve_encoder(DEFAULT_ENCODER), num_labels=1).save(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder):
    from rerank.rerankers.cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(tiny_cross_encoder)


@pytest.fixture(scope="module")
def ce_url(cross_encoder) -> Iterator[str]:
    with running(create_app(cross_encoder, ServeConfig(batch_wait_ms=20))) as url:
        yield url


# -- real clients, same answers as in process -----------------------------------------------------
def test_cohere_v2_client_equals_in_process(bi_url, biencoder):
    client = cohere.ClientV2(base_url=bi_url, api_key="unused")
    res = client.rerank(model="rerank-v3.5", query=FLEA, documents=DOCS)
    assert_same_ranking([(r.index, r.relevance_score) for r in res.results], biencoder.rerank(FLEA, DOCS))
    assert res.meta.api_version.version == "2"
    assert res.meta.warnings == ["model 'rerank-v3.5' is not served here; answered with 'BiEncoderReranker()'"]
    top = client.rerank(model="BiEncoderReranker()", query=FLEA, documents=DOCS, top_n=2)
    assert [r.index for r in top.results] == [r.index for r in res.results[:2]] and not top.meta.warnings


def test_cohere_v1_client_with_documents(bi_url, biencoder):
    client = cohere.Client(base_url=bi_url, api_key="unused")
    docs = [{"text": d} for d in DOCS]
    res = client.rerank(model="rerank-english-v3.0", query=FLEA, documents=docs, return_documents=True, top_n=3)
    expected = biencoder.rerank(FLEA, DOCS)
    assert_same_ranking([(r.index, r.relevance_score) for r in res.results], expected.top_k(3))
    assert [r.document.text for r in res.results] == [DOCS[int(r.docid)] for r in expected.top_k(3)]
    assert client.models.list().models[0].name == "BiEncoderReranker()"
    titled = [{"text": d, "title": f"t{i}"} for i, d in enumerate(DOCS)]  # as in Cohere's v1: the object as sent
    out = httpx.post(f"{bi_url}/v1/rerank", json={"query": FLEA, "documents": titled, "return_documents": True}, timeout=60)
    assert [r["document"] for r in out.json()["results"]] == [titled[int(r.docid)] for r in expected]


def test_jina_and_vllm_request_shapes(ce_url, cross_encoder):
    expected = cross_encoder.rerank(FLEA, DOCS)
    jina = {"model": "jina-reranker-v2-base-multilingual", "query": FLEA, "top_n": 3, "documents": DOCS,
            "return_documents": True}
    vllm = {"model": "BAAI/bge-reranker-base", "query": FLEA, "documents": DOCS}
    vllm_defaults = {**vllm, "top_n": 0, "max_tokens_per_doc": 512}  # what vLLM's client sends by default
    for body, n in ((jina, 3), (vllm, 4), (vllm_defaults, 4)):
        out = httpx.post(f"{ce_url}/rerank", json=body, timeout=60).json()
        assert_same_ranking([(r["index"], r["relevance_score"]) for r in out["results"]], expected.top_k(n))
        assert [r["document"]["text"] for r in out["results"]] == [DOCS[int(r.docid)] for r in expected.top_k(n)]
        assert out["usage"]["total_tokens"] > 0 and out["model"] == repr(cross_encoder)


def test_cross_encoder_served_equals_in_process_on_trec_dl(ce_url, cross_encoder, dl19_top10):
    for c in dl19_top10.per_query():
        out = httpx.post(f"{ce_url}/v2/rerank", json={"query": c.query, "documents": c.texts, "model": "m"}, timeout=60)
        assert out.status_code == 200, out.text
        results = [(r["index"], r["relevance_score"]) for r in out.json()["results"]]
        assert_same_ranking(results, cross_encoder.rerank(c.query, c.texts))


@pytest.mark.slow
def test_llm_yes_no_on_smollm2_served_equals_in_process(smollm2, dl19_top10):
    from rerank.rerankers.pointwise import YesNo

    judge = YesNo(smollm2, batch_size=8)
    cands = next(dl19_top10.per_query())
    texts = cands.texts[:4]
    with running(create_app(judge, ServeConfig(), warmup=False)) as url:
        out = cohere.ClientV2(base_url=url, api_key="unused").rerank(model="m", query=cands.query, documents=texts)
    assert_same_ranking([(r.index, r.relevance_score) for r in out.results], judge.rerank(cands.query, texts), atol=1e-3)


@pytest.mark.slow
def test_an_order_only_family_served_gives_rank_derived_scores(smollm2, dl19_top10):
    from rerank.rerankers.listwise import Listwise

    lister = Listwise(smollm2, window=4, step=2, max_words=30)
    cands = next(dl19_top10.per_query())
    texts = cands.texts[:4]
    with running(create_app(lister, ServeConfig(), warmup=False)) as url:
        out = httpx.post(f"{url}/rerank", json={"query": cands.query, "documents": texts}, timeout=300).json()
    expected = lister.rerank(cands.query, texts)
    assert [int(r["index"]) for r in out["results"]] == [int(r.docid) for r in expected]
    assert [r["relevance_score"] for r in out["results"]] == [4.0, 3.0, 2.0, 1.0]  # n for the first of n, down to 1
    assert sorted(r["document"]["text"] for r in out["results"]) == sorted(texts)


# -- bad input: status and message ----------------------------------------------------------------
BAD = [
    (b"{\"query\": \"fleas\", \"documents\": [\"a\"", 400, "not valid JSON"),  # truncated
    (b"", 400, "body is empty"),
    (b"[1, 2]", 422, "body: Input should be an object"),
    (b'{"query": 5, "documents": ["a"]}', 422, "query: Input should be a valid string"),
    (b'{"query": "fleas", "documents": "a flea"}', 422, "documents: Input should be a valid array"),
    (b'{"query": "fleas", "documents": ["a", 7]}', 422, "documents[1] must be a string or an object"),
    (b'{"query": "fleas", "documents": [{"title": "x"}]}', 422, "an object without a string 'text'"),
    (b'{"query": "fleas", "documents": ["a"], "top_n": "2"}', 422, "top_n: Input should be a valid integer"),
    (b'{"query": "fleas", "documents": ["a"], "top_n": NaN}', 422, "top_n: Input should be a valid integer"),
    (b'{"query": "fleas", "documents": [NaN]}', 422, "documents[0] must be a string or an object with a string 'text', got float"),
    (b'{"query": "fleas", "documents": ["a"], "top_n": 0}', 422, "top_n must be at least 1"),
    (b'{"query": "  ", "documents": ["a"]}', 422, "the query is empty"),
    (b'{"query": "fleas", "documents": []}', 422, "the document list is empty"),
    (b'{"query": "fleas", "documents": ["a", " "]}', 422, "documents[1] is empty"),
    # nothing visible: control (Cc) and format (Cf) characters are empty too
    (b'{"query": "\\u0000", "documents": ["\\u200b", "Fleas feed on blood."]}', 422, "the query is empty"),
    (b'{"query": "fleas", "documents": ["a", "\\u200b\\ufeff \\u0000"]}', 422, "documents[1] is empty"),
    (b'{"query": "fleas", "documents": ["\\ufeff"]}', 422, "documents[0] is empty"),
    (b'{"query": "\\ud800", "documents": ["a"]}', 400, "the body is not valid JSON: "),  # a lone surrogate
    (b'{"query": "q", "documents": [{"text": "a", "x": "\\ud800"}]}', 400, "that is not half of a pair is no character"),
    (b'{"documents": ["a"]}', 422, "field 'query' is required"),
    (b'{"query": "fleas", "documents": ["a"], "qurey": "x"}', 422, "unknown field 'qurey'"),
    (b'{"query": "fleas", "documents": ["a"], "rank_fields": ["title"]}', 422, "rank_fields is not supported"),
    (b'{"query": "fleas", "query": "dogs", "documents": ["a"]}', 422, "the key 'query' appears twice"),
    (b'{"query": "fleas", "documents": [{"text": "a", "text": "b"}]}', 422, "the key 'text' appears twice"),
    (b'{"query": "fleas", "documents": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400, "nests arrays or objects too deeply"),
    (b'{"\xff": 1, "\xfe": 2, "query": "fleas", "documents": ["a"]}', 400, "the body is not UTF-8 (byte 2 is b'\\xff')"),
    (b'{"query": "fleas", "documents": [{"title": "x"}], "rank_fields": ["title"]}', 422, "rank_fields is not supported"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD)
def test_bad_input_gets_a_clear_error(bi_url, body, status, message):
    out = httpx.post(f"{bi_url}/v1/rerank", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert out.status_code == status, out.text
    assert message in out.json()["message"]


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/v2/rerank", {"query": "fleas", "documents": ["a"], "max_tokens_per_doc": 0}, 422, "max_tokens_per_doc must be at least 1"),
    ("/v2/rerank", {"query": "fleas", "documents": ["a"], "relevant_spans": {"mode": "enabled"}}, 422,
     "relevant_spans is not supported"),
    ("/v2/rerank", {"query": "fleas", "documents": ["a"], "return_documents": True}, 422, "unknown field 'return_documents'"),
    ("/rerank", {"query": "fleas", "documents": ["a"], "top_n": -1}, 422, "top_n must be at least 1"),
    ("/rerank", {"query": "fleas", "documents": ["a"], "max_tokens_per_query": -2}, 422, "max_tokens_per_query must be"),
    ("/rerank", {"query": "\u200b fleas", "documents": ["a"], "max_tokens_per_query": 1}, 422,
     "the query has no visible character in its first 1 word(s) (max_tokens_per_query=1)"),
    ("/v2/rerank", {"query": "fleas", "documents": ["a", "\u200b Fleas feed on blood."], "max_tokens_per_doc": 1}, 422,
     "documents[1] has no visible character in its first 1 word(s) (max_tokens_per_doc=1)"),
    ("/rerank", {"query": "", "documents": ["a"]}, 422, "the query is empty"),
    ("/rerank", {"query": "fleas", "documents": [{"text": 5}]}, 422, "documents[0] must be a string or an object"),
    ("/rerank", {"query": "fleas", "documents": ["a"], "return_documents": "yes"}, 422, "return_documents: Input should be"),
    ("/rerank", {"query": "fleas", "documents": ["a"], "truncate_prompt_tokens": "x"}, 422, "truncate_prompt_tokens"),
    ("/v1/search", {"query": " "}, 422, "the query is empty"),
    ("/v1/search", {"query": "fleas", "top_n": "3"}, 422, "top_n: Input should be a valid integer"),
    ("/v1/search", {"query": "fleas", "top_n": 0}, 422, "top_n must be at least 1"),
    ("/v1/search", {"query": "fleas", "documents": ["a"]}, 422, "unknown field 'documents'"),
])
def test_bad_input_on_every_endpoint_gets_a_clear_error(search_url, path, body, status, message):
    out = httpx.post(f"{search_url}{path}", json=body, timeout=30)
    assert out.status_code == status, out.text
    assert message in out.json()["message"]


def test_vllm_clients_optional_fields_are_accepted_and_the_ignored_ones_said(bi_url, biencoder):
    body = {"model": "m", "query": FLEA + " please", "documents": DOCS, "top_n": 0, "max_tokens_per_doc": 0,
            "max_tokens_per_query": 9, "request_id": "req-7", "user": "u", "priority": 0, "use_activation": True,
            "truncate_prompt_tokens": 512, "instruction": "Judge relevance"}
    out = httpx.post(f"{bi_url}/rerank", json=body, timeout=30).json()
    assert out["id"] == "req-7"
    assert httpx.post(f"{bi_url}/rerank", json={**body, "request_id": ""}, timeout=30).json()["id"] == ""
    assert_same_ranking([(r["index"], r["relevance_score"]) for r in out["results"]], biencoder.rerank(FLEA, DOCS))
    assert "the query was cut to max_tokens_per_query=9 words" in out["warnings"]
    assert {w.split(" ")[0] for w in out["warnings"] if "is ignored" in w} == {"truncate_prompt_tokens", "instruction"}


def test_models_list_in_openai_and_cohere_shapes(bi_url):
    out = httpx.get(f"{bi_url}/v1/models", timeout=30).json()
    assert out["object"] == "list" and out["data"][0]["object"] == "model" and out["data"][0]["owned_by"] == "rerank"
    assert out["data"][0]["id"] == out["models"][0]["name"] and out["models"][0]["endpoints"] == ["rerank"]


@pytest.mark.parametrize(("body", "status", "limit"), [
    ({"query": "fleas", "documents": ["a"] * 9}, 422, "max_documents"),
    ({"query": "fleas", "documents": ["a", "x" * 2001]}, 422, "max_doc_chars"),
    ({"query": "q" * 301, "documents": ["a"]}, 422, "max_query_chars"),
    ({"query": "fleas", "documents": ["y" * 1999] * 11}, 413, "max_body_bytes"),
])
def test_limits_are_named(bi_url, body, status, limit):
    out = httpx.post(f"{bi_url}/v2/rerank", json=body, timeout=30)
    assert out.status_code == status, out.text
    assert out.json()["limit"] == limit and f"limit {limit}=" in out.json()["message"]


def test_streamed_body_over_the_limit_is_cut_off(bi_url):
    chunks = iter([b'{"query": "fleas", "documents": ["', b"y" * 15_000, b"y" * 15_000, b'"]}'])
    out = httpx.post(f"{bi_url}/v1/rerank", content=chunks, timeout=30)  # chunked: no Content-Length
    assert out.status_code == 413 and out.json()["limit"] == "max_body_bytes"
    before = _errors(bi_url, "/v2/rerank", "limit_exceeded")
    assert httpx.post(f"{bi_url}/v2/rerank", json={"query": "q", "documents": ["y" * 30_000]}, timeout=30).status_code == 413
    assert _errors(bi_url, "/v2/rerank", "limit_exceeded") == before + 1   # refused by Content-Length, before the app


def _errors(url: str, endpoint: str, kind: str) -> float:
    line = f'rerank_errors_total{{endpoint="{endpoint}",type="{kind}"}} '
    found = [row for row in httpx.get(f"{url}/metrics", timeout=30).text.splitlines() if row.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


def test_cohere_client_sees_the_error_message(bi_url):
    client = cohere.ClientV2(base_url=bi_url, api_key="unused")
    with pytest.raises(cohere.core.ApiError) as e:
        client.rerank(model="m", query="fleas", documents=["a"] * 9)
    assert e.value.status_code == 422 and "max_documents=8" in e.value.body["message"]


def test_v2_cuts_documents_to_max_tokens_per_doc_and_says_so(bi_url, biencoder):
    long = DOCS[1] + " and more words here"
    out = httpx.post(f"{bi_url}/v2/rerank", json={"query": FLEA, "documents": [DOCS[0], long], "max_tokens_per_doc": 7},
                     timeout=30).json()
    cut = " ".join(long.split()[:7])
    assert_same_ranking([(r["index"], r["relevance_score"]) for r in out["results"]], biencoder.rerank(FLEA, [DOCS[0], cut]))
    assert "1 of 2 documents were cut to max_tokens_per_doc=7 words" in out["meta"]["warnings"]


def test_a_query_cut_to_fit_the_bi_encoder_is_counted_in_the_warnings(biencoder):
    long = "flea " * 400 + "eggs larvae"  # under max_query_chars, over the encoder's 256 tokens
    cut = len(biencoder.encoder.tokenizer(long)["input_ids"]) - biencoder.encoder.max_tokens
    assert biencoder.rerank(long, DOCS).info["query_tokens_cut"] == cut                     # in process too
    with running(create_app(biencoder, ServeConfig(), warmup=False)) as url:
        v2 = httpx.post(f"{url}/v2/rerank", json={"query": long, "documents": DOCS}, timeout=60).json()
        jina = httpx.post(f"{url}/rerank", json={"query": long, "documents": DOCS}, timeout=60).json()
        short = httpx.post(f"{url}/v2/rerank", json={"query": FLEA, "documents": DOCS}, timeout=60).json()
    assert cut > 0 and f"{cut} tokens of the query were cut to fit the model" in v2["meta"]["warnings"]
    assert f"{cut} tokens of the query were cut to fit the model" in jina["warnings"]
    assert "warnings" not in short["meta"]


def test_search_reports_a_query_cut_by_the_retrievers_encoder_and_the_rerankers_repairs(biencoder):
    from rerank.retrievers.dense import Dense
    from rerank.types import Doc

    pipe = Dense(DEFAULT_ENCODER).index([Doc(str(i), t) for i, t in enumerate(DOCS)]) % 3 >> biencoder
    long = "flea " * 400 + "eggs larvae"
    cut = len(biencoder.encoder.tokenizer(long)["input_ids"]) - biencoder.encoder.max_tokens
    with running(create_app(pipe, ServeConfig(), searchable=True, warmup=False)) as url:
        got = httpx.post(f"{url}/v1/search", json={"query": long, "top_n": 2}, timeout=60).json()
        short = httpx.post(f"{url}/v1/search", json={"query": FLEA, "top_n": 2}, timeout=60).json()
    expected = pipe.search(long, k=2)
    assert [r["docid"] for r in got["results"]] == expected.docids
    np.testing.assert_allclose([r["score"] for r in got["results"]], [r.score for r in expected], atol=1e-4)
    assert cut > 0 and got["meta"]["warnings"] == [f"{cut} tokens of the query were cut to fit the model"]
    assert short["meta"]["warnings"] == []
    first_stage_only = Engine(pipe.stages[0] % 3, searchable=True).search([SearchJob(long, 2)])[0]
    assert first_stage_only.info == {"query_tokens_cut": cut} and len(first_stage_only) == 2


def test_search_is_off_without_a_corpus_and_rerank_off_without_a_reranker(bi_url):
    out = httpx.post(f"{bi_url}/v1/search", json={"query": "fleas"}, timeout=30)
    assert out.status_code == 501 and "without --dataset or --index" in out.json()["message"]
    health = httpx.get(f"{bi_url}/health", timeout=30).json()
    assert health["endpoints"] == {"rerank": True, "search": False} and health["limits"]["max_documents"] == 8


# -- model failures, back-pressure, deadlines -----------------------------------------------------
class Gate(PointwiseReranker):
    """A user's reranker that scores by length but waits until the test opens the gate."""

    def __init__(self):
        self.gate = threading.Event()
        self.calls: list[int] = []

    def score_pairs(self, queries, texts):
        self.calls.append(len(texts))
        if not self.gate.wait(30):
            raise RuntimeError("the gate was never opened")
        return np.array([float(len(t)) for t in texts])


def test_full_queue_gets_429_with_retry_after_and_late_requests_504():
    gate = Gate()
    config = ServeConfig(max_queue=2, max_batch_requests=2, batch_wait_ms=0, request_timeout=20)
    with running(create_app(gate, config, warmup=False)) as url, ThreadPoolExecutor(8) as pool:
        post = lambda i: httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a" * (i + 1)]}, timeout=30)
        first = pool.submit(post, 0)
        wait_for(lambda: gate.calls, "the model to be busy with the first request")
        queued = [pool.submit(post, i) for i in (1, 2)]
        wait_for(lambda: httpx.get(f"{url}/health", timeout=30).json()["queue_depth"] >= 2, "two queued requests")
        refused = post(3)
        assert refused.status_code == 429 and refused.headers["Retry-After"].isdigit()
        assert refused.json()["limit"] == "max_queue"
        gate.gate.set()
        assert [f.result().status_code for f in (first, *queued)] == [200, 200, 200]
        assert gate.calls == [1, 2]  # the two queued requests shared one model call
        metrics = httpx.get(f"{url}/metrics").text
        assert 'rerank_requests_total{endpoint="/v1/rerank",status="429"} 1.0' in metrics
        assert 'rerank_batch_requests_sum{kind="rerank"} 3.0' in metrics
        assert 'rerank_errors_total{endpoint="/v1/rerank",type="overloaded"} 1.0' in metrics
        assert 'rerank_request_duration_seconds_bucket{endpoint="/v1/rerank",le="0.005"}' in metrics
        assert 'rerank_queue_depth{kind="rerank"} 0.0' in metrics and "rerank_model_duration_seconds_count" in metrics

    gate = Gate()
    with running(create_app(gate, ServeConfig(request_timeout=0.5), warmup=False)) as url:
        late = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=30)
        gate.gate.set()
    assert late.status_code == 504 and late.json()["limit"] == "request_timeout"


def test_a_request_that_timed_out_in_the_queue_leaves_it_at_once_and_is_never_computed():
    """Review helper-88: a queued request that had answered 504 kept its queue slot until the model was free,
    turning live requests away with 429, and was computed after all."""
    gate = Gate()
    config = ServeConfig(max_queue=2, max_batch_requests=1, batch_wait_ms=0, request_timeout=3)
    with running(create_app(gate, config, warmup=False)) as url, ThreadPoolExecutor(4) as pool:
        post = lambda n, wait=30: httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"] * n}, timeout=wait)
        depth = lambda: httpx.get(f"{url}/health", timeout=30).json()["queue_depth"]
        first = pool.submit(post, 1)
        wait_for(lambda: gate.calls, "the model to be busy with the first request")
        with pytest.raises(httpx.ReadTimeout):
            post(2, wait=0.3)  # a client that gives up and hangs up
        deadline = time.monotonic() + 1  # well before its request_timeout
        while depth() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert depth() == 0
        queued = pool.submit(post, 3)
        assert [f.result().status_code for f in (first, queued)] == [504] * 2
        assert depth() == 0
        live = [pool.submit(post, n) for n in (4, 5)]  # the model is still busy: both wait in the queue
        wait_for(lambda: httpx.get(f"{url}/health", timeout=30).json()["queue_depth"] >= 2, "two queued requests")
        gate.gate.set()
        assert [f.result().status_code for f in live] == [200, 200]
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert sorted(gate.calls[1:]) == [4, 5] and gate.calls[0] == 1  # the requests that left the queue were never computed
    assert 'rerank_errors_total{endpoint="/v1/rerank",type="client_closed"} 1.0' in metrics and 'status="500"' not in metrics


def test_model_failures_are_5xx_with_the_cause_and_stay_with_their_request(ce_url, misbehaving_server):
    from rerank.backends.openai import OpenAIBackend
    from rerank.rerankers.pointwise import YesNo

    # a query longer than the cross-encoder's window fails alone; the request next to it is answered
    long_query = " ".join(["flea"] * 600)
    with ThreadPoolExecutor(2) as pool:
        bad, good = pool.map(lambda q: httpx.post(f"{ce_url}/v1/rerank", json={"query": q, "documents": DOCS}, timeout=60),
                             [long_query, FLEA])
    assert bad.status_code == 422 and "the model cannot score this request" in bad.json()["message"]
    assert good.status_code == 200

    backend = OpenAIBackend("smollm2", base_url=misbehaving_server.url("garbage"), max_retries=0)
    with running(create_app(YesNo(backend, method="generate"), ServeConfig(), warmup=False)) as url:
        out = httpx.post(f"{url}/v1/rerank", json={"query": FLEA, "documents": DOCS[:2]}, timeout=60)
    assert out.status_code == 502, out.text
    assert "answered with something that is not JSON" in out.json()["message"]


def test_clients_never_see_a_backend_urls_user_password_or_query(misbehaving_server):
    """Review helper-58: the open /health, the served name and 502 messages showed them."""
    from rerank.backends.openai import OpenAIBackend
    from rerank.rerankers.pointwise import YesNo

    secret_url = misbehaving_server.url("garbage").replace("http://", "http://user:hunter2@")
    backend = OpenAIBackend("smollm2", base_url=secret_url, max_retries=0)
    written = f"yes-no(backend='openai:{secret_url}?api_key=sk-SECRET#smollm2', method='generate')"
    app = create_app(YesNo(backend, method="generate"), ServeConfig(pipeline=written), api_key="k", warmup=False)
    with running(app) as url:
        seen = [httpx.get(f"{url}/health", timeout=30).text,
                httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer k"}, timeout=30).text,
                failed := httpx.post(f"{url}/v1/rerank", json={"query": FLEA, "documents": DOCS[:1]},
                                     headers={"Authorization": "Bearer k"}, timeout=60).text]
    assert "not JSON" in failed and "127.0.0.1" in seen[0] and "sha256=" in seen[0]
    assert not [text for text in seen if "hunter2" in text or "sk-SECRET" in text or "user:" in text]


# -- auth and binding -----------------------------------------------------------------------------
def test_api_key_is_required_when_set(biencoder):
    with running(create_app(biencoder, ServeConfig(), api_key="s3cret", warmup=False)) as url:
        body = {"query": FLEA, "documents": DOCS}
        assert httpx.post(f"{url}/v1/rerank", json=body).status_code == 401
        wrong = httpx.post(f"{url}/v1/rerank", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        assert "the API key is wrong" in wrong.json()["message"]
        twice = httpx.post(f"{url}/v1/rerank", json=body, headers=[("Authorization", "Bearer nope"), ("Authorization", "Bearer s3cret")])
        assert twice.status_code == 401 and "the API key is sent 2 times" in twice.json()["message"]
        assert httpx.get(f"{url}/metrics").status_code == 401 and httpx.get(f"{url}/health").status_code == 200
        res = cohere.ClientV2(base_url=url, api_key="s3cret").rerank(model="m", query=FLEA, documents=DOCS)
        assert len(res.results) == len(DOCS)
        counted = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer s3cret"}).text
    # the middleware's own answers are counted as errors too (review helper-58)
    assert 'rerank_errors_total{endpoint="/v1/rerank",type="unauthorized"} 3.0' in counted
    assert 'rerank_errors_total{endpoint="/metrics",type="unauthorized"} 1.0' in counted


def test_public_bind_without_a_key_is_refused(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RERANK_API_KEY": ""}
    out = subprocess.run([sys.executable, "-m", "rerank.cli", "serve", "--pipeline", "biencoder", "--host", "0.0.0.0"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "refusing to serve on 0.0.0.0 without an API key" in out.stderr
    (tmp_path / "key").write_text("")
    out = subprocess.run([sys.executable, "-m", "rerank.cli", "serve", "--pipeline", "biencoder",
                          "--api-key-file", str(tmp_path / "key")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "is empty" in out.stderr


@pytest.mark.parametrize("where, message", [
    (["--port", "BUSY"], "cannot serve on 127.0.0.1:BUSY: Address already in use"),
    (["--host", "999.1.1.1", "--allow-public"], "cannot serve on 999.1.1.1:8000: "),
    (["--api-key-file", "."], "api_key_file . is a folder, not a file"),
])
def test_an_address_that_cannot_be_bound_stops_the_command_in_one_line_before_any_model_loads(where, message):
    """Review helper-58: uvicorn's multi-line error and exit 3, after the whole pipeline had loaded."""
    import socket

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RERANK_API_KEY": ""}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        where = [w.replace("BUSY", port) for w in where]
        out = subprocess.run([sys.executable, "-m", "rerank.cli", "serve", "--pipeline", "cross-encoder(model='no/such')",
                              *where], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and message.replace("BUSY", port) in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_model_that_cannot_load_stops_the_command_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    expr = f"cross-encoder(model='{tmp_path / 'no-such-model'}')"
    out = subprocess.run([sys.executable, "-m", "rerank.cli", "--quiet", "serve", "--pipeline", expr, "--port", str(free_port())],
                         capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 2 and "cannot be loaded" in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1, out.stderr


def test_the_key_comes_from_the_environment_or_a_file_and_a_key_allows_a_public_bind(tmp_path, monkeypatch):
    from rerank.serve.auth import check_bind, load_api_key

    monkeypatch.setenv("MY_KEY", " env-key ")
    assert load_api_key(ServeConfig(api_key_env="MY_KEY")) == "env-key"
    (tmp_path / "key").write_text("file-key\nignored\n")
    assert load_api_key(ServeConfig(api_key_env="MY_KEY", api_key_file=str(tmp_path / "key"))) == "file-key"
    (tmp_path / "key").write_text("\ufefffile-key\r\n", encoding="utf-8")              # a BOM is not part of the key
    assert load_api_key(ServeConfig(api_key_file=str(tmp_path / "key"))) == "file-key"
    monkeypatch.delenv("MY_KEY")
    assert load_api_key(ServeConfig(api_key_env="MY_KEY")) is None
    public = ServeConfig(host="0.0.0.0")
    check_bind(public, "a key")
    check_bind(public.replace(allow_public=True), None)
    check_bind(ServeConfig(), None)
    with pytest.raises(ConfigError, match="refusing to serve on 0.0.0.0 without an API key"):
        check_bind(public, None)


def test_config_file_and_set_flags(tmp_path):
    from rerank.cli import _parser
    from rerank.serve.command import config_from_args

    path = tmp_path / "serve.toml"
    path.write_text('[serve]\npipeline = "biencoder"\nmax_documents = 50\nport = 9001\n')
    args = _parser().parse_args(["serve", "--config", str(path), "--port", "9002", "--set", "max_batch_requests=1",
                                 "--set", "model_name=minilm"])
    config = config_from_args(args)
    assert (config.pipeline, config.max_documents, config.port, config.max_batch_requests, config.model_name) == \
        ("biencoder", 50, 9002, 1, "minilm")
    with pytest.raises(ConfigError, match="unknown serve setting"):
        ServeConfig().replace(max_docs=3)
    with pytest.raises(ConfigError, match="max_queue must be a positive integer"):
        ServeConfig(max_queue=0)
    # a word is not a switch: allow_public=no must never open a public bind without a key
    for bad, message in [("allow_public=no", "allow_public must be true or false, got 'no'"),
                         ("port='abc'", "port must be an integer"), ("request_timeout=inf", "finite")]:
        args = _parser().parse_args(["serve", "--pipeline", "biencoder", "--set", bad])
        with pytest.raises(ConfigError, match=message):
            config_from_args(args)
    assert config_from_args(_parser().parse_args(["serve", "--set", "allow_public=true"])).allow_public is True


@pytest.mark.parametrize(("argv", "message"), [
    (["--model-name", "x", "--set", "model_name=y"], "model_name is given twice (--model-name and --set model_name=y)"),
    (["--port", "5", "--set", "port=6"], "port is given twice (--port and --set port=6)"),
    (["--set", "max_queue=5", "--set", "max_queue=6"], "max_queue is given twice (--set max_queue=5 and --set max_queue=6)"),
])
def test_a_setting_given_twice_is_refused_in_one_line(argv, message, capsys):
    from rerank.cli import main

    assert main(["serve", "--pipeline", "biencoder", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# -- load: concurrent clients, nothing lost or mixed up -------------------------------------------
def test_concurrent_clients_each_get_their_own_answer(bi_url, biencoder, dl19_top10):
    """8 asyncio clients x 3 requests; each request's documents are its own draw from a TREC-DL list."""
    rng = np.random.default_rng(0)
    cands = list(dl19_top10.per_query())
    requests = []
    for i in range(24):
        c = cands[i % len(cands)]
        docs = [c.texts[j] for j in rng.permutation(len(c.texts))[:3]]
        requests.append((c.query, docs))
    expected = [biencoder.rerank(q, d) for q, d in requests]

    async def client(k: int, http: httpx.AsyncClient) -> list[tuple[int, float, dict]]:
        out = []
        for i in range(k, len(requests), 8):
            started = time.perf_counter()
            r = await http.post(f"{bi_url}/v1/rerank", json={"query": requests[i][0], "documents": requests[i][1],
                                                              "return_documents": True})
            out.append((i, time.perf_counter() - started, r.json()))
        return out

    async def main():
        async with httpx.AsyncClient(timeout=60) as http:
            return [x for part in await asyncio.gather(*(client(k, http) for k in range(8))) for x in part]

    answers = asyncio.run(asyncio.wait_for(main(), 120))
    assert sorted(i for i, _, _ in answers) == list(range(24))
    for i, _, body in answers:
        results = body["results"]
        assert [r["document"]["text"] for r in results] == [requests[i][1][r["index"]] for r in results]
        assert_same_ranking([(r["index"], r["relevance_score"]) for r in results], expected[i])
    p99 = float(np.percentile([s for _, s, _ in answers], 99))
    assert p99 < 30.0, f"p99 latency {p99:.1f} s is over the 30 s bound"
    metrics = httpx.get(f"{bi_url}/metrics").text
    count = float(metrics.split('rerank_batch_requests_count{kind="rerank"} ')[1].split()[0])
    total = float(metrics.split('rerank_batch_requests_sum{kind="rerank"} ')[1].split()[0])
    assert total > count  # some model calls merged several requests


# -- the CLI: search over a bundled dataset, a saved index, graceful shutdown ---------------------
def test_cli_serves_search_with_a_key_file_and_drains_on_sigterm(tmp_path):
    from rerank.data import load
    from rerank.expr import build

    expr = "bm25 % 5"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RERANK_CACHE": str(tmp_path / "cache")}
    (tmp_path / "key").write_text("k3y-from-a-file\n")
    auth = {"Authorization": "Bearer k3y-from-a-file"}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "rerank.cli", "--quiet", "serve", "--pipeline", expr,
                             "--dataset", "cranfield", "--port", str(port), "--set", "batch_wait_ms=1000",
                             "--api-key-file", str(tmp_path / "key")],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "rerank serve did not start"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        queries = ["what similarity laws must be obeyed when constructing aeroelastic models",
                   "boundary layer transition at high speeds", "heat transfer in hypersonic flow"]
        assert httpx.post(f"{url}/v1/search", json={"query": queries[0]}, timeout=60).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers=auth, timeout=10).json()["data"][0]["id"] == expr  # the expression as written
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(httpx.post, f"{url}/v1/search", json={"query": q, "top_n": 5}, headers=auth, timeout=60)
                       for q in queries]
            wait_for(lambda: httpx.get(f"{url}/health", timeout=10).json()["queue_depth"] >= 3 or any(f.done() for f in futures),
                     "the three requests to wait for the model")  # under load the first may be answered before the third is in
            os.kill(proc.pid, signal.SIGTERM)  # the requests in flight are still answered
            answers = [f.result() for f in futures]
        assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its graceful exit
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    pipe = build(expr, load("cranfield"), cache_dir=tmp_path / "cache")
    for q, a in zip(queries, answers):
        expected = pipe.search(q, k=5)
        got = a.json()["results"]
        assert [r["docid"] for r in got] == expected.docids
        np.testing.assert_allclose([r["score"] for r in got], [r.score for r in expected], atol=1e-4)
        assert [r["text"] for r in got] == [r.text for r in expected]


def test_search_over_a_saved_index_with_a_reranker(tmp_path, biencoder):
    from rerank.data import load
    from rerank.expr import build
    from rerank.retrievers.bm25 import BM25
    from rerank.serve import build_app
    from rerank.serve.engine import with_index

    BM25().index(load("cranfield").corpus()).save(tmp_path / "idx")
    pipe = with_index(build("bm25 % 8"), tmp_path / "idx") >> biencoder
    query = "boundary layer transition at high speeds"
    with running(create_app(pipe, ServeConfig(max_top_n=5), searchable=True, warmup=False)) as url:
        got = httpx.post(f"{url}/v1/search", json={"query": query, "top_n": 3}, timeout=30)
        too_many = httpx.post(f"{url}/v1/search", json={"query": query, "top_n": 6}, timeout=30)
        reranked = httpx.post(f"{url}/v1/rerank", json={"query": query, "documents": DOCS}, timeout=30)
    expected = pipe.search(query, k=3)
    assert [(r["docid"], r["text"]) for r in got.json()["results"]] == [(r.docid, r.text) for r in expected]
    np.testing.assert_allclose([r["score"] for r in got.json()["results"]], [r.score for r in expected], atol=1e-4)
    assert too_many.status_code == 422 and too_many.json()["limit"] == "max_top_n"
    assert_same_ranking([(r["index"], r["relevance_score"]) for r in reranked.json()["results"]], biencoder.rerank(query, DOCS))

    config = ServeConfig(pipeline="bm25 % 10", index=str(tmp_path / "idx"))
    with running(build_app(config, warmup=False)) as url:
        no_rerank = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=30)
    assert no_rerank.status_code == 501 and "no reranking part" in no_rerank.json()["message"]
    shows = build("insertrank(backend='hf:smollm2')")  # it would show the model made-up BM25 scores (review helper-61)
    with running(create_app(with_index(build("bm25 % 10"), tmp_path / "idx") >> shows, ServeConfig(), searchable=True,
                            warmup=False)) as url:
        refused = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=30)
    assert refused.status_code == 501 and "shows the model first-stage scores, which a rerank request" in refused.json()["message"]
    with pytest.raises(ConfigError, match="shows the model first-stage scores"):
        create_app(shows, ServeConfig(), warmup=False)
    with pytest.raises(DataError, match="was built with k1=0.9, not k1=2.0; construct BM25 with the settings it was built with"):
        build_app(config.replace(pipeline="bm25(k1=2.0)"), warmup=False)
    assert build_app(config.replace(pipeline="bm25(k1=0.9, b=0.4) % 10"), warmup=False)  # the defaults, written out
    with pytest.raises(ConfigError, match="needs a pipeline that starts with a retriever"):
        build_app(config.replace(pipeline="biencoder"), warmup=False)


def test_a_bare_retriever_takes_the_saved_index_settings_and_says_so(tmp_path, caplog):
    from rerank.data import load
    from rerank.expr import build
    from rerank.retrievers.bm25 import BM25
    from rerank.serve.engine import with_index

    BM25(k1=2.0).index(load("cranfield").corpus()[:50]).save(tmp_path / "idx")
    with caplog.at_level("WARNING", logger="rerank"):
        pipe = with_index(build("bm25 % 5"), tmp_path / "idx")
    assert pipe.stages[0].k1 == 2.0 and "was built with BM25(k1=2.0" in caplog.text
    from rerank.retrievers.dense import Dense

    Dense(runtime="torch", ef_search=64).index(load("cranfield").corpus()[:30]).save(tmp_path / "dense")
    pipe = with_index(build("dense(device='cpu', ef_search=128) % 5"), tmp_path / "dense")  # where and how it searches stay
    assert (pipe.stages[0].device, pipe.stages[0].ef_search, pipe.stages[0].runtime) == ("cpu", 128, "torch")


def test_repairs_of_every_reranker_in_a_served_pipeline_reach_the_answer():
    from rerank.backends.fake import FakeBackend
    from rerank.rerankers.listwise import Listwise
    from rerank.serve.engine import RerankJob

    fixing = Listwise(FakeBackend(generate=lambda prompt: "2] > [2]"), window=3, step=2)  # a duplicate id: repaired
    [out] = Engine(fixing % 2, searchable=False).rerank([RerankJob(FLEA, DOCS[:3])])
    assert len(out) == 2 and out.info["parse"]["repaired"] == 1


def test_unknown_paths_and_methods_answer_in_the_error_shape(bi_url):
    missing = httpx.get(f"{bi_url}/v3/rerank", timeout=30)
    assert missing.status_code == 404 and missing.json()["type"] == "not_found" and "/v2/rerank" in missing.json()["message"]
    wrong = httpx.get(f"{bi_url}/v1/rerank", timeout=30)
    assert wrong.status_code == 405 and wrong.json()["type"] == "method_not_allowed"
    assert 'rerank_errors_total{endpoint="other",type="not_found"} 1.0' in httpx.get(f"{bi_url}/metrics", timeout=30).text


def test_a_compressed_body_is_415_a_byte_order_mark_is_read_past_and_a_trailing_slash_is_served(bi_url):
    """Review helper-88: a gzip body was 'not UTF-8 (byte 1 is ...)', a body starting with a byte-order mark
    'expected value at line 1 column 1', and POST /rerank/ a 307 redirect to the Host header's address."""
    body = json.dumps({"query": FLEA, "documents": DOCS}).encode()
    post = lambda path, content, **headers: httpx.post(f"{bi_url}{path}", content=content, timeout=30,
                                                       headers={"Content-Type": "application/json", **headers})
    plain = post("/v1/rerank", body).json()["results"]
    packed = post("/v1/rerank", gzip.compress(body), **{"Content-Encoding": "gzip"})
    assert packed.status_code == 415 and packed.json()["type"] == "unsupported_media_type", packed.text
    assert "compressed (Content-Encoding: gzip)" in packed.json()["message"] and packed.headers["Accept-Encoding"] == "identity"
    marked = post("/v1/rerank", codecs.BOM_UTF8 + body)
    assert marked.status_code == 200 and marked.json()["results"] == plain, marked.text
    for path in ("/v1/rerank/", "/v2/rerank/", "/rerank/"):
        slashed = post(path, body)
        assert slashed.status_code == 200, (path, slashed.status_code, slashed.text)
        assert [r["index"] for r in slashed.json()["results"]] == [r["index"] for r in plain]
    assert httpx.get(f"{bi_url}/health/", timeout=30).json()["status"] == "ok"
    unknown = post("/v3/rerank/", body)
    assert unknown.status_code == 404 and unknown.json()["type"] == "not_found"
    assert 'rerank_requests_total{endpoint="/rerank",status="200"}' in httpx.get(f"{bi_url}/metrics", timeout=30).text


class Down(Gate):
    """A reranker whose backend is down: every call fails with BackendError once the gate opens."""

    def score_pairs(self, queries, texts):
        from rerank.errors import BackendError

        super().score_pairs(queries, texts)
        raise BackendError("connection refused")


def test_a_backend_that_is_down_fails_a_merged_batch_once_not_once_per_request():
    down = Down()
    config = ServeConfig(max_batch_requests=4, batch_wait_ms=0, request_timeout=20)
    with running(create_app(down, config, warmup=False)) as url, ThreadPoolExecutor(4) as pool:
        post = lambda i: httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a" * (i + 1)]}, timeout=30)
        first = pool.submit(post, 0)
        wait_for(lambda: down.calls, "the backend's first call")
        queued = [pool.submit(post, i) for i in (1, 2, 3)]
        wait_for(lambda: httpx.get(f"{url}/health", timeout=30).json()["queue_depth"] >= 3, "three queued requests")
        down.gate.set()
        assert [f.result().status_code for f in (first, *queued)] == [502] * 4
    assert down.calls == [1, 3]  # the merged call of three failed once; nobody asked the backend again alone


def test_an_input_the_backend_refuses_fails_its_own_request_not_those_merged_with_it(misbehaving_server):
    """Review helper-58: a 400 for one request's prompt (over the context) failed every request merged with it."""
    from rerank.backends.openai import OpenAIBackend
    from rerank.rerankers.pointwise import YesNo

    backend = OpenAIBackend("smollm2", base_url=misbehaving_server.url("toolong"), max_retries=0)
    config = ServeConfig(max_batch_requests=4, batch_wait_ms=1000, request_timeout=60)
    post = lambda docs: httpx.post(f"{url}/v1/rerank", json={"query": FLEA, "documents": docs}, timeout=60)
    with running(create_app(YesNo(backend, method="generate"), config, warmup=False)) as url, ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(post, [["a flea"], ["POISON flea"], ["a dog"]]))
        calls = httpx.get(f"{url}/metrics", timeout=30).text
    assert [a.status_code for a in answers] == [200, 502, 200], [a.text for a in answers]
    assert "maximum context length is 2048 tokens" in answers[1].json()["message"]
    assert 'rerank_batch_requests_sum{kind="rerank"} 3.0' in calls and 'rerank_batch_requests_count{kind="rerank"} 1.0' in calls


class Fails(Gate):
    """A user's reranker with a bug."""

    def score_pairs(self, queries, texts):
        raise ValueError("the scorer has a bug")


def test_any_other_model_failure_is_500_with_its_type_and_message():
    with running(create_app(Fails(), ServeConfig(), warmup=False)) as url:
        out = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=30)
        after = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=30)
    assert out.status_code == 500 and out.json()["type"] == "model_error"
    assert "ValueError: the scorer has a bug" in out.json()["message"] and after.status_code == 500  # still serving


class LosesOne(Reranker):
    """A user's reranker with a bug: it loses the last document."""

    def rerank_candidates(self, cands):
        return cands.top(len(cands) - 1)


def test_a_reranker_that_breaks_its_contract_is_a_model_error_not_the_clients():
    """A reranker that lost documents was answered 422 invalid_request, 'the model cannot score this
    request', as if the request were at fault (review helper-91)."""
    with running(create_app(LosesOne(), ServeConfig(), warmup=False)) as url:
        out = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a", "b"]}, timeout=30)
    assert out.status_code == 500 and out.json()["type"] == "model_error"
    assert "LosesOne must return every candidate of query 'r0' once; it dropped 1" in out.json()["message"]


def parse_warnings(url: str, docs: list[str]) -> list[str]:
    answer = httpx.post(f"{url}/v1/rerank", json={"query": "fleas", "documents": docs}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["meta"].get("warnings", [])


def test_an_llm_rerankers_answers_are_a_warning_only_when_some_were_repaired():
    """Every LLM request was answered with the warning 'answer parse repairs: answers=2, valid=2' (review helper-91)."""
    from rerank.backends.fake import FakeBackend
    from rerank.rerankers.pointwise import YesNo

    unreadable = lambda prompt, options: [float("nan")] * len(options) if "unreadable" in prompt else [-0.1, -2.0]
    with running(create_app(YesNo(FakeBackend(score=unreadable)), ServeConfig(), warmup=False)) as url:
        assert parse_warnings(url, ["fleas bite", "cats purr"]) == []
        assert parse_warnings(url, ["fleas bite", "unreadable"]) == [
            "answer parse repairs: answers=2, valid=1, repaired=1, problems={'not_finite': 1}"]


class ScoreInText(PointwiseReranker):
    """A user's reranker that reads each score from the document text ("nan" and "inf" included)."""

    def score_pairs(self, queries, texts):
        return np.array([float(t) for t in texts])


def test_a_non_finite_score_is_a_model_error_not_a_null():
    with running(create_app(ScoreInText(), ServeConfig(), warmup=False)) as url:
        post = lambda docs: httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": docs}, timeout=30)
        nan, inf, fine = post(["1.5", "nan"]), post(["-inf", "2"]), post(["1", "2"])
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert nan.status_code == 500 and nan.json()["type"] == "model_error"
    assert "1 non-finite score(s), e.g. nan for documents[1]" in nan.json()["message"]
    assert inf.status_code == 500 and "e.g. -inf for documents[0]" in inf.json()["message"]
    assert fine.status_code == 200 and [r["index"] for r in fine.json()["results"]] == [1, 0]
    assert 'rerank_errors_total{endpoint="/v1/rerank",type="model_error"} 2.0' in metrics


def hung_up(sock) -> bool:
    """Whether the server closed the connection: more bytes sent meet an end of stream or a reset.

    A reset is the usual answer when the close reaches us before (or while) the bytes are sent.
    """
    try:
        sock.sendall(b'"still trickling')
        return sock.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_a_body_that_trickles_in_gets_408_within_the_deadline():
    import socket

    with running(create_app(Gate(), ServeConfig(request_timeout=1), warmup=False)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"query\": ")
            started = time.monotonic()
            answer = sock.recv(65536).decode()
            closed = hung_up(sock)  # the slow client holds no connection
    assert answer.startswith("HTTP/1.1 408") and "request_timeout=1" in answer and "connection: close" in answer.lower()
    assert closed and time.monotonic() - started < 10


def test_a_client_that_hangs_up_mid_body_is_counted_as_499_not_500():
    import socket

    with running(create_app(Gate(), ServeConfig(), warmup=False)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n" + b'{"query": "fleas", "')  # 20 of 100 bytes
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # whatever comes back, until the server closes
                pass
        deadline = time.monotonic() + 10
        while 'status="499"' not in (metrics := httpx.get(f"{url}/metrics", timeout=30).text) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert 'rerank_requests_total{endpoint="/v1/rerank",status="499"} 1.0' in metrics and 'status="500"' not in metrics
    assert 'rerank_errors_total{endpoint="/v1/rerank",type="client_closed"} 1.0' in metrics


class TimesOut(Gate):
    """A reranker whose backend call times out (a socket timeout inside the model)."""

    def score_pairs(self, queries, texts):
        raise TimeoutError("read timed out")


def test_a_timeout_inside_the_model_is_a_backend_failure_not_the_request_deadline():
    with running(create_app(TimesOut(), ServeConfig(), warmup=False)) as url:
        out = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=30)
    assert out.status_code == 502 and out.json()["type"] == "backend_error" and "timed out" in out.json()["message"]
