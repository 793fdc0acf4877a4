"""Listwise, FIRST and InsertRank: windowing, batching and repair logic on a FakeBackend, then the
real SmolLM2-135M on TREC-DL 2019 (marked slow)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rerank import Ranking, get
from rerank.backends.fake import FakeBackend
from rerank.errors import ConfigError
from rerank.prompts import load as load_prompt
from rerank.rerankers.insertrank import InsertRank, normalize_scores
from rerank.rerankers.listwise import First, Listwise
from rerank.types import Candidates

ITEM = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)



def by_number(prompt: str) -> str:
    """A 'model' that ranks the shown passages by the number in their text, largest first."""
    items = [(int(i), int(re.search(r"passage (\d+)", t).group(1))) for i, t in ITEM.findall(prompt)]
    return "] > [".join(str(i) for i, _ in sorted(items, key=lambda x: -x[1])) + "]"


def cands(n: int, qid: str = "q1") -> Candidates:
    return Candidates(qid, "numbers", [f"d{i}" for i in range(n)], [f"passage {i}" for i in range(n)],
                      np.arange(n, 0, -1, dtype=float))


def test_sliding_window_sorts_the_top_and_reports_clean_answers():
    lw = Listwise(FakeBackend(generate=by_number), window=4, step=2)
    out = lw.rerank_candidates(cands(9))
    assert out.docids[0] == "d8"  # the best document bubbles up from the bottom
    assert sorted(out.docids) == sorted(cands(9).docids)
    assert list(out.scores) == sorted(out.scores, reverse=True)
    assert out.info["parse"] == {"answers": 4, "valid": 4, "repaired": 0, "problems": {}}


def test_depth_leaves_the_tail_in_place_and_passes_repeat():
    fake = FakeBackend(generate=by_number)
    out = Listwise(fake, window=3, step=2, depth=5).rerank_candidates(cands(8))
    assert out.docids[5:] == ["d5", "d6", "d7"] and out.docids[0] == "d4"
    one = Listwise(fake, window=3, step=2, depth=5, passes=1).rerank_candidates(cands(8)).info["parse"]["answers"]
    two = Listwise(fake, window=3, step=2, depth=5, passes=2).rerank_candidates(cands(8)).info["parse"]["answers"]
    assert two == 2 * one


def test_repairs_are_counted_never_silent():
    answers = iter(["1] > [1] > [9]", "nonsense", "2] > [1] > [3]"])
    lw = Listwise(FakeBackend(generate=lambda p: next(answers)), window=3, step=1)
    out = lw.rerank_candidates(cands(5))
    assert sorted(out.docids) == sorted(cands(5).docids)
    assert out.info["parse"] == {"answers": 3, "valid": 1, "repaired": 2,
                                 "problems": {"duplicate": 1, "out_of_range": 1, "missing": 1, "empty": 1}}


def test_windows_of_all_queries_at_one_step_share_a_backend_call():
    fake = FakeBackend(generate=by_number)
    lw = Listwise(fake, window=4, step=2)
    out = lw.rerank_many([cands(8, "a"), cands(8, "b"), cands(4, "c")])
    assert [n for n, _ in fake.batches] == [3, 2, 2]
    assert [c.qid for c in out] == ["a", "b", "c"]


def test_batch_size_splits_calls_and_token_cap_follows_the_window():
    fake = FakeBackend(generate=by_number)
    Listwise(fake, window=5, step=2, batch_size=2).rerank_many([cands(5, q) for q in "abc"])
    assert [n for n, _ in fake.batches] == [2, 1]
    longest = fake.count_tokens("1] > [2] > [3] > [4] > [5]")  # the answer budget: a full permutation, in tokens
    assert fake.batches[0][1]["max_new_tokens"] == longest and fake.batches[0][1]["temperature"] == 0.0
    fake.batches.clear()
    Listwise(fake, window=5, step=2, max_new_tokens=7).rerank_candidates(cands(5))
    assert fake.batches[0][1]["max_new_tokens"] == 7


def test_prompt_has_answer_prefix_and_no_example_ranking():
    lw = Listwise(FakeBackend(generate=by_number), window=3, step=1)
    messages = lw.messages(cands(3), [0, 1, 2])
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[-1]["content"] == "["
    assert "[1] passage 0" in messages[1]["content"] and "[3] passage 2" in messages[1]["content"]
    assert not re.search(r"\[\d+\] > \[\d+\]", messages[1]["content"])  # nothing for a small model to copy


def test_long_documents_are_cut_to_fit_the_context():
    long = Candidates("q", "numbers", ["a", "b"], ["1 " + "word " * 500, "2 " + "word " * 500], np.array([2.0, 1.0]))
    fake = FakeBackend(generate=by_number, max_context=300)
    lw = Listwise(fake, window=2, step=1, max_words=400)
    prompt = lw.messages(long, [0, 1])
    assert fake.count_tokens("\n".join(m["content"] for m in prompt)) <= 300
    tiny = Listwise(FakeBackend(generate=by_number, max_context=40), window=2, step=1)
    with pytest.raises(ConfigError, match="do not fit"):
        tiny.rerank_candidates(long)


def test_stage_use_plain_use_and_registry():
    lw = get("reranker", "listwise", backend=FakeBackend(generate=by_number), window=3, step=1)
    assert isinstance(lw, Listwise)
    ranking = Ranking.from_candidates([cands(4, "x"), cands(3, "y")])
    out = lw(ranking).to_pandas()
    assert out.groupby("qid")["docid"].first().to_dict() == {"x": "d3", "y": "d2"}
    assert lw(ranking.select([])).to_pandas().empty
    res = lw.rerank("numbers", ["passage 1", "passage 5", "passage 3"])
    assert res.docids == ["1", "2", "0"] and res.info["parse"]["valid"] == 1
    assert lw.rerank("numbers", []).results == []


def test_config_errors_say_what_to_do():
    fake = FakeBackend(generate=by_number)
    with pytest.raises(ConfigError, match="step"):
        Listwise(fake, window=4, step=4)
    with pytest.raises(ConfigError, match="paradigm"):
        Listwise(fake, prompt="setwise/pick")
    with pytest.raises(ConfigError, match="backend"):
        Listwise(backend=42)
    with pytest.raises(ConfigError, match="unknown prompt"):
        Listwise(fake, prompt="listwise/nope")


def test_repr_is_stable_and_names_the_settings():
    assert repr(Listwise("hf:smollm2", window=10, step=5)) == "Listwise(window=10, step=5)"
    assert Listwise("hf:smollm2") == Listwise("hf:smollm2")


def test_user_prompt_template_is_used():
    template = load_prompt("listwise/rankgpt").with_(name="mine", suffix="\nRANK THEM", answer_prefix="")
    fake = FakeBackend(generate=lambda p: "[2] > [1]" if p.endswith("RANK THEM") else "")
    assert Listwise(fake, prompt=template, window=2, step=1).rerank("q", ["a", "b"]).docids == ["1", "0"]


# -- FIRST ----------------------------------------------------------------------------------------
def test_first_ranks_by_the_logprob_of_each_id():
    seen = []

    def score(prompt, options):
        seen.append(list(options))
        items = dict(ITEM.findall(prompt))
        return [float(re.search(r"passage (\d+)", items[o.rstrip("]")]).group(1)) - 100 for o in options]

    out = First(FakeBackend(score=score), window=4, step=2).rerank_candidates(cands(6))
    assert out.docids[:2] == ["d5", "d4"]
    assert seen[0] == ["1]", "2]", "3]", "4]"]
    assert out.info["parse"] == {"answers": 2, "valid": 2, "repaired": 0, "problems": {}}


def test_first_reports_non_finite_logprobs():
    out = First(FakeBackend(score=lambda p, o: [float("nan")] * len(o)), window=3, step=1).rerank_candidates(cands(3))
    assert out.docids == ["d0", "d1", "d2"] and out.info["parse"]["problems"] == {"not_finite": 1}


# -- InsertRank -----------------------------------------------------------------------------------
def test_normalizations():
    s = [12.5, 10.0, 7.5]
    assert normalize_scores(s, "raw", (0, 1)).tolist() == s
    assert normalize_scores(s, "minmax", (0, 10)).tolist() == [10.0, 5.0, 0.0]
    assert normalize_scores([3.0, 3.0], "minmax", (0, 1)).tolist() == [1.0, 1.0]
    assert normalize_scores([5.0, 9.0, 1.0], "rank", (0, 100)).tolist() == [50.0, 100.0, 0.0]
    with pytest.raises(ConfigError, match="choose one of"):
        InsertRank(FakeBackend(generate=by_number), normalize="zscore")


@pytest.mark.parametrize("normalize, shown", [("raw", ["12.50", "10.00", "7.50"]), ("minmax", ["1.00", "0.50", "0.00"]),
                                              ("rank", ["1.00", "0.50", "0.00"])])
def test_insertrank_shows_scores_in_the_prompt(normalize, shown):
    c = Candidates("q", "numbers", ["a", "b", "c"], ["passage 1", "passage 2", "passage 3"], np.array([12.5, 10.0, 7.5]))
    fake = FakeBackend(generate=by_number)
    out = InsertRank(fake, normalize=normalize, score_range=(0, 1), window=3, step=1).rerank_candidates(c)
    assert re.findall(r"BM25 score: ([\d.]+)", fake.calls[0]) == shown
    assert out.docids == ["c", "b", "a"]


def test_insertrank_needs_a_score_placeholder():
    with pytest.raises(ConfigError, match="score"):
        InsertRank(FakeBackend(generate=by_number), prompt="listwise/rankgpt")


def test_a_reranker_that_shows_scores_needs_them_in_rerank():
    """Without scores=, InsertRank showed the position stand-ins n..1 as BM25 scores (review helper-61)."""
    fake = FakeBackend(generate=by_number)
    with pytest.raises(ConfigError, match="InsertRank shows the model each document's first-stage score; pass them as scores="):
        InsertRank(fake).rerank("numbers", ["passage 1", "passage 2"])
    assert len(InsertRank(fake).rerank("numbers", ["passage 1", "passage 2"], scores=[3.0, 1.0])) == 2
    assert len(Listwise(fake).rerank("numbers", ["passage 1", "passage 2"])) == 2  # shows no scores: none needed


# -- end to end on the real small model ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name, params", [
    ("listwise", {"window": 5, "step": 3}),
    ("first", {"window": 5, "step": 3}),
    ("insertrank", {"window": 5, "step": 3, "normalize": "minmax", "score_range": (0, 10)}),
])
def test_end_to_end_on_trec_dl(smollm2, dl19_top10, name, params, tmp_path):
    from rerank.cache import CachedBackend

    backend = CachedBackend(smollm2, tmp_path / "calls.sqlite")  # the second pass below is read from the cache
    reranker = get("reranker", name, backend=backend, max_words=40, **params)
    pipe_out = reranker(dl19_top10)
    frame = pipe_out.to_pandas()
    before = dl19_top10.to_pandas()
    assert set(frame["qid"]) == set(before["qid"])
    for qid, g in frame.groupby("qid"):
        assert sorted(g["docid"]) == sorted(before[before["qid"] == qid]["docid"])
        assert np.isfinite(g["score"]).all() and g["rank"].tolist() == list(range(1, len(g) + 1))
    for c in reranker.rerank_many(list(dl19_top10.per_query())):
        report = c.info["parse"]
        assert report["answers"] == 3 and report["valid"] + report["repaired"] == report["answers"]
    assert backend.hits > 0 and backend.misses == backend.hits
