"""Strategies: how model calls are planned over one query's top ``depth`` candidates.

A strategy turns the plans of :mod:`rerank.rerankers._windows` into one protocol: each step
yields the prompts of that step (a list of shown-position lists), receives one answer value per
prompt, and the plan finally returns the new order of the positions or one score per position.
:func:`~rerank.rerankers._windows.lockstep` runs the plans of all queries together, so step ``t``
of every query goes to the backend in one call.

>>> plan = SinglePass().plan(3)
>>> next(plan)
[[0, 1, 2]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rerank.errors import ConfigError
from rerank.rerankers._parsing import LABELS, ParseLog
from rerank.rerankers._windows import (
    Plan,
    allpair_plan,
    groups,
    pair_heapsort_plan,
    pair_sliding_plan,
    set_bubblesort_plan,
    set_heapsort_plan,
    sliding_plan,
)


class Strategy:
    """Base of strategies; subclasses are frozen dataclasses of their settings."""

    def plan(self, n: int) -> Plan:
        """The plan over ``n`` candidates (see the module docstring)."""
        raise NotImplementedError

    def info(self, log: ParseLog) -> dict[str, Any]:
        """Extra ``info`` of a query's result."""
        return {}


@dataclass(frozen=True)
class Pointwise(Strategy):
    """Every candidate in its own prompt, all in one step; the answers are the scores."""

    def plan(self, n: int) -> Plan:
        scores = (yield [[i] for i in range(n)]) if n else []
        return np.asarray(scores, dtype=np.float64)


@dataclass(frozen=True)
class SinglePass(Strategy):
    """All candidates in one prompt; the answer is their order."""

    def plan(self, n: int) -> Plan:
        return (yield [list(range(n))])[0] if n else []


@dataclass(frozen=True)
class SlidingWindow(Strategy):
    """RankGPT: a window of ``window`` slides from the bottom to the top, ``step`` at a time, ``passes`` times."""

    window: int = 20
    step: int = 10
    passes: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.step < self.window:
            raise ConfigError(f"step ({self.step}) must be >= 1 and smaller than window ({self.window}) so windows overlap")
        if self.passes < 1:
            raise ConfigError(f"passes must be >= 1, got {self.passes}")

    def plan(self, n: int) -> Plan:
        return _one_per_step(sliding_plan(n, self.window, self.step, self.passes))


@dataclass(frozen=True)
class SetSort(Strategy):
    """Setwise top-``k``: ``"heapsort"`` (a ``set_size - 1``-ary heap) or ``"bubblesort"`` (``k``
    bottom-up sweeps of a sliding set); the answer is the index of the picked document."""

    method: str = "heapsort"
    set_size: int = 4
    k: int = 10
    METHODS: ClassVar[dict[str, Any]] = {"heapsort": set_heapsort_plan, "bubblesort": set_bubblesort_plan}

    def __post_init__(self) -> None:
        if self.method not in self.METHODS:
            raise ConfigError(f"unknown setwise method {self.method!r}; choose one of {tuple(self.METHODS)}")
        if not 2 <= self.set_size <= len(LABELS):
            raise ConfigError(f"set_size must be between 2 and {len(LABELS)}, got {self.set_size}")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")

    def plan(self, n: int) -> Plan:
        return _one_per_step(self.METHODS[self.method](n, self.k, self.set_size))


@dataclass(frozen=True)
class PairSort(Strategy):
    """Pairwise sorting (PRP): ``"allpair"``, ``"heapsort"`` (top ``top_k``) or ``"sliding"``
    (``top_k`` bubble passes). Every pair is asked in both orders and the two answers (P(first))
    are averaged into p(i over j), which cancels position bias; no pair is asked twice."""

    variant: str = "heapsort"
    top_k: int = 10
    VARIANTS: ClassVar[tuple[str, ...]] = ("allpair", "heapsort", "sliding")

    def __post_init__(self) -> None:
        if self.variant not in self.VARIANTS:
            raise ConfigError(f"variant={self.variant!r}; choose one of {self.VARIANTS}")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be positive, got {self.top_k}")

    def plan(self, n: int) -> Plan:
        if self.variant == "allpair":
            return _both_orders(allpair_plan(n))
        if self.variant == "heapsort":
            return _both_orders(pair_heapsort_plan(n, self.top_k))
        return _both_orders(pair_sliding_plan(n, self.top_k))

    def info(self, log: ParseLog) -> dict[str, Any]:
        return {"comparisons": log.answers // 2}


@dataclass(frozen=True)
class Groups(Strategy):
    """GroupRank: groups of ``group_size`` scored in one step; the first-stage top ``anchors`` are
    shown in every group, and ``calibrate="anchor"`` shifts each group's scores so its anchors
    score the same everywhere (an anchor's own score is its mean); ``"none"`` keeps raw scores."""

    group_size: int = 5
    anchors: int = 1
    calibrate: str = "anchor"
    CALIBRATIONS: ClassVar[tuple[str, ...]] = ("anchor", "none")

    def __post_init__(self) -> None:
        if self.calibrate not in self.CALIBRATIONS:
            raise ConfigError(f"unknown calibration {self.calibrate!r}; choose one of {self.CALIBRATIONS}")
        if not 0 <= self.anchors < self.group_size:
            raise ConfigError(f"anchors must be >= 0 and smaller than group_size ({self.group_size}), got {self.anchors}")
        if self.calibrate == "anchor" and self.anchors == 0:
            raise ConfigError("calibrate='anchor' needs anchors >= 1; pass anchors=1 or calibrate='none'")

    def plan(self, n: int) -> Plan:
        a = min(self.anchors, n)
        shown = [list(range(a)) + [a + p for p in g] for g in groups(n - a, self.group_size - a)] or [list(range(a))]
        shown = [g for g in shown if g]
        parts = [np.asarray(s, dtype=np.float64) for s in ((yield shown) if shown else [])]
        calibrated = a and self.calibrate == "anchor"
        anchor_mean = np.mean([s[:a].mean() for s in parts]) if calibrated else 0.0
        sums, counts = np.zeros(n), np.zeros(n)
        for g, s in zip(shown, parts):
            np.add.at(sums, g, s + (anchor_mean - s[:a].mean() if calibrated else 0.0))
            np.add.at(counts, g, 1)
        return sums / np.maximum(counts, 1)


def _one_per_step(plan: Plan) -> Plan:
    """A plan that asks one prompt per step, in the list-of-prompts protocol."""
    try:
        request = next(plan)
        while True:
            request = plan.send((yield [request])[0])
    except StopIteration as stop:
        return stop.value


def _both_orders(plan: Plan) -> Plan:
    """A pairwise plan whose pairs are asked in both orders (new pairs only), answered with p(i over j)."""
    known: dict[tuple[int, int], float] = {}
    try:
        pairs = next(plan)
        while True:
            new = list(dict.fromkeys(p for p in pairs if p not in known))
            firsts = (yield [list(order) for i, j in new for order in ((i, j), (j, i))]) if new else []
            for k, (i, j) in enumerate(new):
                known[(i, j)] = (firsts[2 * k] + 1.0 - firsts[2 * k + 1]) / 2.0
                known[(j, i)] = 1.0 - known[(i, j)]
            pairs = plan.send([known[p] for p in pairs])
    except StopIteration as stop:
        return stop.value

