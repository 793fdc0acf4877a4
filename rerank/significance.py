"""Paired significance tests over per-query scores, with a multiple-comparison correction.

Tests: ``"student"`` -- the two-sided paired t-test (default; ranx's) -- and ``"fisher"`` --
Fisher's randomization test: ``permutations`` seeded random swaps within pairs (scipy's
``permutation_test``; exact when there are fewer swap patterns), so its p-value is never 0 and is
the same on every run. (ranx's version draws in parallel threads whose seeds it does not set.) Corrections over the comparisons of one table: ``None``, ``"bonferroni"`` or
``"holm"``. Wins, losses and ties are counted on the same paired scores, one way everywhere:
a difference within ``TIE`` is a tie.

>>> import numpy as np
>>> a, b = np.array([0.1, 0.5, 0.9]), np.array([0.1, 0.5, 0.9])
>>> pvalue(a, b), wins_losses_ties(a, b)
(1.0, (0, 0, 3))
>>> correct([0.01, 0.04, 0.03], "holm")
[0.03, 0.06, 0.06]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from rerank.errors import ConfigError

TESTS = ("student", "fisher")
CORRECTIONS = (None, "bonferroni", "holm")
TIE = 1e-9


def check(test: str, correction: str | None) -> str | None:
    """Refuse an unknown test or correction name; returns the correction, None for ``"none"``."""
    if test not in TESTS:
        raise ConfigError(f"unknown significance test {test!r}; choose one of {', '.join(TESTS)}")
    correction = None if correction == "none" else correction
    if correction not in CORRECTIONS:
        raise ConfigError(f"unknown correction {correction!r}; choose bonferroni, holm or none")
    return correction


def pvalue(a: np.ndarray, b: np.ndarray, test: str = "student", permutations: int = 1000, seed: int = 42) -> float:
    """Two-sided p-value of the paired difference between ``a`` and ``b`` (1.0 when they never differ; NaN
    when a score is undefined, NaN, as the measure's mean then is). Where every difference is the same
    and not 0, Student's t is infinite (p = 0, even on two queries); the p-value is then the exact
    sign-flip test's, 2 / 2^n (0.5 on two queries)."""
    check(test, None)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b):
        raise ConfigError(f"paired scores differ in length: {len(a)} and {len(b)}")
    if np.isnan(a).any() or np.isnan(b).any():
        return float("nan")
    if len(a) < 2 or np.all(np.abs(a - b) <= TIE):
        return 1.0
    with warnings.catch_warnings():  # scipy's precision notice for near-constant differences
        warnings.simplefilter("ignore")
        if test == "student":
            from ranx.statistical_tests import paired_student_t_test

            if np.ptp(a - b) <= TIE:  # t is infinite: the exact sign-flip p, 2 of the 2^n signs as extreme
                return min(1.0, 2.0 / 2.0 ** len(a))

            p, _ = paired_student_t_test(a, b)
        else:
            from scipy.stats import permutation_test

            p = permutation_test((a, b), _mean_difference, permutation_type="samples", vectorized=True,
                                 n_resamples=permutations, random_state=np.random.default_rng(seed)).pvalue
    return 1.0 if np.isnan(p) else float(p)


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def correct(pvalues: Sequence[float], method: str | None) -> list[float]:
    """Adjusted p-values (capped at 1): Bonferroni multiplies by the count, Holm steps down. An undefined
    (NaN) p-value stays NaN and is not counted among the tests."""
    check("student", method)
    p = np.asarray(pvalues, dtype=np.float64)
    defined = np.flatnonzero(~np.isnan(p))
    if method is None or len(defined) == 0:
        return [float(x) for x in p]
    n, adjusted = len(defined), p.copy()
    if method == "bonferroni":
        adjusted[defined] = np.minimum(p[defined] * n, 1.0)
        return [float(x) for x in adjusted]
    running = 0.0
    for rank, i in enumerate(defined[np.argsort(p[defined], kind="stable")]):
        running = max(running, min(1.0, (n - rank) * p[i]))
        adjusted[i] = running
    return [float(x) for x in adjusted]  # unrounded: a tiny p-value (1e-14) is no 0


def wins_losses_ties(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int]:
    """Queries where ``a`` beats ``b``, loses to it, or ties (difference within :data:`TIE`)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return int((diff > TIE).sum()), int((diff < -TIE).sum()), int((np.abs(diff) <= TIE).sum())
