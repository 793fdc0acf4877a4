"""Plans (window, set, pair), and the driver that runs many queries' plans in lockstep.

A *plan* is a generator for one query: it yields a request (the positions of the documents to
show the model, or pairs of positions), receives the answer, and finally returns the new order. :func:`lockstep`
advances all queries' plans together, so step ``t`` of every query goes to the backend in one
batch although the steps of one query stay sequential.

>>> sliding_windows(10, window=4, step=2)
[(6, 10), (4, 8), (2, 6), (0, 4)]
>>> groups(7, size=3)
[[0, 1, 2], [3, 4, 5], [6]]
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from rerank._progress import progress_bar
from rerank.errors import ConfigError

Request = TypeVar("Request")
Answer = TypeVar("Answer")
Plan = Generator[Any, Any, list[int]]


def sliding_windows(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """``(start, end)`` windows over the first ``n`` positions, from the back to the front.

    The last window ends at ``n`` and each next one starts ``step`` earlier, until one starts at 0
    (RankGPT: window 20, step 10 over the top 100).
    """
    if window < 2 or step < 1:
        raise ConfigError(f"a sliding window needs window >= 2 and step >= 1, got window={window}, step={step}")
    if n <= 0:
        return []
    out, end = [], n
    while True:
        start = max(0, end - window)
        out.append((start, end))
        if start == 0:
            return out
        end -= step


def groups(n: int, size: int) -> list[list[int]]:
    """Consecutive groups of ``size`` positions over ``range(n)`` (the last one may be smaller)."""
    if size < 1:
        raise ConfigError(f"group size must be >= 1, got {size}")
    return [list(range(s, min(s + size, n))) for s in range(0, n, size)]


def sliding_plan(n: int, window: int, step: int, passes: int = 1) -> Plan:
    """The listwise plan: each window's positions go out; a permutation of them comes back."""
    order = list(range(n))
    for _ in range(passes):
        for start, end in sliding_windows(n, window, step):
            shown = order[start:end]
            perm = yield shown
            order[start:end] = [shown[p] for p in perm]
    return order


def set_heapsort_plan(n: int, k: int, set_size: int) -> Plan:
    """Top-``k`` by a ``(set_size - 1)``-ary max-heap; yields candidate sets, receives the pick's index."""
    d, heap = set_size - 1, list(range(n))

    def sift_down(i: int, size: int) -> Plan:
        while True:
            group = [i] + [c for c in range(d * i + 1, d * i + d + 1) if c < size]
            if len(group) == 1:
                return
            best = group[(yield [heap[g] for g in group])]
            if best == i:
                return
            heap[i], heap[best] = heap[best], heap[i]
            i = best

    for parent in reversed(range((n - 2) // d + 1 if n > 1 else 0)):
        yield from sift_down(parent, n)
    top: list[int] = []
    for size in range(n, max(n - k, 0), -1):
        top.append(heap[0])
        if len(top) == k or size == 1:
            break
        heap[0] = heap[size - 1]
        yield from sift_down(0, size - 1)
    chosen = set(top)
    return top + [i for i in range(n) if i not in chosen]


def set_bubblesort_plan(n: int, k: int, set_size: int) -> Plan:
    """Top-``k`` by ``k`` bottom-up sweeps of a sliding set; yields sets, receives the pick's index."""
    order = list(range(n))
    for top in range(min(k, n - 1)):
        end = n
        while True:
            start = max(top, end - set_size)
            shown = order[start:end]
            pick = yield shown
            order.insert(start, order.pop(start + pick))
            if start == top:
                break
            end = start + 1
    return order


# -- pairwise plans: yield a list of (i, j) pairs, receive p(i over j) for each, return the new order --
TIE = 1e-9
"""Preferences this close to 0.5 are ties (a model that always answers "A" gives 0.5 +- rounding)."""


def allpair_plan(n: int) -> Plan:
    """Ask every pair once; sort by summed preference (ties keep the input order)."""
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    prefs = (yield pairs) if pairs else []
    wins = np.zeros(n)
    for (i, j), p in zip(pairs, prefs):
        wins[i] += p
        wins[j] += 1.0 - p
    return np.argsort(-np.round(wins / TIE) * TIE, kind="stable").tolist()


def pair_heapsort_plan(n: int, k: int) -> Plan:
    """Build a max-heap by pairwise preference and pop the best ``k``; the rest keep input order.

    Ties go to the document that came first, so a model without preferences keeps the input order.
    """
    heap = list(range(n))

    def beats(a: int, b: int):
        p = (yield [(a, b)])[0]
        return p > 0.5 + TIE or (abs(p - 0.5) <= TIE and a < b)

    def sift_down(root: int, end: int):
        while (child := 2 * root + 1) < end:
            if child + 1 < end and (yield from beats(heap[child + 1], heap[child])):
                child += 1
            if not (yield from beats(heap[child], heap[root])):
                return
            heap[root], heap[child] = heap[child], heap[root]
            root = child

    for start in range(n // 2 - 1, -1, -1):
        yield from sift_down(start, n)
    top: list[int] = []
    for end in range(n - 1, max(n - 1 - k, -1), -1):
        top.append(heap[0])
        heap[0] = heap[end]
        if len(top) < k:
            yield from sift_down(0, end)
    chosen = set(top)
    return top + [i for i in range(n) if i not in chosen]


def pair_sliding_plan(n: int, k: int) -> Plan:
    """``k`` bubble-sort passes from the bottom up; after pass ``p`` position ``p`` is final."""
    order = list(range(n))
    for p in range(min(k, n - 1)):
        for pos in range(n - 2, p - 1, -1):
            lower, upper = order[pos + 1], order[pos]
            if (yield [(lower, upper)])[0] > 0.5 + TIE:
                order[pos], order[pos + 1] = lower, upper
    return order


def lockstep(plans: Sequence[Plan], answer: Callable[[list[tuple[int, Any]]], list[Any]],
             progress: bool | None = None, desc: str = "") -> list[list[int]]:
    """Run ``plans`` together: each round, ``answer`` gets every pending ``(plan index, request)``.

    ``answer`` must return one answer per request, in order. Returns each plan's final order.
    """
    results: list[list[int] | None] = [None] * len(plans)
    pending: dict[int, Any] = {}
    for i, plan in enumerate(plans):
        _advance(i, plan, None, pending, results, first=True)
    for _ in progress_bar(_rounds(pending), desc, progress, unit="round"):
        requests = list(pending.items())
        answers = answer(requests)
        if len(answers) != len(requests):
            raise RuntimeError(f"answer() returned {len(answers)} answers for {len(requests)} requests")
        for (i, _), a in zip(requests, answers):
            _advance(i, plans[i], a, pending, results)
    return [r if r is not None else [] for r in results]


def _advance(i: int, plan: Plan, answer: Any, pending: dict[int, Any], results: list, first: bool = False) -> None:
    try:
        pending[i] = next(plan) if first else plan.send(answer)
    except StopIteration as stop:
        pending.pop(i, None)
        results[i] = stop.value


def _rounds(pending: dict[int, Any]) -> Iterator[int]:
    r = 0
    while pending:
        yield r
        r += 1


def truncate_words(text: str, max_words: int) -> str:
    """The first ``max_words`` whitespace-separated words of ``text``."""
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words])
