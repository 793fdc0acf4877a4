"""ANNCUR over the real MaxSim scorer (offline MiniLM token embeddings) on a SciFact slice."""

import random
import re
from types import SimpleNamespace

import numpy as np
import pytest

from rerank import ConfigError, DataError
from rerank.data import load
from rerank.retrievers.cur import ANNCUR
from rerank.scorers import CountingScorer, MaxSim, batched_scorer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def maxsim():
    return MaxSim()


@pytest.fixture(scope="module")
def slice_(maxsim):
    ds = load("scifact")
    queries = [q.text for q in ds.queries()]
    docs = random.Random(1).sample(ds.corpus(), 100)
    exact = maxsim.score_pairs(*zip(*[(q, d.full_text()) for q in queries[30:36] for d in docs]))
    return queries[:30], queries[30:36], docs, exact.reshape(6, len(docs))


def recall(found, exact_row, k=10):
    return len(set(found[:k]) & set(np.argsort(-exact_row)[:k].tolist())) / k


def test_maxsim_is_late_interaction(maxsim):
    s = maxsim.score_pairs(["fleas eat blood", "fleas eat blood"], ["Fleas feed on the blood of mammals.", "Paris is in France."])
    assert s[0] > s[1] > 0 and maxsim("fleas eat blood", "Paris is in France.") == pytest.approx(s[1])
    batched = batched_scorer(lambda q, d: float(len(q) - len(d)))  # a plain pairwise callable
    assert batched(["abc"], ["a"]).tolist() == [2.0]


def test_cur_beats_random_items_at_the_same_budget_and_keeps_it(maxsim, slice_):
    anchors, tests, docs, exact = slice_
    counter = CountingScorer(maxsim)
    cur = ANNCUR(counter, num_anchor_queries=30, num_anchor_items=10, budget=30).index(docs, anchor_queries=anchors)
    assert cur.matrix.shape == (30, 100) and counter.calls == 30 * 100
    recalls, rand = [], []
    for q, row in zip(tests, exact):
        before = counter.calls
        pos, scores = cur.search_positions(q, 10)
        assert counter.calls - before == 30 and np.all(np.diff(scores) <= 0)
        recalls.append(recall(pos.tolist(), row))
        best_random = sorted(random.Random(7).sample(range(100), 30), key=lambda i: -row[i])  # 40 exact calls at random
        rand.append(recall(best_random, row))
    assert np.mean(recalls) > np.mean(rand) + 0.15 and np.mean(recalls) >= 0.5


def test_adaptive_rounds_and_retriever_anchors(maxsim, slice_):
    anchors, tests, docs, exact = slice_
    counter = CountingScorer(maxsim)
    for cur in (ANNCUR(counter, num_anchor_queries=30, num_anchor_items=20, budget=30, rounds=2),
                ANNCUR(counter, num_anchor_queries=30, num_anchor_items=10, budget=30, anchor_items="retriever")):
        cur.index(docs, anchor_queries=anchors)
        before = counter.calls
        found = [cur.search_positions(q, 10)[0].tolist() for q in tests]
        assert counter.calls - before == 30 * len(tests)
        assert np.mean([recall(f, row) for f, row in zip(found, exact)]) >= 0.5


def test_stage_save_and_load_round_trip(slice_, tmp_path):
    anchors, tests, docs, _ = slice_
    cur = ANNCUR("maxsim", num_anchor_queries=10, num_anchor_items=10, budget=20, num_results=5).index(docs[:30], anchor_queries=anchors)
    out = cur({"t1": tests[0], "t2": tests[1]})
    assert len(out) == 10 and set(out.columns) >= {"qid", "docid", "score", "rank", "text"}
    cur.save(tmp_path / "idx")
    again = ANNCUR.load(tmp_path / "idx")
    assert again == cur and again.anchor_queries == cur.anchor_queries
    a, b = again({"t1": tests[0], "t2": tests[1]}).to_pandas(), out.to_pandas()
    assert a["docid"].tolist() == b["docid"].tolist() and np.allclose(a["score"], b["score"], atol=1e-5)
    wider = ANNCUR("maxsim", num_anchor_queries=10, num_anchor_items=15, budget=25, num_results=5).read_index(tmp_path / "idx")
    assert len(wider({"t1": tests[0]})) == 5  # the budget and anchor items are search settings: any may read the index
    with pytest.raises(ConfigError, match="num_anchor_items=40 exceeds the 30 indexed documents"):
        ANNCUR("maxsim", num_anchor_queries=10, num_anchor_items=40, budget=40).read_index(tmp_path / "idx")({"t1": tests[0]})
    rescored = cur(out)  # given candidates: exact scores
    assert np.allclose(np.sort(rescored.to_pandas()["score"].to_numpy()), np.sort(out.to_pandas()["score"].to_numpy()))
    other = tmp_path / "other"  # same settings and size, other documents: the used stage must not keep its memo
    ANNCUR("maxsim", num_anchor_queries=10, num_anchor_items=10, budget=20, num_results=5).index(docs[30:60], anchor_queries=anchors).save(other)
    topics = {"t3": tests[2], "t4": tests[3]}
    assert cur.read_index(other)(topics).to_pandas().equals(ANNCUR.load(other)(topics).to_pandas())  # (review helper-62)


def test_a_saved_first_stage_must_index_the_same_documents(slice_, tmp_path):
    """A first stage over the same documents in another order would mix up positions across the two indexes."""
    import shutil

    from conftest import resealed

    from rerank.retrievers.bm25 import BM25

    anchors, _, docs, _ = slice_
    ANNCUR("maxsim", num_anchor_queries=10, num_anchor_items=10, budget=20, anchor_items="retriever").index(
        docs[:30], anchor_queries=anchors).save(tmp_path / "idx")
    shutil.rmtree(tmp_path / "idx" / "first_stage")
    BM25().index(docs[:30][::-1]).save(tmp_path / "idx" / "first_stage")
    with pytest.raises(DataError, match="first_stage/.* changed since the index was saved"):
        ANNCUR.load(tmp_path / "idx")
    resealed(tmp_path / "idx")
    with pytest.raises(DataError, match="first_stage indexes other documents than the ANNCUR index"):
        ANNCUR.load(tmp_path / "idx")


def test_bad_configuration_is_refused(maxsim):
    with pytest.raises(ConfigError, match="budget"):
        ANNCUR(maxsim, num_anchor_items=50, budget=10)
    with pytest.raises(ConfigError, match="anchor_items"):
        ANNCUR(maxsim, anchor_items="best")
    with pytest.raises(ConfigError, match="named scorer"):
        ANNCUR(lambda q, d: 0.0, num_anchor_queries=2, num_anchor_items=2, budget=2).index(
            [("a", "x"), ("b", "y"), ("c", "z")]).save("/tmp/never-written")
    with pytest.raises(ConfigError, match="a scorer must be"):
        ANNCUR(42)


def test_bad_inputs_are_refused_before_the_anchor_matrix_is_scored():
    counter = CountingScorer(lambda q, d: float(len(set(q.split()) & set(d.split()))))
    with pytest.raises(ConfigError, match="first_stage"):
        ANNCUR(counter, anchor_items="retriever", first_stage="run")
    docs = [(f"d{i}", f"word{i} common") for i in range(6)]
    small = dict(num_anchor_queries=2, num_anchor_items=2, budget=3)
    with pytest.raises(ConfigError, match="anchor_queries must be a list of query strings"):
        ANNCUR(counter, **small).index(docs, anchor_queries="w1 w2")
    assert counter.calls == 0
    with pytest.raises(DataError, match="NaN or infinite"):
        ANNCUR(lambda q, d: float("nan"), **small).index(docs, anchor_queries=["a", "b"])
    for odd in ("x", None, "1.5", True, np.True_):  # numpy read text and booleans as numbers (review helper-81)
        with pytest.raises(DataError, match=f"gave scores that are not numbers: \\[{re.escape(repr(odd))}"):
            ANNCUR(lambda q, d: odd, **small).index(docs, anchor_queries=["a", "b"])
    import torch

    for odd in (np.array([True, False]), np.array(["1.5", "2"]), [0.5, True], torch.tensor([True, False]),
                np.array([1 + 2j, 3j]), np.array([1, 2], dtype="timedelta64[s]")):  # from score_pairs, a batch at a time
        with pytest.raises(DataError, match="gave scores that are not numbers"):
            batched_scorer(SimpleNamespace(score_pairs=lambda qs, ds, odd=odd: odd))(["a", "b"], ["c", "d"])
    with pytest.raises(DataError, match="gave scores of shape \\(6, 2\\) for 6 pairs"):
        ANNCUR(lambda q, d: [1.0, 2.0], **small).index(docs, anchor_queries=["a", "b"])
    half = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)  # numpy reads no bfloat16: one float each (review helper-85)
    assert batched_scorer(SimpleNamespace(score_pairs=lambda qs, ds: half))(["a", "b"], ["c", "d"]).tolist() == [1.0, 2.0]
    column = ANNCUR(lambda q, d: np.array([float(q in d)]), **small).index(docs, anchor_queries=["word1", "word2"])
    assert column.matrix.shape == (2, 6)  # a one-element array per pair, as CrossEncoder.predict([pair]) gives
    with pytest.raises(ConfigError, match="first_stage='anncur' is not a retriever that indexes documents on its own"):
        ANNCUR(counter, anchor_items="retriever", first_stage="anncur", **small)
    with pytest.raises(ConfigError, match="no retriever named 'nosuch'|unknown retriever 'nosuch'"):  # review helper-66: unread, so unchecked
        ANNCUR(counter, first_stage="nosuch", **small)
    with pytest.raises(DataError, match="no document has a title or text to make an anchor query from"):
        ANNCUR(counter, **small).index([(f"d{i}", " ") for i in range(4)])
    holes = [(f"d{i}", f"word{i} common" if i % 2 else " ") for i in range(6)]
    assert "" not in ANNCUR(counter, **small).index(holes).anchor_queries  # documents without text give no anchor query


def test_a_short_first_stage_list_is_topped_up_with_random_items_not_the_first_ones():
    docs = [(f"d{i}", f"word{i} filler") for i in range(40)]
    cur = ANNCUR(lambda q, d: float(len(set(q.split()) & set(d.split()))), num_anchor_queries=3, num_anchor_items=8,
                 budget=8, anchor_items="retriever", seed=3).index(docs, anchor_queries=["word1", "word2", "filler"])
    anchors = cur._first_anchors("zzz", 8)  # BM25 finds nothing for this query
    assert len(set(anchors)) == 8 and anchors != list(range(8))
