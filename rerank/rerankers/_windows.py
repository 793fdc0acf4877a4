"""Window plans, and the driver that runs many queries' plans in lockstep.

A *plan* is a generator for one query: it yields a request (the positions of the documents to
show the model), receives the parsed answer, and finally returns the new order. :func:`lockstep`
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
