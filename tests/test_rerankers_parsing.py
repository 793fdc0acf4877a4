"""Answer parsers and window plans: parse, repair, and report (no model needed)."""

import math

import numpy as np
import pytest

from rerank.errors import ConfigError
from rerank.rerankers._parsing import Parsed, ParseLog, parse
from rerank.rerankers._strategies import Groups, SetSort, SlidingWindow, lockstep, sliding_windows
from rerank.text import truncate_words

NAN = math.nan


# -- permutation ----------------------------------------------------------------------------------
def test_permutation_clean_answer_is_valid():
    p = parse("permutation", "[3] > [1] > [2]", 3)
    assert p.value == [2, 0, 1] and p.valid and p.problems == ()


@pytest.mark.parametrize("text, n, value, problems", [
    ("[2] > [2] > [1]", 3, [1, 0, 2], ("duplicate", "missing")),
    ("[7] > [1] > [2]", 3, [0, 1, 2], ("out_of_range", "missing")),
    ("[0] > [2] > [1]", 2, [1, 0], ("out_of_range",)),
    ("I cannot rank these.", 3, [0, 1, 2], ("empty",)),
    ("", 2, [0, 1], ("empty",)),
    ("2, 1", 3, [1, 0, 2], ("missing",)),                 # bare numbers when no brackets
    ("［２］ > ［１］", 2, [1, 0], ()),                    # full-width look-alikes
    ("[ 2 ]>[1]", 2, [1, 0], ()),
])
def test_permutation_repairs_and_reports(text, n, value, problems):
    p = parse("permutation", text, n)
    assert p.value == value and p.problems == problems
    assert sorted(p.value) == list(range(n))


def test_permutation_prefers_bracketed_ids_over_other_numbers():
    p = parse("permutation", "[2] > [1] (passage 2 mentions 1999)", 2)
    assert p.value == [1, 0] and p.valid


# -- choice ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, n, value, problems", [
    ("B", 3, 1, ()),
    ("[C]", 3, 2, ()),
    ("Passage B is the most relevant", 3, 1, ()),
    ("[2]", 3, 1, ()),
    ("B or C", 3, 1, ("ambiguous",)),
    ("Z", 3, 0, ("empty",)),
    ("none of them", 3, 0, ("empty",)),
])
def test_choice(text, n, value, problems):
    p = parse("choice", text, n)
    assert (p.value, p.problems) == (value, problems)


# -- scores ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value, problems", [
    ("[1]: 7\n[2]: 3\n[3]: 9.5", [7.0, 3.0, 9.5], ()),
    ('{"1": 2, "2": 8, "3": 5}', [2.0, 8.0, 5.0], ()),
    ('```json\n{"[1]": 2, "[2]": 8, "[3]": 5}\n```', [2.0, 8.0, 5.0], ()),
    ("[4, 6, 1]", [4.0, 6.0, 1.0], ()),
    ("[1]: 7\n[3]: 3", [7.0, NAN, 3.0], ("missing",)),  # left for the plan to repair (review helper-61)
    ("[1]: 7\n[9]: 3", [7.0, NAN, NAN], ("out_of_range", "missing")),
    ("no idea", [NAN, NAN, NAN], ("empty",)),
    ('{"1": 7, "2": 1' + "0" * 400 + ', "3": -1' + "0" * 400 + '}', [7.0, NAN, NAN], ("not_finite", "missing")),  # beyond a float
    ("[NaN, 4, 1]", [NAN, 4.0, 1.0], ("not_finite", "missing")),
])
def test_scores(text, value, problems):
    p = parse("scores", text, 3)
    np.testing.assert_equal(p.value, value)
    assert p.problems == problems


# -- think / answer -------------------------------------------------------------------------------
def test_yes_no_and_rating():
    assert parse("yes_no", "Yes, it is.", 1).value == 1.0 and parse("yes_no", "hmm", 1).problems == ("empty",)
    assert parse("rating", "<answer>７", 1).value == 7.0 and parse("rating", "?", 1).problems == ("empty",)


def test_unknown_parser_lists_the_known_ones():
    with pytest.raises(ConfigError, match="registered parsers: ") as e:
        parse("perm", "[1]", 1)
    assert all(name in str(e.value) for name in ("choice", "permutation", "rating", "scores", "yes_no"))  # and any a test added


def test_parse_log_counts_problems_and_forced_reasoning():
    log = ParseLog()
    log.add(parse("permutation", "[1] > [2]", 2))
    log.add(parse("permutation", "[1] > [1]", 2))
    log.add(Parsed([1, 0], reasoning="x"))
    assert log.as_dict() == {"answers": 3, "valid": 2, "repaired": 1, "problems": {"duplicate": 1, "missing": 1}}
    assert log.reasoning == ["x"]
    log.add(Parsed([0], reasoning="out of budget", forced=True))
    assert log.as_dict()["forced"] == 1 and log.answers == 4
    bounded = ParseLog(keep_reasoning=False)
    bounded.add(Parsed(0, reasoning="long text"))
    assert bounded.reasoning == [] and bounded.answers == 1


# -- window plans ---------------------------------------------------------------------------------
def test_sliding_windows_back_to_front():
    assert sliding_windows(100, 20, 10)[0] == (80, 100)
    assert sliding_windows(100, 20, 10)[-1] == (0, 20)
    assert len(sliding_windows(100, 20, 10)) == 9
    assert sliding_windows(5, 20, 10) == [(0, 5)]
    assert sliding_windows(0, 20, 10) == []
    with pytest.raises(ConfigError):
        SlidingWindow(window=1, step=1)


def test_groups_and_truncation():
    assert next(Groups(group_size=3, anchors=1).plan(5)) == [[0, 1, 2], [0, 3, 4]]
    assert next(Groups(group_size=2, anchors=0, calibrate="none").plan(5)) == [[0, 1], [2, 3], [4]]
    assert truncate_words("a b  c d", 2) == "a b" and truncate_words("a b", 5) == "a b"


def _run(plan, judge):
    """Drive a single plan with ``judge(request) -> answer``."""
    return lockstep([plan], lambda reqs: [[judge(shown) for shown in r] for _, r in reqs])[0]


def test_sliding_plan_bubbles_the_best_to_the_top():
    # the "model" sorts each window by doc index descending: doc 9 must end first
    sort_desc = lambda shown: sorted(range(len(shown)), key=lambda j: -shown[j])
    order = _run(SlidingWindow(window=4, step=2).plan(10), sort_desc)
    assert order[0] == 9 and sorted(order) == list(range(10))
    two_passes = _run(SlidingWindow(window=4, step=2, passes=2).plan(10), sort_desc)
    assert two_passes[:2] == [9, 8]


@pytest.mark.parametrize("method", ["heapsort", "bubblesort"])
@pytest.mark.parametrize("n, k, size", [(10, 3, 3), (7, 7, 2), (1, 1, 3), (12, 5, 4), (2, 10, 3)])
def test_setwise_plans_find_the_exact_top_k(method, n, k, size):
    value = [(i * 7) % n for i in range(n)]  # a fixed shuffle of relevances
    pick_max = lambda shown: max(range(len(shown)), key=lambda j: value[shown[j]])
    order = _run(SetSort(method=method, set_size=size, k=k).plan(n), pick_max)
    assert sorted(order) == list(range(n))
    assert [value[i] for i in order[:k]] == sorted(value, reverse=True)[:k]


def test_lockstep_batches_the_same_step_of_every_plan():
    rounds = []

    def answer(reqs):
        rounds.append(len(reqs))
        return [[list(range(len(shown))) for shown in r] for _, r in reqs]

    window = SlidingWindow(window=4, step=2)
    lockstep([window.plan(10), window.plan(4), window.plan(0)], answer)
    assert rounds == [2, 1, 1, 1]
