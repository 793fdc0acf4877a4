"""The one encoder abstraction, on the real offline MiniLM: settings stay with their encoder, runtimes agree."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rerank import ConfigError, DataError, Doc
from rerank.backends.hf import HFBackend
from rerank.data import load
from rerank.encoders import DEFAULT_ENCODER, Encoder, resolve_encoder, resolve_runtime
from rerank.errors import MissingDependency
from rerank.expr import build
from rerank.models import loading
from rerank.rerankers.biencoder import BiEncoderReranker
from rerank.rerankers.cross_encoder import CrossEncoderReranker
from rerank.rerankers.e2rank import E2Rank
from rerank.retrievers.dense import Dense
from rerank.scorers import MaxSim

pytestmark = pytest.mark.slow
LONG = " ".join(f"word{i} is a token" for i in range(120))  # far over MiniLM's 256 tokens


@pytest.fixture(scope="module")
def scifact_docs():
    return load("scifact").corpus()[:48]


def test_one_encoders_max_length_never_reaches_another():
    """The bug: after Dense(max_length=64), every later Dense, E2Rank or MaxSim on the model cut texts at 64 tokens."""
    full = Encoder(runtime="torch").encode([LONG], kind="doc")
    short = Dense(max_length=64, runtime="torch").encoder.encode([LONG], kind="doc")
    assert float(full[0] @ short[0]) < 0.99  # the 64-token cut is a different vector
    assert np.allclose(Dense(runtime="torch").encoder.encode([LONG], kind="doc"), full, atol=1e-6)
    assert np.allclose(E2Rank(runtime="torch").encoder.encode([LONG], kind="doc"), full, atol=1e-6)
    assert E2Rank(runtime="torch").prompt_tokens == 256
    assert len(MaxSim(runtime="torch").encoder.token_embeddings([LONG], kind="doc")[0]) == 256
    bi = BiEncoderReranker(runtime="torch")
    assert bi.rerank("word7", [LONG]).info["truncated"] == 1 and bi.encoder.max_tokens == 256


def test_settings_are_passed_per_call_not_read_from_the_shared_model():
    enc = Encoder(runtime="torch")
    before = enc.encode([LONG], kind="doc")
    shared = enc.loaded.model
    saved, shared.max_seq_length = shared.max_seq_length, 16  # someone else's code mutates the shared model
    try:
        assert np.allclose(enc.encode([LONG], kind="doc"), before, atol=1e-6)
    finally:
        shared.max_seq_length = saved


def test_prefixes_and_per_call_limits():
    enc = Encoder(query_prefix="query: ", doc_prefix="passage: ", runtime="torch")
    plain = Encoder(runtime="torch")
    assert np.allclose(enc.encode(["fleas"], kind="query"), plain.encode(["query: fleas"], kind="query"), atol=1e-6)
    assert np.allclose(enc.encode(["fleas"], kind="doc"), plain.encode(["passage: fleas"], kind="doc"), atol=1e-6)
    assert np.allclose(plain.encode([LONG], kind="doc", max_length=64),
                       Encoder(max_length=64, runtime="torch").encode([LONG], kind="doc"), atol=1e-6)
    assert plain.encode([], kind="doc").shape == (0, 384)
    with pytest.raises(ConfigError, match="512 positions"):
        plain.encode(["x"], kind="doc", max_length=1000)
    with pytest.raises(ConfigError, match="kind"):
        plain.encode(["x"], kind="passage")


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="runtime='fp8'"):
        Dense(runtime="fp8")
    with pytest.raises(ConfigError, match="pooling"):
        Encoder(pooling="cls")
    with pytest.raises(ConfigError, match="needs pooling='model'"):
        Encoder("smollm2", pooling="last", runtime="onnx")
    with pytest.raises(ConfigError, match="batch_size"):
        Encoder(batch_size=0)
    assert resolve_runtime("torch") == "torch" and resolve_runtime("auto") in ("torch", "bf16")


def test_max_length_has_one_bound_and_one_message():   # review helper-68: 0 said ">= 1", 1 said "at least 2"
    for bad in (0, 1):   # helper-78: Dense and dense(...) still said ">= 1" for 0, and named the Encoder for 1
        for what, make in (("Encoder", lambda: Encoder(max_length=bad)), ("Dense", lambda: Dense(max_length=bad)),
                           ("dense", lambda: build(f"dense(max_length={bad})"))):
            with pytest.raises(ConfigError, match=f"^{what}: max_length must be >= 2, got {bad}( in |$)"):
                make()


def test_last_token_pooling_reads_an_empty_text_as_the_end_token_in_any_batch():   # review helper-68
    enc = Encoder("smollm2", pooling="last", runtime="torch")
    alone, mixed = enc.encode([""], kind="doc"), enc.encode(["Fleas feed on blood.", "", "Paris."], kind="doc")
    assert np.allclose(alone[0], mixed[1], atol=1e-5)   # alone it crashed; among others it read a padding position
    assert np.allclose(alone, enc.encode([enc.tokenizer.eos_token], kind="doc"), atol=1e-6)


def test_last_token_pooling_finds_an_alias_offline():   # review helper-68: it asked the hub for "minilm"
    with pytest.raises(ConfigError, match="^minilm pools by mean"):   # its packaged files read (helper-78: not encoded by them)
        Encoder("minilm", pooling="last", runtime="torch").encode(["", "fleas"], kind="doc")


def test_last_token_pooling_refuses_a_model_whose_files_say_it_pools_otherwise(tmp_path):   # helper-78
    """The bug: a mean-pooled bi-encoder or a cross-encoder (its head dropped) with pooling='last' gave vectors
    without a word; a folder whose Pooling module pools by the last token still loads."""
    from sentence_transformers import CrossEncoder

    bi, ce, last = resolve_encoder(DEFAULT_ENCODER), tmp_path / "ce", tmp_path / "last"
    CrossEncoder(bi, num_labels=1).save(str(ce))
    shutil.copytree(bi, last)
    (last / "1_Pooling" / "config.json").write_text('{"embedding_dimension": 384, "pooling_mode": "lasttoken"}')
    with pytest.raises(ConfigError, match=r"pools by mean \(its 1_Pooling/config.json says so\), not by its last token: "
                                          r"pooling='last' would read another vector .*; use pooling='model'$"):
        Encoder(bi, pooling="last").encode(["Paris."], kind="doc")
    with pytest.raises(ConfigError, match=r"is a cross-encoder \(its config_sentence_transformers.json says model_type "
                                          r"CrossEncoder\), not a bi-encoder: pooling='last' would"):
        E2Rank(str(ce), pooling="last").encoder.encode(["Paris."], kind="doc")
    assert Encoder(str(last), pooling="last").encode(["Paris."], kind="doc").shape == (1, 384)


def test_runtimes_agree_on_real_documents(scifact_docs):
    texts = [d.full_text() for d in scifact_docs]
    fp32 = Encoder(runtime="torch").encode(texts, kind="doc")
    bf16 = Encoder(runtime="bf16").encode(texts, kind="doc")
    cosine = np.sum(fp32 * bf16, axis=1)
    assert bf16.dtype == np.float32 and cosine.min() > 0.99 and cosine.mean() > 0.999


def test_a_runtime_that_is_not_installed_names_what_to_install():
    pytest.importorskip("torch")
    try:
        import optimum.onnxruntime  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependency, match=r"sentence-transformers\[onnx\]"):
            Encoder(runtime="onnx").encode(["x"], kind="doc")
    else:
        pytest.skip("optimum-onnx is installed here")


def test_a_saved_index_refuses_other_encoder_settings(scifact_docs, tmp_path):
    """params.json records the encoder as resolved where the index was built ("auto" may be bf16
    there and float32 here), and a reader with another encoder is refused."""
    Dense(runtime="torch").index(scifact_docs[:8]).save(tmp_path / "ix")
    assert Dense.load(tmp_path / "ix").runtime == "torch"
    with pytest.raises(DataError, match="was built with encoder=.*'runtime': 'torch'.*, not encoder=.*'runtime': 'bf16'"):
        Dense(runtime="bf16").read_index(tmp_path / "ix")
    with pytest.raises(DataError, match="'max_length': None.*max_length at its default, not .*'max_length': 64"):
        Dense(runtime="torch", max_length=64).read_index(tmp_path / "ix")


def test_cross_encoder_runtimes_agree(tmp_path, dl19_top10):
    """No trained cross-encoder installs offline: a real MiniLM body with an untrained head, scores compared."""
    from scipy.stats import spearmanr
    from sentence_transformers import CrossEncoder

    import torch

    torch.manual_seed(0)  # the same untrained head every run
    CrossEncoder(resolve_encoder(DEFAULT_ENCODER), num_labels=1).save(str(tmp_path))
    fp32 = CrossEncoderReranker(str(tmp_path), runtime="torch")(dl19_top10)
    bf16 = CrossEncoderReranker(str(tmp_path), runtime="bf16")(dl19_top10)
    a = fp32.to_pandas().sort_values(["qid", "docid"])
    b = bf16.to_pandas().sort_values(["qid", "docid"])
    rho = [spearmanr(a[a.qid == q]["score"], b[b.qid == q]["score"]).statistic for q in a["qid"].unique()]
    assert np.mean(rho) >= 0.99, rho
    with pytest.raises(ConfigError, match="runtime"):
        CrossEncoderReranker(str(tmp_path), runtime="int4")


def test_building_a_pipeline_loads_no_model():
    """Linking embedding sources and users must not touch lazily loaded models (a hub id offline would fail)."""
    from rerank.expr import build

    pipe = build("bm25 % 10 >> cross-encoder(model='no-such-org/no-such-model') >> e2rank")
    assert "encoder" not in vars(pipe.stages[-2])


LOADERS = {  # each stage that loads a model, as a user calls it; what its error calls the model
    "cross-encoder": ("cross-encoder model", lambda m: CrossEncoderReranker(m).rerank("fleas", ["Fleas bite."])),
    "biencoder": ("encoder model", lambda m: BiEncoderReranker(m).rerank("fleas", ["Fleas bite."])),
    "e2rank": ("encoder model", lambda m: E2Rank(m).rerank("fleas", ["Fleas bite."])),
    "e2rank-last": ("encoder model", lambda m: E2Rank(m, pooling="last", runtime="torch").rerank("fleas", ["Fleas bite."])),
    "dense": ("encoder model", lambda m: Dense(m).index([Doc("d1", "Fleas bite.")])),
    "maxsim": ("encoder model", lambda m: MaxSim(m).score_pairs(["fleas"], ["Fleas bite."])),
    "hf-backend": ("hf backend model", lambda m: HFBackend(m, device="cpu")),
}


@pytest.fixture
def unloadable(tmp_path):
    """Model names that name no model: (name, the start of the cause the error gives)."""
    notes, weightless = tmp_path / "notes", tmp_path / "weightless"
    notes.mkdir()
    (notes / "README.md").write_text("no model here")
    weightless.mkdir()
    shutil.copy(Path(resolve_encoder(DEFAULT_ENCODER)) / "config.json", weightless)  # a config, no weights
    return [("./missing", "no such folder"), (str(tmp_path / "gone" / "model"), "no such folder"),
            (str(notes), "Unrecognized model in"), (str(weightless), "Error no file named model.safetensors")]


@pytest.mark.parametrize("stage", LOADERS)
def test_a_model_that_cannot_be_loaded_is_one_config_error_naming_it(stage, unloadable):
    """The bug: a missing folder, a folder that holds no model or an invalid id raised Hugging Face's raw
    OSError / HFValidationError / ValueError, often over several lines."""
    what, load = LOADERS[stage]
    for name, cause in unloadable:
        with pytest.raises(ConfigError) as refused:
            load(name)
        message = str(refused.value)
        assert message.startswith(f"{what} {name!r} cannot be loaded ({cause}"), message
        assert message.endswith("give a local model folder, or a hub id (needs the network or a cached copy)")
        assert "\n" not in message


def test_only_failures_to_load_become_config_errors():
    """Our own errors and bugs inside a load pass unchanged; nothing but a loading failure is rewritten."""
    folder = resolve_encoder(DEFAULT_ENCODER)
    with pytest.raises(TypeError, match="^a bug of ours$"):
        with loading("encoder model", folder):
            raise TypeError("a bug of ours")
    with pytest.raises(ConfigError, match="^a message of ours$"):
        with loading("encoder model", folder):
            raise ConfigError("a message of ours")
    with pytest.raises(ConfigError, match=r"^encoder model 'x' cannot be loaded \(OSError\)"):
        with loading("encoder model", "x"):
            raise OSError()
    with loading("encoder model", folder):  # the offline MiniLM loads as before
        assert Encoder(folder, runtime="torch").dim == 384
    with pytest.raises(ConfigError, match="model must be a hub id, alias or folder, got ''"):
        Encoder("")


@pytest.mark.parametrize("command, pipeline", [
    ("search", "bm25 >> cross-encoder(model='no-such-org/not-cached')"),
    ("search", "bm25 >> yes-no(backend='hf:no-such-org/not-cached')"),
    ("search", "bm25 >> e2rank(model='./missing')"),
    ("eval", "bm25 % 5 >> biencoder(model='./missing')"),
])
def test_the_cli_refuses_a_model_it_cannot_load_in_one_line(command, pipeline, tmp_path):
    """The bug: ``rerank search --pipeline "bm25 >> cross-encoder" ...`` offline printed
    ``rerank: unexpected OSError: We couldn't connect to 'https://huggingface.co'...`` and exited 1."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RERANK_CACHE": str(tmp_path)}
    args = [command, "--dataset", "cranfield", "--pipeline", pipeline] + (["wing flutter"] if command == "search" else [])
    proc = subprocess.run([sys.executable, "-m", "rerank.cli", "--quiet", *args], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("rerank: error: "), proc.stderr
    assert "cannot be loaded (" in proc.stderr and "Traceback" not in proc.stderr
