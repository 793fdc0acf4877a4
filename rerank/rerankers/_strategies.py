"""Strategies: how model calls are planned over one query's top ``depth`` candidates.

A strategy's *plan* is a generator for one query. Each step yields the prompts of that step (a
list of shown-position lists), receives one answer per prompt, and finally returns the new order
of the positions, or one score per position. :func:`lockstep` runs the plans of all queries
together, so step ``t`` of every query goes to the backend in one call while the steps of one
query stay sequential.

The two sorting strategies share one heapsort and one bubblesort, written over a *pick*: a
sub-plan that returns the index of the best of a few shown positions. Setwise picks in one call;
PRP picks by a tournament of pairwise preferences.

>>> plan = SinglePass().plan(3)
>>> next(plan)
[[0, 1, 2]]
>>> sliding_windows(10, window=4, step=2)
[(6, 10), (4, 8), (2, 6), (0, 4)]
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from rerank._progress import progress_bar
from rerank.errors import ConfigError
from rerank.params import check_fields
from rerank.rerankers._parsing import LABELS, ParseLog

Plan = Generator[list[list[int]], list[Any], Any]
Pick = Callable[[list[int]], Generator[list[list[int]], list[Any], int]]

TIE = 1e-9
"""Preferences this close to 0.5 are ties (a model that always answers "A" gives 0.5 +- rounding)."""


class Strategy:
    """Base of strategies; subclasses are frozen dataclasses of their settings, checked against
    their type hints and :data:`rerank.params.RANGES` when made."""

    takes: ClassVar[str]
    """The kind of answer the plan reads: a task's :attr:`~rerank.rerankers._tasks.Task.gives`."""

    def __post_init__(self) -> None:
        check_fields(self)

    def plan(self, n: int) -> Plan:
        """The plan over ``n`` candidates (see the module docstring)."""
        raise NotImplementedError

    def info(self, log: ParseLog) -> dict[str, Any]:
        """Extra ``info`` of a query's result."""
        return {}


@dataclass(frozen=True)
class Pointwise(Strategy):
    """Every candidate in its own prompt, all in one step; the answers are the scores. A score that
    is not finite (an unreadable answer) goes below every finite one; ties keep the input order."""

    takes: ClassVar[str] = "score"

    def plan(self, n: int) -> Plan:
        scores = np.asarray((yield [[i] for i in range(n)]) if n else [], dtype=np.float64)
        read = np.isfinite(scores)
        return np.where(read, scores, (scores[read].min() if read.any() else 0.0) - 1.0)


@dataclass(frozen=True)
class SinglePass(Strategy):
    """All candidates in one prompt; the answer is their order (one candidate needs no call)."""

    takes: ClassVar[str] = "order"

    def plan(self, n: int) -> Plan:
        return (yield [list(range(n))])[0] if n > 1 else list(range(n))


@dataclass(frozen=True)
class SlidingWindow(Strategy):
    """RankGPT: a window of ``window`` slides from the bottom to the top, ``step`` at a time,
    ``passes`` times; each window's answer is a permutation of it (one candidate needs no call)."""

    takes: ClassVar[str] = "order"

    window: int = 20
    step: int = 10
    passes: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.step >= self.window:
            hint = f"e.g. step={self.window // 2}" if self.window > 1 else "so window must be at least 2"
            raise ConfigError(f"step ({self.step}) must be smaller than window ({self.window}) so windows overlap ({hint})")

    def plan(self, n: int) -> Plan:
        order = list(range(n))
        for _ in range(self.passes if n > 1 else 0):
            for start, end in sliding_windows(n, self.window, self.step):
                shown = order[start:end]
                perm = (yield [shown])[0]
                order[start:end] = [shown[p] for p in perm]
        return order


@dataclass(frozen=True)
class SetSort(Strategy):
    """Setwise top-``k`` by :func:`heapsort` (``set_size - 1`` children a node) or :func:`bubblesort`
    (sets of ``set_size``); the answer is the index of the picked document."""

    takes: ClassVar[str] = "pick"

    method: Literal["heapsort", "bubblesort"] = "heapsort"
    set_size: int = 4
    k: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 2 <= self.set_size <= len(LABELS):
            raise ConfigError(f"set_size must be between 2 and {len(LABELS)}, got {self.set_size}")

    def plan(self, n: int) -> Plan:
        def pick(shown: list[int]) -> Generator[list[list[int]], list[Any], int]:
            return (yield [shown])[0]

        if self.method == "heapsort":
            return heapsort(n, self.k, self.set_size - 1, pick)
        return bubblesort(n, self.k, self.set_size, pick)


@dataclass(frozen=True)
class PairSort(Strategy):
    """Pairwise sorting (PRP): ``"allpair"``, ``"heapsort"`` (top ``top_k``) or ``"sliding"``
    (``top_k`` bubble passes). Every pair is asked in both orders and the two answers (P(first))
    are averaged into p(i over j), which cancels position bias; no pair is asked twice. Ties go
    to the document the first stage ranked higher."""

    takes: ClassVar[str] = "preference"

    variant: Literal["allpair", "heapsort", "sliding"] = "heapsort"
    top_k: int = 10

    def plan(self, n: int) -> Plan:
        known: dict[tuple[int, int], float] = {}

        def prefer(pairs: list[tuple[int, int]]) -> Generator[list[list[int]], list[Any], list[float]]:
            """p(i over j) for each pair, asking the new ones in both orders in one step."""
            new = list(dict.fromkeys(p for p in pairs if p not in known))
            firsts = (yield [list(order) for i, j in new for order in ((i, j), (j, i))]) if new else []
            for m, (i, j) in enumerate(new):
                known[i, j] = (firsts[2 * m] + 1.0 - firsts[2 * m + 1]) / 2.0
                known[j, i] = 1.0 - known[i, j]
            return [known[p] for p in pairs]

        def beats(a: int, b: int) -> Generator[list[list[int]], list[Any], bool]:
            p = (yield from prefer([(a, b)]))[0]
            return p > 0.5 + TIE or (abs(p - 0.5) <= TIE and a < b)

        def pick(shown: list[int]) -> Generator[list[list[int]], list[Any], int]:
            """The first shown position (the incumbent) against the best of the others."""
            best = 1
            for c in range(2, len(shown)):
                if (yield from beats(shown[c], shown[best])):
                    best = c
            return best if (yield from beats(shown[best], shown[0])) else 0

        if self.variant == "heapsort":
            return heapsort(n, self.top_k, 2, pick)
        if self.variant == "sliding":
            return bubblesort(n, self.top_k, 2, pick)
        return self._allpair(n, prefer)

    @staticmethod
    def _allpair(n: int, prefer: Callable[[list[tuple[int, int]]], Any]) -> Plan:
        """Every pair at once; sorted by summed preference (ties keep the input order)."""
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        wins = np.zeros(n)
        for (i, j), p in zip(pairs, (yield from prefer(pairs))):
            wins[i] += p
            wins[j] += 1.0 - p
        return np.argsort(-np.round(wins / TIE) * TIE, kind="stable").tolist()

    def info(self, log: ParseLog) -> dict[str, Any]:
        return {"comparisons": log.answers // 2}


@dataclass(frozen=True)
class Groups(Strategy):
    """GroupRank: groups of ``group_size`` scored in one step; the first-stage top ``anchors`` are
    shown in every group, and ``calibrate="anchor"`` shifts each group's scores so its anchors
    score the same everywhere (an anchor's own score is its mean); ``"none"`` keeps raw scores.
    A score the answer left out (NaN) is not read: a group whose anchors were not all scored is not
    shifted, and a document no group scored goes below every scored one (ties in input order)."""

    takes: ClassVar[str] = "scores"

    group_size: int = 5
    anchors: int = 1
    calibrate: Literal["anchor", "none"] = "anchor"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.anchors >= self.group_size:
            raise ConfigError(f"anchors must be smaller than group_size ({self.group_size}), got {self.anchors}")
        if self.calibrate == "anchor" and self.anchors == 0:
            raise ConfigError("calibrate='anchor' needs anchors >= 1; pass anchors=1 or calibrate='none'")

    def plan(self, n: int) -> Plan:
        a, size = min(self.anchors, n), self.group_size - self.anchors
        shown = [list(range(a)) + list(range(s, min(s + size, n))) for s in range(a, n, size)] or [list(range(a))]
        parts = [np.asarray(s, dtype=np.float64) for s in ((yield shown) if n else [])]
        if a and self.calibrate == "anchor":
            anchored = [np.isfinite(s[:a]).all() for s in parts]
            anchor_mean = np.mean([s[:a].mean() for s, ok in zip(parts, anchored) if ok] or [0.0])
            parts = [s + (anchor_mean - s[:a].mean()) if ok else s for s, ok in zip(parts, anchored)]
        sums, counts = np.zeros(n), np.zeros(n)
        for g, s in zip(shown, parts):
            read = np.isfinite(s)
            np.add.at(sums, np.asarray(g)[read], s[read])
            np.add.at(counts, np.asarray(g)[read], 1)
        scored = counts > 0
        floor = (sums[scored] / counts[scored]).min() - 1.0 if scored.any() else 0.0
        return np.where(scored, sums / np.maximum(counts, 1), floor)


# -- the shared sorts and windows ---------------------------------------------------------------
def heapsort(n: int, k: int, arity: int, pick: Pick) -> Plan:
    """Top-``k`` by an ``arity``-ary max-heap whose sift-down picks the best of a parent and its
    children; the rest keep their input order."""
    heap = list(range(n))

    def sift_down(i: int, size: int) -> Plan:
        """Swap node ``i`` down while one of its children is picked over it."""
        while len(group := [i, *range(arity * i + 1, min(arity * i + arity + 1, size))]) > 1:
            best = group[(yield from pick([heap[g] for g in group]))]
            if best == i:
                return
            heap[i], heap[best] = heap[best], heap[i]
            i = best

    for parent in reversed(range((n - 2) // arity + 1)):  # the last node's parent (none if n < 2) up to the root
        yield from sift_down(parent, n)
    top: list[int] = []
    for size in range(n, max(n - k, 0), -1):
        if top:  # the last node replaces the root just taken, and the heap shrinks to ``size``
            heap[0] = heap[size]
            yield from sift_down(0, size)
        top.append(heap[0])
    chosen = set(top)
    return top + [i for i in range(n) if i not in chosen]


def bubblesort(n: int, k: int, set_size: int, pick: Pick) -> Plan:
    """Top-``k`` by ``k`` bottom-up sweeps of a sliding set (consecutive sets share one position);
    each sweep moves the pick of every set to the set's top, so after sweep ``t`` position ``t`` is final."""
    order = list(range(n))
    for top in range(min(k, n - 1)):
        for start, end in sliding_windows(n - top, set_size, set_size - 1):
            best = yield from pick(order[top + start:top + end])
            order.insert(top + start, order.pop(top + start + best))
    return order


def sliding_windows(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """``(start, end)`` windows over the first ``n`` positions, from the back to the front: the
    last one ends at ``n``, each next one starts ``step`` earlier, until one starts at 0."""
    out, end = [], n
    while end > 0:
        out.append((max(0, end - window), end))
        if end <= window:
            break
        end -= step
    return out


def lockstep(plans: Sequence[Plan], answer: Callable[[list[tuple[int, Any]]], list[Any]],
             progress: bool | None = None, desc: str = "") -> list[Any]:
    """Run ``plans`` together: each round, ``answer`` gets every pending ``(plan index, request)``
    and returns one answer per request, in order. Returns each plan's result."""
    results: list[Any] = [None] * len(plans)
    pending: dict[int, Any] = {}

    def advance(i: int, value: Any) -> None:
        try:
            pending[i] = plans[i].send(value)
        except StopIteration as stop:
            pending.pop(i, None)
            results[i] = stop.value

    for i in range(len(plans)):
        advance(i, None)
    for _ in progress_bar(iter(lambda: bool(pending), False), desc, progress, unit="round"):
        requests = list(pending.items())
        answers = answer(requests)
        if len(answers) != len(requests):
            raise RuntimeError(f"answer() returned {len(answers)} answers for {len(requests)} requests")
        for (i, _), a in zip(requests, answers):
            advance(i, a)
    return results
