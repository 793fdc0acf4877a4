"""What a run cost in LLM calls: a backend wrapper that counts, and per-phase usage.

The experiment runner routes each LLM reranker of a pipeline it built through
``reranker.wrap_backend`` (the rerankers' public hook) into a :class:`MeteredBackend`, optionally
over the persistent call cache (:class:`rerank.cache.CachedBackend`). A :class:`Meter` sums what all
of a pipeline's metered backends saw; :meth:`Meter.usage` gives the totals so far, and the difference
of two readings is one phase (the warm-up query, then the timed queries). Cache hits are counted, so
a timed figure that was replayed from the cache says so.

Parsed answers (how many needed no repair) are read from a reranker's ``answer_log`` when it has one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rerank.backends.base import Backend, BackendWrapper, Generation, Prompt, checked_generations, checked_scores, prompt_text
from rerank.constraints import Constraint
from rerank.stage import leaves


@dataclass(frozen=True)
class Usage:
    """Counts of one phase of a run: model calls, tokens, call-cache hits and misses, parsed answers."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    answers: int = 0
    valid: int = 0
    forced: int = 0                 # answers whose reasoning ran out of its budget (rerankers' Think)

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class MeteredBackend(BackendWrapper):
    """Counts the calls and tokens that go through ``inner`` (calls answered by a cache included)."""

    def __init__(self, inner: Backend):
        super().__init__(inner)
        self.calls = self.prompt_tokens = self.completion_tokens = 0

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: Sequence[str] = (), constraint: Constraint | None = None) -> list[Generation]:
        out = checked_generations(self.inner, self.inner.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                                                                  stop=stop, constraint=constraint), len(prompts))
        self.calls += len(out)
        self.prompt_tokens += sum(g.prompt_tokens for g in out)
        self.completion_tokens += sum(g.completion_tokens for g in out)
        return out

    def score(self, prompts: Sequence[Prompt], options: Sequence[str]) -> np.ndarray:
        out = checked_scores(self.inner, self.inner.score(prompts, options), len(prompts), len(options))
        self.calls += len(prompts)
        self.prompt_tokens += sum(self.count_tokens(prompt_text(p)) for p in prompts)
        return out


class Meter:
    """The metered backends of one pipeline and the rerankers they serve."""

    def __init__(self) -> None:
        self.backends: list[MeteredBackend] = []
        self.rerankers: list[Any] = []
        self._originals: list[Backend] = []

    def attach(self, stage: Any, call_cache: bool = True) -> Meter:
        """Route every LLM reranker among ``stage``'s leaves through a metered (and cached) backend."""
        from rerank.cache import CachedBackend, CallStore, default_path

        store: CallStore | None = None
        for leaf in leaves(stage):
            wrap = getattr(leaf, "wrap_backend", None)
            if wrap is None:
                continue
            if call_cache and store is None:
                store = CallStore(default_path())  # opened (and checked) before any backend loads its model

            def metered(backend: Backend) -> Backend:
                self._originals.append(backend)
                if store is not None and not isinstance(backend, CachedBackend):
                    backend = CachedBackend(backend, store)
                return MeteredBackend(backend)

            self.backends.append(wrap(metered))
            self.rerankers.append(leaf)
        return self

    def detach(self) -> None:
        """Give each reranker back the backend it had before :meth:`attach`."""
        for reranker, original in zip(self.rerankers, self._originals):
            reranker.wrap_backend(lambda _: original)  # noqa: B023 -- called at once

    @property
    def active(self) -> bool:
        return bool(self.backends)

    def usage(self) -> Usage:
        """Totals since :meth:`attach`."""
        total = Usage()
        for b in self.backends:
            cache = b.inner
            total += Usage(b.calls, b.prompt_tokens, b.completion_tokens,
                           getattr(cache, "hits", 0), getattr(cache, "misses", 0))
        for r in self.rerankers:
            log = getattr(r, "answer_log", None)
            total += Usage(answers=getattr(log, "answers", 0), valid=getattr(log, "valid", 0), forced=getattr(log, "forced", 0))
        return total
