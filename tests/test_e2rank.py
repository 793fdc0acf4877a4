"""E2Rank with the real offline MiniLM on a SciFact slice (judged documents + distractors)."""

import random
import re
from types import SimpleNamespace

import numpy as np
import pytest

from rerank import ConfigError, DataError, evaluate
from rerank.data import load
from rerank.expr import build
from rerank.rerankers.e2rank import E2Rank
from rerank.retrievers.dense import Dense

pytestmark = pytest.mark.slow
FP32 = "torch"  # exact score checks run in float32 (bfloat16 scores move by ~1e-3 with batch composition)


@pytest.fixture(scope="module")
def scifact_slice():
    ds = load("scifact")
    queries = ds.queries()[:12]
    qrels = {q.qid: ds.qrels()[q.qid] for q in queries}
    judged = {d for docs in qrels.values() for d in docs}
    others = [d for d in ds.corpus() if d.docid not in judged]
    docs = [ds.docstore[d] for d in sorted(judged)] + random.Random(0).sample(others, 80)
    return queries, qrels, docs


@pytest.fixture(scope="module")
def dense(scifact_slice):
    return Dense(num_results=20, runtime=FP32).index(scifact_slice[2])


@pytest.fixture(scope="module")
def first_stage(dense, scifact_slice):
    return dense(scifact_slice[0])


def test_prompt_follows_the_paper_and_fits_the_model():
    e2 = E2Rank(num_input_docs=3)
    prompt = e2.listwise_prompt("do fleas eat blood?", ["Fleas feed on blood. " * 80, "Cats have fleas.", "Paris.", "never shown"])
    assert prompt.startswith("Given a web search query and some relevant documents, rerank the documents that answer the query:\nDocuments:\n[1] Fleas")
    assert "\n[2] Cats have fleas.\n[3] Paris.\nSearch Query: do fleas eat blood?" in prompt and "never shown" not in prompt
    assert e2.encoder.count(prompt) <= e2.prompt_tokens == 256  # the long document was cut at a token boundary
    capped = E2Rank(num_input_docs=3, doc_max_tokens=4).listwise_prompt("q", ["one two three four five six seven", "b", "c"])
    assert "[1] one two three four\n" in capped


def test_reuses_dense_embeddings_and_matches_encoding_itself(dense, first_stage):
    reused, encoded = E2Rank(doc_embeddings=dense, runtime=FP32), E2Rank(runtime=FP32)
    a, b = reused(first_stage), encoded(first_stage)
    assert len(reused._memo) == 0 and len(encoded._memo) > 0  # reuse: no document was embedded again
    assert a.to_pandas()["docid"].tolist() == b.to_pandas()["docid"].tolist()
    assert np.allclose(a.to_pandas()["score"], b.to_pandas()["score"], atol=1e-5)
    assert reused == encoded and repr(reused) == "E2Rank(runtime='torch')"  # the lookup changes cost, not identity


def test_reranks_every_candidate_by_cosine_with_the_listwise_embedding(first_stage, scifact_slice):
    e2 = E2Rank(prompt="e2rank/scifact", num_input_docs=5, doc_max_tokens=40, runtime=FP32)
    out = e2(first_stage)
    assert len(out) == len(first_stage) and set(out.columns) >= {"qid", "docid", "score", "rank", "text"}
    first = next(first_stage.per_query())
    reranked = next(c for c in out.per_query() if c.qid == first.qid)
    prompt = e2.listwise_prompt(first.query, first.texts)
    q = e2.encoder.encode([prompt], kind="query", max_length=e2.prompt_tokens)[0]
    d = e2.encoder.encode(reranked.texts, kind="doc")
    assert np.allclose(reranked.scores, d @ q, atol=1e-4)
    # Honest effectiveness: MiniLM was not trained on listwise prompts, so E2Rank with it may lose to
    # plain dense retrieval (measured by pipelines/bench_e2rank.py); here it must stay a sane ranking.
    assert evaluate(out, scifact_slice[1], ["ndcg@10"])["ndcg@10"] > 0.3


def test_pipeline_takes_document_embeddings_from_its_dense_stage(scifact_slice, tmp_path, monkeypatch):
    """The cache_dir bug: build(..., cache_dir=X) indexed under X while E2Rank looked in the default cache."""
    default = tmp_path / "default-cache"
    monkeypatch.setenv("RERANK_CACHE", str(default))
    docs = scifact_slice[2][:40]
    dataset = SimpleNamespace(name="scifact-slice", corpus=lambda: docs)
    pipe = build("dense % 10 >> e2rank(num_input_docs=5)", dataset=dataset, cache_dir=tmp_path / "elsewhere")
    dense, e2 = pipe.stages[0], pipe.stages[-1]
    assert isinstance(e2, E2Rank) and e2.doc_embeddings is dense and dense.is_indexed
    out = pipe(scifact_slice[0][:3])
    assert len(out) == 30 and len(e2._memo) == 0  # no document was embedded again
    assert any((tmp_path / "elsewhere" / "indexes").iterdir()) and not default.exists()
    alone = build("bm25 % 10 >> e2rank", dataset=dataset, cache_dir=tmp_path / "elsewhere").stages[-1]
    assert alone.doc_embeddings is None  # no dense stage: candidates are embedded on demand
    other = build("dense(max_length=64) % 10 >> e2rank", dataset=dataset, cache_dir=tmp_path / "elsewhere").stages[-1]
    assert other.doc_embeddings is None  # its vectors are not the ones E2Rank computes: not used


def test_python_pipelines_lend_embeddings_too(dense, first_stage):
    pipe = dense % 10 >> E2Rank(num_input_docs=5, runtime=FP32)
    assert pipe.stages[-1].doc_embeddings is dense
    assert repr(pipe) == "Dense(runtime='torch', num_results=20) >> Cutoff(10) >> E2Rank(num_input_docs=5, runtime='torch')"
    assert (Dense(runtime="torch") >> E2Rank(runtime="bf16")).stages[-1].doc_embeddings is None


def test_a_candidate_shown_otherwise_than_indexed_is_scored_by_its_own_text(dense, first_stage):
    """Cut, title-less or empty texts of indexed documents were scored with the stored vector of the
    whole document (review helper-64)."""
    frame = first_stage.to_pandas()
    for shown in (lambda t: " ".join(t.split()[:3]), lambda t: t[: len(t) // 2], lambda t: ""):
        ranking = type(first_stage)(frame.assign(text=frame["text"].map(shown)))
        lent, own = E2Rank(doc_embeddings=dense, runtime=FP32)(ranking), E2Rank(runtime=FP32)(ranking)
        assert lent.to_pandas()[["docid", "score"]].equals(own.to_pandas()[["docid", "score"]])


def test_copies_of_one_document_score_alike_and_keep_their_order():
    """BLAS rounded copies of one row differently, so a later copy could outrank an earlier one (review helper-64)."""
    for texts, order in ((["cats purr", "dogs bark", "cats purr"], ["0", "2", "1"]),
                         (["cats purr", "dogs bark", "cats purr", "cats purr"], ["0", "2", "3", "1"])):
        res = E2Rank(runtime=FP32).rerank("cats", texts)
        assert res.docids == order and len({r.score for r in res if r.docid != "1"}) == 1


def test_a_users_embedding_mapping_must_hold_unit_vectors_of_the_encoders_size():
    good = E2Rank(runtime=FP32).encoder.encode(["cats purr"], kind="doc")[0]
    for bad, got in ((good[:100], "float32 of shape (100,)"), (good * 10, "norm 10"), (np.stack([good]), "shape (1, 384)"),
                     ("abc", "of shape ()")):
        with pytest.raises(DataError, match=rf"doc_embeddings\['0'\] must be a unit vector of 384 numbers.*{re.escape(got)}"):
            E2Rank(doc_embeddings={"0": bad}, runtime=FP32).rerank("cats", ["cats purr", "dogs bark"])


def test_an_interrupted_reindex_leaves_no_documents_over_the_old_embeddings(scifact_slice, monkeypatch):
    """Docids and texts of the new corpus stood over the old vectors, which E2Rank then borrowed (review helper-64)."""
    dense = Dense(runtime=FP32).index(scifact_slice[2][:5])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dense.encoder, "encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dense.index(scifact_slice[2][5:10])
    assert not dense.is_indexed and dense.embeddings_for([d.docid for d in scifact_slice[2][5:10]]) == {}
    with pytest.raises(ConfigError, match="has no index yet"):
        dense.search("anything")


def test_bad_configuration_is_refused(dense):
    with pytest.raises(ConfigError, match="pooling"):
        E2Rank(pooling="cls")
    with pytest.raises(ConfigError, match="not an E2Rank prompt"):
        E2Rank(prompt="listwise/rankgpt")
    with pytest.raises(ConfigError, match="must encode documents exactly"):
        E2Rank("someone/other-model", doc_embeddings=dense)
    with pytest.raises(ConfigError, match="must encode documents exactly"):
        E2Rank(prompt="e2rank/checkpoint", doc_embeddings=dense)  # a doc_suffix changes the vectors
    with pytest.raises(ConfigError, match="chat template"):
        E2Rank(prompt="e2rank/checkpoint").rerank("q", ["a", "b"])
    with pytest.raises(ConfigError, match="needs 1.. tokens before any document text, over max_length=64; lower num_input_docs"):
        E2Rank(num_input_docs=50, max_length=64).rerank("q " * 20, ["a"] * 50)
    # review helper-64: a long query was told to lower num_input_docs, which cannot help it
    with pytest.raises(DataError, match="the query 'q q .* takes 40 tokens and leaves no room for its 2 documents .*; "
                                        "shorten the query or raise max_length"):
        E2Rank(num_input_docs=2, max_length=64).rerank("q " * 40, ["a", "b"])


def test_last_token_pooling_with_a_chat_template():
    """The path of the released checkpoints (decoder, last token, chat template), on SmolLM2."""
    e2 = E2Rank("smollm2", pooling="last", prompt="e2rank/checkpoint", num_input_docs=2, max_length=256)
    prompt = e2.listwise_prompt("what do fleas eat", ["Fleas feed on blood.", "Paris is in France."])
    assert prompt.rstrip().endswith("assistant") and "[2] Paris is in France.\nSearch Query: what do fleas eat" in prompt
    res = e2.rerank("what do fleas eat", ["Fleas feed on blood.", "Paris is in France.", "Cats carry fleas."])
    assert sorted(res.docids) == ["0", "1", "2"] and all(-1.0 <= r.score <= 1.0 for r in res)


def test_a_server_scores_request_documents_itself_not_the_index_documents_their_positions_name(scifact_slice):
    """Review helper-58: served as ``dense % 20 >> e2rank``, request document "1" was scored with the
    stored embedding of the corpus document named "1" when its text was the start of that document."""
    from rerank.serve.engine import Engine, RerankJob
    from rerank.types import Doc

    corpus = [Doc(str(i), d.text, d.title) for i, d in enumerate(scifact_slice[2][:20])]   # docids "0", "1", ...
    dense = Dense(runtime=FP32).index(corpus)
    engine = Engine(dense % 20 >> E2Rank(runtime=FP32), searchable=True)
    texts = ["Paris is the capital of France.", " ".join(corpus[1].full_text().split()[:3])]
    served = engine.rerank([RerankJob("what is a vaccine?", texts)])[0]
    alone = E2Rank(runtime=FP32).rerank("what is a vaccine?", texts)
    assert served.docids == alone.docids and np.allclose(served.scores, [r.score for r in alone], atol=1e-5)
    assert engine.pipeline.stages[-1].doc_embeddings is dense and engine.reranker.doc_embeddings is None


def test_the_embedding_memo_keeps_the_most_recently_used_within_its_budget(monkeypatch):
    from rerank.rerankers import e2rank

    monkeypatch.setattr(e2rank._Memo, "BYTES", 3 * 384 * 4)   # three MiniLM vectors
    e2 = E2Rank(runtime=FP32)
    e2.rerank("q", ["a b", "c d", "e f", "g h", "i j"])       # a batch larger than the memo is scored whole
    assert len(e2._memo) == 3 and "g h" in e2._memo and "a b" not in e2._memo
