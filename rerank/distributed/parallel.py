"""``parallel(stage)``: one stage over a large query set, its queries sharded across Ray workers.

The query set (or the candidates of each query) is cut into contiguous shards of whole queries;
each worker actor transforms its shards with its own copy of the stage, shipped once per worker,
and the outputs are joined in query order. A stage that names its LLM backend by spec string loads
that backend once per worker (the worker's process cache), never once per shard.

Per-query stages (BM25, a retriever's rescoring, any reranker of one query at a time) give exactly
the local output. Stages that batch *across* queries (pointwise rerankers, query encoders) see other
batches than in one process, so their scores may differ in the last float bits.

PyTerrier's peer is ``transformer.parallel(N, backend='ray')``.
"""

from __future__ import annotations

from typing import Any


from rerank.errors import ConfigError
from rerank.params import is_integer
from rerank.stage import Stage
from rerank.types import Ranking


class Parallel(Stage):
    """Run ``stage`` on shards of its input, spread over the workers of ``executor``.

    Args:
        stage: any stage (a retriever, a reranker, a whole pipeline).
        executor: a :class:`~rerank.distributed.ray.RayExecutor`, a cluster address, or None for a
            local cluster with ``workers`` workers (started on first use, stopped by :meth:`close`).
        shards: number of shards (default: one per worker); more shards balance uneven queries better.
        workers: workers of the executor this stage starts itself (ignored when one is given).
    """

    def __init__(self, stage: Stage, executor: Any = None, shards: int | None = None, workers: int | None = None):
        if not isinstance(stage, Stage):
            raise ConfigError(f"parallel() needs a Stage, got {type(stage).__name__}")
        if shards is not None and not (is_integer(shards) and shards >= 1):
            raise ConfigError(f"parallel() needs shards to be an integer >= 1, got {shards!r}")
        self.stage, self.shards, self.workers = stage, shards, workers
        self.requires = stage.requires
        self._executor = executor if executor is not None and not isinstance(executor, str) else None
        self._address = executor if isinstance(executor, str) else None
        self._owned = False

    def __repr__(self) -> str:
        extra = f", shards={self.shards}" if self.shards else ""
        return f"Parallel({self.stage!r}{extra})"

    @property
    def executor(self) -> Any:
        if self._executor is None:
            from rerank.distributed.ray import RayExecutor

            self._executor, self._owned = RayExecutor(self._address, workers=self.workers), True
        return self._executor

    def transform(self, inp: Ranking) -> Ranking:
        qids = list(inp.queries())
        n = min(len(qids), self.shards or self.executor.workers)
        parts = [inp.select(qids[i * len(qids) // n:(i + 1) * len(qids) // n]) for i in range(n)]
        outputs = list(self.executor.transform(self.stage, parts))
        found = [o for o in outputs if len(o)]
        if found:
            return Ranking.concat(found)
        return outputs[0] if outputs else Ranking.empty()  # a stage's empty answer has the stage's columns

    def close(self) -> None:
        """Stop the executor if this stage started it."""
        if self._owned and self._executor is not None:
            self._executor.close()
            self._executor, self._owned = None, False

    def __enter__(self) -> Parallel:
        return self

    def __exit__(self, *exc: object) -> None:
        """``with parallel(stage) as p:`` stops the executor it started, also when a run fails."""
        self.close()


def parallel(stage: Stage, executor: Any = None, *, shards: int | None = None, workers: int | None = None) -> Parallel:
    """``stage`` with its queries sharded across Ray workers (see :class:`Parallel`).

    >>> from rerank.retrievers.bm25 import BM25
    >>> parallel(BM25(k1=1.2), shards=4)
    Parallel(BM25(k1=1.2), shards=4)
    """
    return Parallel(stage, executor, shards, workers)
