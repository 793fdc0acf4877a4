"""Fusion refuses settings and scores that ranx would turn into a wrong ranking, a raw error or an overflow."""

from __future__ import annotations

import re

import pytest

from rerank import ConfigError, DataError, Ranking
from rerank.retrievers.bm25 import BM25
from rerank.stage import MAX_RRF_K, Fuse, fuse

LOGPROBS = Ranking.from_run({"q": {"d1": -0.1, "d2": -5.0}})
BM25_SCORES = Ranking.from_run({"q": {"d1": 1.0, "d2": 10.0}})
SMALL = Ranking.from_run({"q": {"d1": 1.0, "d2": 2.0, "d3": 3.0}})


@pytest.mark.parametrize("method", ["wsum", "combsum", "combmnz", "max", "min"])
def test_max_norm_refuses_a_query_whose_best_score_is_not_positive(method):
    weights = [0.01, 0.99] if method == "wsum" else None
    with pytest.raises(DataError, match=r"ranking at position 0, query 'q': norm='max' divides by the best score, which is -0\.1"):
        fuse([LOGPROBS, BM25_SCORES], method=method, norm="max", weights=weights)
    with pytest.raises(DataError, match="ranking at position 1, query 'q'.* -0.1"):
        fuse([BM25_SCORES, LOGPROBS], method=method, norm="max", weights=weights)


def test_max_norm_accepts_positive_best_scores_and_other_norms_accept_log_probabilities():
    positive = Ranking.from_run({"q": {"d1": 0.5, "d2": 0.25}})
    assert fuse([positive, BM25_SCORES], method="wsum", norm="max", weights=[1, 0]).to_dict() == {"q": {"d1": 1.0, "d2": 0.5}}
    for norm in ("min-max", "sum", "zmuv", "rank"):  # shift-invariant: the sign of the scores does not matter
        assert fuse([LOGPROBS, BM25_SCORES], method="wsum", norm=norm, weights=[0.99, 0.01]).top(1).to_dict()["q"].keys() == {"d1"}


def test_max_norm_accepts_a_query_whose_scores_are_all_zero():
    zeros = Ranking.from_run({"q": {"d1": 0.0, "d2": 0.0}, "r": {"d1": 3.0, "d2": 1.0}})
    fused = fuse([BM25_SCORES, zeros], method="wsum", norm="max").to_dict()
    assert fused["q"] == {"d1": 0.05, "d2": 0.5} and fused["r"] == {"d1": 0.5, "d2": 0.5 / 3}


def test_a_query_one_ranking_lacks_is_no_best_score_of_zero_for_max_norm():
    other_query = Ranking.from_run({"q": {"d1": 2.0}, "r": {"d1": 4.0, "d2": 1.0}})
    fused = fuse([BM25_SCORES, other_query], method="wsum", norm="max").to_dict()
    assert fused["r"] == {"d1": 0.5, "d2": 0.125}


@pytest.mark.parametrize("call, message", [
    (lambda: fuse([SMALL, SMALL], method="wsum", weights=0.5), "fusion weights must be a list of numbers, one per ranking, got float: 0.5"),
    (lambda: fuse([SMALL, SMALL], method="wsum", weights="0.5"), "fusion weights must be a list of numbers, one per ranking, got str"),
    (lambda: fuse(None), "fuse's rankings must be a list of Rankings, got NoneType: None"),
    (lambda: fuse(5), "fuse's rankings must be a list of Rankings, got int: 5"),
    (lambda: Fuse(None), "Fuse's stages must be a list of Stages, got NoneType: None"),
    (lambda: Fuse(BM25()), "Fuse's stages must be a list of Stages, got BM25"),
    (lambda: Fuse([BM25(), BM25()], method="wsum", weights=1), "fusion weights must be a list of numbers, one per ranking, got int: 1"),
])
def test_arguments_that_are_not_lists_are_named(call, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        call()


@pytest.mark.parametrize("k", [10**30, 2**63, 2**62, MAX_RRF_K + 1])
def test_rrf_k_is_bounded(k):
    with pytest.raises(ConfigError, match=f"fusion k must be an integer >= 1 and <= {MAX_RRF_K}, got {k}"):
        fuse([SMALL, SMALL], k=k)
    with pytest.raises(ConfigError, match=f"<= {MAX_RRF_K}"):
        Fuse([BM25(), BM25()], k=k)


def test_rrf_at_the_largest_k_still_tells_ranks_apart():
    fused = fuse([SMALL, SMALL], k=MAX_RRF_K).to_dict()["q"]
    assert fused["d3"] > fused["d2"] > fused["d1"] > 0


EXTREME = Ranking.from_run({"q": {"d1": 1e308, "d2": -1e308}})
HUGE_SUM = Ranking.from_run({"q": {"d1": 1e308, "d2": 1e308, "d3": 0.0}})


@pytest.mark.parametrize("ranking, norm, expected", [
    (EXTREME, "min-max", {"d1": 1.0, "d2": 0.0}), (EXTREME, "sum", {"d1": 1.0, "d2": 0.0}),
    (EXTREME, "zmuv", {"d1": 1.0, "d2": -1.0}), (HUGE_SUM, "sum", {"d1": 0.5, "d2": 0.5, "d3": 0.0}),
    (HUGE_SUM, "zmuv", {"d1": 2**-0.5, "d2": 2**-0.5, "d3": -2**0.5}),  # ranx gave nan, or zeroed the ranking
])
def test_scores_at_the_ends_of_the_float_range_are_normalized_exactly(ranking, norm, expected):
    fused = fuse([ranking, SMALL], method="wsum", norm=norm, weights=[1, 0]).to_dict()["q"]
    assert fused == pytest.approx({**expected, "d3": expected.get("d3", 0.0)}, abs=1e-12)


@pytest.mark.parametrize("norm", ["min-max", "sum", "zmuv", "max"])
@pytest.mark.parametrize("scale", [1e-10, 1e-300, 1e300])
def test_a_norm_is_blind_to_the_scale_of_the_scores(norm, scale):
    """ranx divides by max(scale, 1e-9): a ranking of a small span counted for less in the fusion."""
    scores = {"d1": 3.0, "d2": 2.5, "d3": 1.0}
    other = Ranking.from_run({"q": {"d3": 2.0, "d2": 1.5, "d1": 1.0}})
    scaled = Ranking.from_run({"q": {d: x * scale for d, x in scores.items()}})
    want = fuse([Ranking.from_run({"q": scores}), other], method="wsum", norm=norm).to_dict()["q"]
    assert fuse([scaled, other], method="wsum", norm=norm).to_dict()["q"] == pytest.approx(want, rel=1e-12)


def test_rrf_and_rank_norm_read_each_rankings_own_ranks_ties_in_its_order():
    """ranx re-sorted each ranking with an unstable sort, so tied documents got other ranks than theirs."""
    tied = Ranking.from_run({"q": {f"d{i:02d}": 1.0 for i in range(40)}})  # ranks 1..40 in this order
    strict = Ranking.from_run({"q": {f"d{i:02d}": 40.0 - i for i in range(40)}})
    fused = fuse([tied, strict], k=60).to_dict()["q"]
    assert fused == pytest.approx({f"d{i:02d}": 2 / (60 + i + 1) for i in range(40)})
    assert list(fused) == [f"d{i:02d}" for i in range(40)]
    by_rank = fuse([tied, tied], method="wsum", norm="rank").to_dict()["q"]
    assert by_rank == pytest.approx({f"d{i:02d}": 1 - i / 40 for i in range(40)})


def test_a_fused_score_that_overflows_names_the_norm_not_the_output():
    tiny_best = Ranking.from_run({"q": {"d1": 1e-8, "d2": -1e308}})  # max norm: -1e308 / 1e-8 overflows
    with pytest.raises(DataError, match="query 'q': the inputs' scores overflowed under norm='max' \\(method='wsum'\\)"):
        fuse([tiny_best, SMALL], method="wsum", norm="max")
    with pytest.raises(DataError, match="overflowed under norm='min-max'.*rescale the scores or weights"):
        fuse([SMALL, SMALL], method="wsum", weights=[1e308, 1e308])
