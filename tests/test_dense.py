"""Dense retrieval with the real offline MiniLM on a SciFact slice (judged documents + distractors)."""

import random
from pathlib import Path

import numpy as np
import pytest

from rerank import ConfigError, Ranking, evaluate
from rerank.data import load
from rerank.encoders import resolve_encoder
from rerank.retrievers.dense import Dense

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scifact_slice():
    ds = load("scifact")
    queries = ds.queries()[:40]
    qrels = {q.qid: ds.qrels()[q.qid] for q in queries}
    judged = {d for docs in qrels.values() for d in docs}
    others = [d for d in ds.corpus() if d.docid not in judged]
    docs = [ds.docstore[d] for d in sorted(judged)] + random.Random(0).sample(others, 400)
    return queries, qrels, docs


@pytest.fixture(scope="module")
def flat(scifact_slice):
    return Dense(num_results=100).index(scifact_slice[2])


def test_offline_weights_are_used_for_the_hub_id():
    local = resolve_encoder("sentence-transformers/all-MiniLM-L6-v2")
    assert Path(local).is_dir() and resolve_encoder("all-MiniLM-L6-v2") == local
    assert resolve_encoder("someone/other-model") == "someone/other-model"


def test_flat_index_is_exact_and_effective(flat, scifact_slice):
    queries, qrels, docs = scifact_slice
    run = flat(Ranking.from_queries(queries))
    q = flat.encode_queries([queries[0].text])[0]
    brute = np.argsort(-(flat.embeddings @ q))[:10]
    assert [c.docids[:10] for c in run.per_query()][0] == [docs[i].docid for i in brute]
    assert evaluate(run, qrels, ["ndcg@10"])["ndcg@10"] > 0.6  # all-MiniLM-L6-v2 on SciFact: 0.645 published


def test_hnsw_agrees_with_flat(flat, scifact_slice):
    queries, _, docs = scifact_slice
    hnsw = Dense(index="hnsw", num_results=10)
    hnsw.embeddings, hnsw._faiss = flat.embeddings, hnsw._make_index(flat.embeddings)
    hnsw._set_docs(docs)
    topics = Ranking.from_queries(queries)
    exact = {c.qid: set(c.docids[:10]) for c in (flat % 10)(topics).per_query()}
    approx = {c.qid: set(c.docids) for c in hnsw(topics).per_query()}
    overlap = np.mean([len(exact[q] & approx[q]) / 10 for q in exact])
    assert overlap >= 0.95


def test_save_load_round_trip_with_mmap(flat, scifact_slice, tmp_path):
    flat.save(tmp_path / "ix")
    again = Dense.load(tmp_path / "ix", mmap=True)
    topics = Ranking.from_queries(scifact_slice[0][:5])
    a, b = list(again(topics).per_query()), list(flat(topics).per_query())
    assert [c.docids for c in a] == [c.docids for c in b]
    assert np.allclose(np.concatenate([c.scores for c in a]), np.concatenate([c.scores for c in b]))
    assert repr(again) == repr(flat)


def test_a_saved_index_with_a_row_missing_or_a_damaged_faiss_file_is_refused(flat, tmp_path):
    from rerank.errors import DataError

    flat.save(tmp_path / "ix")
    np.save(tmp_path / "ix" / "embeddings.npy", flat.embeddings[:-1])
    with pytest.raises(DataError, match="embeddings and .* indexed vectors for .* documents"):
        Dense.load(tmp_path / "ix")
    flat.save(tmp_path / "ix")
    (tmp_path / "ix" / "flat.faiss").write_bytes((tmp_path / "ix" / "flat.faiss").read_bytes()[:100])
    with pytest.raises(DataError, match="missing or damaged"):
        Dense.load(tmp_path / "ix")


def test_rescoring_given_candidates_and_search(flat, scifact_slice):
    queries, _, docs = scifact_slice
    cands = Ranking.from_records([(queries[0].qid, queries[0].text, d.docid, 0.0) for d in docs[:20]])
    rescored = flat(cands)
    assert len(rescored) == 20 and set(rescored.to_pandas()["docid"]) == {d.docid for d in docs[:20]}
    hits = flat.search(queries[0].text, k=3)
    assert len(hits) == 3 and hits[0].text and hits[0].score >= hits[1].score


def test_a_query_longer_than_the_encoder_reads_is_counted_in_a_warning(flat, caplog):
    with caplog.at_level("WARNING", logger="rerank"):
        flat.search("flea life cycle", k=1)
    assert "truncated" not in caplog.text
    with caplog.at_level("WARNING", logger="rerank"):
        flat.search("flea " * 400 + "eggs", k=1)
    assert "1 of 1 queries exceed 256 tokens and were truncated" in caplog.text


def test_bad_settings_and_unindexed_use():
    with pytest.raises(ConfigError, match="dense index"):
        Dense(index="lsh")
    with pytest.raises(ConfigError, match="no index"):
        Dense().search("x")


def test_prebuilt_embeddings_answer_only_for_their_corpus_and_encoder(flat, scifact_slice, tmp_path, monkeypatch, caplog):
    from rerank.prebuilt import write
    from rerank.types import Doc

    docs = scifact_slice[2][:30]
    reference = Dense()
    written = write(tmp_path / "prebuilt", docs, reference.encoder.identity("doc"), flat.embeddings[:30])
    monkeypatch.setenv("RERANK_DATASETS", str(tmp_path))
    with caplog.at_level("INFO", logger="rerank"):
        used = Dense().index(docs)
    assert "prebuilt" in caplog.text and np.array_equal(used.embeddings, flat.embeddings[:30])

    caplog.clear()
    with caplog.at_level("INFO", logger="rerank"):
        edited = [Doc(d.docid, d.text + " edited", d.title) if i == 7 else d for i, d in enumerate(docs)]
        Dense().index(edited)                       # one text differs
        Dense(max_length=64).index(docs)            # another encoder setting
        Dense(runtime="torch" if reference.encoder.identity("doc")["runtime"] != "torch" else "bf16").index(docs)
        monkeypatch.setenv("RERANK_PREBUILT", "off")
        Dense().index(docs)                         # turned off
    assert "prebuilt" not in caplog.text

    monkeypatch.delenv("RERANK_PREBUILT")
    written.write_bytes(written.read_bytes()[:100])  # truncated: skipped with a warning, then encoded
    caplog.clear()
    with caplog.at_level("INFO", logger="rerank"):
        rebuilt = Dense().index(docs)
    assert "unreadable" in caplog.text  # and encoded again (bf16 vectors move ~1e-3 with batch composition)
    assert np.min(np.sum(rebuilt.embeddings * flat.embeddings[:30], axis=1)) > 0.999

    bad = flat.embeddings[:30].copy()
    bad[3, 5] = np.nan                               # NaN in the array: skipped, never indexed
    write(tmp_path / "prebuilt", docs, reference.encoder.identity("doc"), bad)
    (tmp_path / "prebuilt" / "other.json").write_text("[1, 2]")  # a JSON that is not an object
    caplog.clear()
    with caplog.at_level("INFO", logger="rerank"):
        rebuilt = Dense().index(docs)
    assert caplog.text.count("unreadable") == 2 and np.isfinite(rebuilt.embeddings).all()

    from rerank.prebuilt import lookup

    good = write(tmp_path / "prebuilt", docs, reference.encoder.identity("doc"), flat.embeddings[:30]).read_bytes()
    written.write_bytes(good[:10] + bytes(len(good) - 10))  # a corrupt deflate stream
    caplog.clear()
    with caplog.at_level("WARNING", logger="rerank"):
        assert lookup(docs, reference.encoder.identity("doc")) is None
    assert "unreadable" in caplog.text


def test_shipped_scifact_embeddings_match_a_fresh_encoding():
    """The bundled entry is what this code computes: a sample of documents re-encoded agrees with it."""
    from rerank.prebuilt import lookup

    docs = load("scifact").corpus()
    dense = Dense(runtime="bf16")
    shipped = lookup(docs, dense.encoder.identity("doc"))
    assert shipped is not None and shipped.shape == (len(docs), 384)
    sample = random.Random(1).sample(range(len(docs)), 24)
    fresh = dense.encoder.encode([docs[i].full_text() for i in sample], kind="doc")
    assert np.min(np.sum(fresh * shipped[sample], axis=1)) > 0.999
