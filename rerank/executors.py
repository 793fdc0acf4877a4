"""Where experiment cells run: in this process (default) or on a cluster.

The experiment runner (:mod:`rerank.runner`, used by ``rerank eval`` and ``rerank bench``) splits
its work into *cells*, one per (dataset, system), and hands them to an executor::

    records = executor.map(run_cell, cells)

The contract an executor keeps:

* ``map(fn, items)`` calls ``fn`` once per item and yields the results **in item order** (it may
  run items concurrently and elsewhere, but it yields them in order, one by one, as they are ready).
* ``fn`` is a module-level, picklable function and every item is a frozen dataclass of plain values
  (dataset spec, system name, expression string, settings). Results are plain dataclasses too, so a
  remote worker can execute a cell and send its record back.
* ``fn`` must not raise for a failing cell; it returns a record that holds the error. If an
  executor cannot run an item at all (a worker died), ``map`` raises; the runner's resume logic
  handles what was already written.
* Resume, locking, writing results and reporting happen on the driver, never in ``fn``.
* ``close()`` releases what the executor started (workers, a local cluster); calling it twice is fine.

Specs for :func:`executor_from_spec`: ``"local"`` (default), ``"ray"`` (start or join a local Ray
instance) and ``"ray:ADDRESS"`` (join a running cluster). Ray lives in
``rerank.distributed.ray:RayExecutor``, constructed as ``RayExecutor(address)`` with ``address``
None for ``"ray"``; it needs the ``rerank[ray]`` extra.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from rerank.errors import ConfigError, MissingDependency

T = TypeVar("T")
R = TypeVar("R")


@runtime_checkable
class Executor(Protocol):
    """Runs a function over items and yields the results in item order."""

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Run every item in this process, one after the other, in order."""

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        for item in items:
            yield fn(item)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "LocalExecutor()"


def executor_from_spec(spec: str | Executor | None = None) -> Executor:
    """An executor from ``"local"`` (or None), ``"ray"``, ``"ray:ADDRESS"``, or an Executor as is.

    >>> executor_from_spec(None)
    LocalExecutor()
    >>> executor_from_spec("nope")
    Traceback (most recent call last):
    ...
    rerank.errors.ConfigError: unknown executor 'nope'; use 'local', 'ray' or 'ray:ADDRESS'
    """
    if spec is None:
        return LocalExecutor()
    if not isinstance(spec, str):
        if isinstance(spec, Executor):
            return spec
        raise ConfigError(f"an executor is a spec string or has map() and close(), got {type(spec).__name__}")
    name, sep, address = spec.strip().partition(":")
    if name == "local" and not sep:
        return LocalExecutor()
    if name == "ray" and (address.strip() or not sep):
        return _ray_executor(address.strip() or None)
    raise ConfigError(f"unknown executor {spec!r}; use 'local', 'ray' or 'ray:ADDRESS'")


def _ray_executor(address: str | None) -> Executor:
    try:
        module = importlib.import_module("rerank.distributed.ray")
    except ModuleNotFoundError as e:
        if e.name in ("ray", "rerank.distributed", "rerank.distributed.ray") or (e.name or "").startswith("ray."):
            raise MissingDependency("the ray executor needs Ray: pip install 'rerank[ray]'") from e
        raise
    return module.RayExecutor(address)
