"""``RayExecutor``: run experiment cells and stage shards on a pool of Ray worker actors.

Each worker is a long-lived actor (one process). Backends given as spec strings and encoders are
cached per process (:func:`rerank.backends.load_backend`), so a model loads once per worker, however
many cells or shards it runs; a stage shipped to the workers is deserialized once per worker.

Faults: a worker that dies is restarted and its unfinished tasks are retried (``max_retries`` times),
so every item is answered exactly once, in item order; when the retries run out, ``map`` raises a
:class:`~rerank.errors.RerankError` of one line.

>>> RayExecutor.__name__
'RayExecutor'
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from rerank.distributed.cluster import connect, fitting, import_ray, ray_reason, shutdown
from rerank.errors import ConfigError, RerankError, one_line
from rerank.params import check_count, is_finite_number

logger = logging.getLogger("rerank")
T = TypeVar("T")
R = TypeVar("R")


class Worker:
    """The actor behind every task: runs functions and keeps shipped stages (one copy per process)."""

    def __init__(self, threads: int | None = None) -> None:
        self._stages: dict[str, Any] = {}
        if threads:  # as many intra-op threads as the driver, so torch sums in the same order
            os.environ["OMP_NUM_THREADS"] = str(threads)
            with contextlib.suppress(ImportError):
                import torch

                torch.set_num_threads(threads)

    def call(self, fn: Callable[[Any], Any], item: Any) -> Any:
        return fn(item)

    def transform(self, key: str, holder: list[Any], ranking: Any) -> Any:
        """``stage(ranking)`` with the stage behind ``holder[0]`` (an object reference, fetched once)."""
        stage = self._stages.get(key)
        if stage is None:
            ray = import_ray()
            stage = self._stages[key] = ray.get(holder[0])
        return stage(ranking)

    def info(self) -> dict[str, Any]:
        """This process: pid, node, and how many times each model was loaded in it."""
        from rerank.backends import LOADS
        from rerank.encoders import _load_decoder, _load_sentence_transformer  # per-process model caches

        ray = import_ray()
        encoders = _load_sentence_transformer.cache_info().misses + _load_decoder.cache_info().misses
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "backend_loads": dict(LOADS), "encoder_loads": encoders}


class RayExecutor:
    """Runs ``fn`` over items on ``workers`` actors of a Ray cluster and yields results in item order.

    Args:
        address: a running cluster (``"HOST:PORT"``, ``"auto"``, ``"ray://HOST:10001"``); None starts
            (or reuses) a local cluster on 127.0.0.1.
        workers: number of worker actors; default: as many as the cluster's free CPUs (or GPUs, when
            ``num_gpus`` is set) allow. On a local cluster, workers that cannot all start are a
            ConfigError; on another, work goes to those that start (:func:`~rerank.distributed.cluster.fitting`).
        num_cpus, num_gpus: resources each worker reserves. ``num_gpus`` may be a fraction (0.5 puts two
            workers on one GPU); a vLLM backend with ``tensor_parallel_size=N`` needs ``num_gpus=N``.
        resources: custom Ray resources per worker (``{"big_memory": 1}``).
        max_retries: restarts of a dead worker, and retries of each of its tasks.
        threads: torch threads per worker; default: Ray's (one per reserved CPU). A float32 model gives
            bit-identical scores to a process with as many threads (``torch.get_num_threads()``); with
            fewer, sums run in another order and may differ in the last bit.
    """

    def __init__(self, address: str | None = None, *, workers: int | None = None, num_cpus: float = 1,
                 num_gpus: float = 0, resources: dict[str, float] | None = None, max_retries: int = 3,
                 threads: int | None = None):
        _check_settings(workers=workers, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                        max_retries=max_retries, threads=threads)
        self.address, self.num_cpus, self.num_gpus, self.max_retries = address, num_cpus, num_gpus, max_retries
        self.resources = dict(resources or {})
        self._actors: list[Any] = []
        self._shipped: dict[int, tuple[Any, tuple[str, ...], str, Any]] = {}
        self._keys = itertools.count()
        ray = import_ray()
        try:  # Ray's own checks of the resources, before a cluster starts
            actor = ray.remote(Worker).options(num_cpus=num_cpus, num_gpus=num_gpus, resources=self.resources or None,
                                               max_restarts=max_retries, max_task_retries=max_retries)
        except ValueError as e:
            raise ConfigError(f"RayExecutor: {one_line(e)}") from None
        self._started = connect(address)
        try:
            self.workers = fitting(workers, num_cpus, num_gpus, "RayExecutor", self.resources)
            self._actors = [actor.remote(threads) for _ in range(self.workers)]
        except BaseException as e:
            self.close()  # and the local cluster, if this constructor started it
            if isinstance(e, ValueError) and not isinstance(e, ConfigError):  # Ray's own checks of the settings
                raise ConfigError(f"RayExecutor: {one_line(e)}") from None
            raise

    def __repr__(self) -> str:
        where = f"{self.address!r}, " if self.address else ""
        return f"RayExecutor({where}workers={self.workers})"

    @property
    def actors(self) -> list[Any]:
        """The worker actor handles (for inspection: ``ray.get(a.info.remote())``)."""
        return list(self._actors)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """``fn(item)`` for every item, run on the workers, yielded in item order."""
        return self._ordered(lambda actor, item: actor.call.remote(fn, item), items)

    def transform(self, stage: Any, rankings: Sequence[Any]) -> Iterator[Any]:
        """``stage(r)`` for every Ranking, each on some worker; the stage is shipped once per worker, and
        again once one of its retrievers is indexed anew (``bm25.index(other_docs)`` changes it in place)."""
        ray = import_ray()
        state = _indexed_corpora(stage)
        if id(stage) not in self._shipped or self._shipped[id(stage)][1] != state:
            self._shipped[id(stage)] = (stage, state, f"stage-{next(self._keys)}", ray.put(stage))
        _, _, key, ref = self._shipped[id(stage)]
        return self._ordered(lambda actor, r: actor.transform.remote(key, [ref], r), rankings)

    def _ordered(self, submit: Callable[[Any, Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        """Items go to idle workers as soon as any worker is free; results come back in item order."""
        if not self._actors:
            raise ConfigError(f"{self!r} is closed")
        return self._schedule(submit, list(items))

    def _schedule(self, submit: Callable[[Any, Any], Any], items: list[Any]) -> Iterator[Any]:
        """Items go only to workers that have started (on a cluster that must grow for the others,
        those that fit work alone meanwhile)."""
        ray = import_ray()
        starting = {a.__ray_ready__.remote(): a for a in self._actors}
        idle: list[Any] = []
        running: dict[Any, tuple[int, Any]] = {}
        finished: dict[int, Any] = {}
        todo, next_out = iter(enumerate(items)), 0
        while next_out < len(items):
            self._still_open()
            for i, item in itertools.islice(todo, len(idle)):
                actor = idle.pop()
                running[submit(actor, item)] = (i, actor)
            ready, _ = ray.wait([*running, *starting], num_returns=1)
            for ref in ready:
                if ref in starting:
                    idle.append(starting.pop(ref))
                    continue
                i, actor = running.pop(ref)
                finished[i] = ref
                idle.append(actor)
            while next_out in finished:  # errors surface here, in order
                yield self._result(finished.pop(next_out))
                next_out += 1

    def _result(self, ref: Any) -> Any:
        """The result behind ``ref``; a worker dead for good is one :class:`RerankError` line (an
        exception the task raised comes through as itself)."""
        ray = import_ray()
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as e:
            self._still_open()
            raise RerankError(f"a Ray worker died and its {self.max_retries} restarts are used up: {ray_reason(e)}") from None
        except ray.exceptions.RayTaskError as e:  # its text is Ray's remote traceback: raise what the task raised
            cause = getattr(e, "cause", None)
            raise (cause if isinstance(cause, Exception) else RerankError(ray_reason(e))) from None

    def _still_open(self) -> None:
        if not self._actors:  # close() ran while a map was being read
            raise ConfigError(f"{self!r} was closed before its map finished")

    def info(self) -> list[dict[str, Any]]:
        """One :meth:`Worker.info` per worker: pid, node and model loads."""
        ray = import_ray()
        return ray.get([a.info.remote() for a in self._actors])

    def close(self) -> None:
        """Stop the workers (and the local cluster, if this executor started it). Safe to call twice."""
        if self._actors:
            ray = import_ray()
            for a in self._actors:
                ray.kill(a)
            self._actors = []
            self._shipped.clear()
        if self._started:
            shutdown()
            self._started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_settings(*, workers: Any, num_cpus: Any, num_gpus: Any, resources: Any, max_retries: Any,
                    threads: Any) -> None:
    """Raise :class:`ConfigError` for a setting of the wrong type or out of range (before Ray starts)."""
    for name, value, low in (("workers", workers, 1), ("max_retries", max_retries, 0), ("threads", threads, 1)):
        if value is not None or name == "max_retries":
            check_count("RayExecutor", name, value, low)
    if resources is not None and not isinstance(resources, dict):
        raise ConfigError(f"RayExecutor: resources must be a dict of names to amounts, got {resources!r}")
    amounts = {"num_cpus": num_cpus, "num_gpus": num_gpus,
               **{f"resources[{k!r}]": v for k, v in (resources or {}).items()}}
    for name, value in amounts.items():
        if not is_finite_number(value) or value < 0:
            raise ConfigError(f"RayExecutor: {name} must be a finite number >= 0, got {value!r}")


def _indexed_corpora(stage: Any) -> tuple[str, ...]:
    """The corpus fingerprint of each indexed retriever among ``stage``'s leaves: what changes when one is
    indexed anew in place, so a worker's copy of the stage would answer for the old corpus."""
    from rerank.retrievers.base import Retriever
    from rerank.stage import leaves

    return tuple(leaf.corpus_fingerprint for leaf in leaves(stage) if isinstance(leaf, Retriever) and leaf.is_indexed)
