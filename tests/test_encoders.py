"""The one encoder abstraction, on the real offline MiniLM: settings stay with their encoder, runtimes agree."""

import numpy as np
import pytest

from rerank import ConfigError, DataError
from rerank.data import load
from rerank.encoders import DEFAULT_ENCODER, Encoder, resolve_encoder, resolve_runtime
from rerank.errors import MissingDependency
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
    Dense(runtime="torch").index(scifact_docs[:8]).save(tmp_path / "ix")
    assert Dense.load(tmp_path / "ix").runtime == "torch"
    saved = tmp_path / "ix" / "encoder.json"
    saved.write_text(saved.read_text().replace('"max_length": null', '"max_length": 64'))
    with pytest.raises(DataError, match="encoder settings"):
        Dense.load(tmp_path / "ix")
    saved.unlink()  # an index saved before encoders were recorded
    with pytest.raises(DataError, match="encoder settings"):
        Dense.load(tmp_path / "ix")


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
