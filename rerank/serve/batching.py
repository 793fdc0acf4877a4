"""Dynamic batching: requests that arrive close together share one model call.

A :class:`Batcher` keeps a bounded queue of waiting requests. Its loop takes the oldest, lets others
join for at most ``wait_s`` (none when the model was busy and requests already piled up), and runs
up to ``max_requests`` of them (at most ``max_documents`` documents) through ``run`` in the model's
thread. Results are handed back per request. When a merged call fails, each request is run alone,
so one bad request fails alone. A full queue raises :class:`QueueFull` at once; a request whose
wait ends (timed out, or its caller cancelled) leaves the queue then, and is never run; :meth:`stop`
lets the waiting requests finish before it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from rerank.errors import BackendError, InputRefused

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(Exception):
    """The batcher's queue holds ``max_queue`` requests already."""

    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(eq=False)  # compared by identity: a request leaves the queue as itself
class _Waiting(Generic[T]):
    item: T
    future: asyncio.Future
    size: int
    since: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """Observers of each merged call: requests, documents, seconds in the model."""

    on_batch: Callable[[int, int, float], None] = lambda requests, documents, seconds: None
    on_depth: Callable[[int], None] = lambda depth: None


class Batcher(Generic[T, R]):
    """Merge concurrent ``submit`` calls into ``run(items)`` calls on ``executor``.

    Args:
        run: maps a list of items to a list of results of the same length (runs in ``executor``).
        size: the number of documents of an item (for ``max_documents``).
        max_requests: items per call; 1 turns batching off.
        max_documents: documents per call; an item larger than this runs alone.
        wait_s: how long the oldest waiting item waits for others to join.
        max_queue: waiting items beyond which ``submit`` raises :class:`QueueFull`.
    """

    def __init__(self, run: Callable[[list[T]], Sequence[R]], size: Callable[[T], int], executor: Executor, *,
                 max_requests: int, max_documents: int, wait_s: float, max_queue: int,
                 stats: BatchStats | None = None):
        self.run, self.size, self.executor = run, size, executor
        self.max_requests, self.max_documents, self.wait_s, self.max_queue = max_requests, max_documents, wait_s, max_queue
        self.stats = stats or BatchStats()
        self._waiting: deque[_Waiting[T]] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._seconds_per_call = 1.0

    @property
    def depth(self) -> int:
        """Requests waiting for the model (not counting the batch being run)."""
        return len(self._waiting)

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish every waiting request, then end the loop."""
        self._stopping = True
        if self._arrived is not None:
            self._arrived.set()
        if self._task is not None:
            await self._task

    async def submit(self, item: T, timeout: float) -> R:
        """The result of ``item``; raises QueueFull, TimeoutError, or what ``run`` raised for it."""
        if self._task is None or self._stopping:
            raise RuntimeError("the batcher is not running")
        if len(self._waiting) >= self.max_queue:
            batches_ahead = 1 + len(self._waiting) // self.max_requests
            raise QueueFull(max(1, round(batches_ahead * self._seconds_per_call)))
        waiting = _Waiting(item, asyncio.get_running_loop().create_future(), self.size(item))
        self._waiting.append(waiting)
        self.stats.on_depth(len(self._waiting))
        self._arrived.set()
        try:
            return await asyncio.wait_for(waiting.future, timeout)
        finally:
            if waiting in self._waiting:  # timed out or cancelled before the model took it: free its place now
                self._waiting.remove(waiting)
                self.stats.on_depth(len(self._waiting))

    async def _loop(self) -> None:
        while True:
            while not self._waiting:
                if self._stopping:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            await self._gather_window()
            batch = self._take()
            self.stats.on_depth(len(self._waiting))
            if batch:
                await self._run(batch)

    async def _gather_window(self) -> None:
        """Wait until the batch is full or the oldest item has waited ``wait_s``."""
        while self._waiting and not self._stopping and len(self._waiting) < self.max_requests:
            if sum(w.size for w in self._waiting) >= self.max_documents:
                return
            left = self._waiting[0].since + self.wait_s - time.monotonic()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return

    def _take(self) -> list[_Waiting[T]]:
        batch: list[_Waiting[T]] = []
        documents = 0
        while self._waiting and len(batch) < self.max_requests:
            nxt = self._waiting[0]
            if nxt.future.done():  # cancelled by a timeout whose caller has not yet run to take it out
                self._waiting.popleft()
                continue
            if batch and documents + nxt.size > self.max_documents:
                break
            batch.append(self._waiting.popleft())
            documents += nxt.size
        return batch

    async def _run(self, batch: list[_Waiting[T]]) -> None:
        started = time.monotonic()
        outcomes = await asyncio.get_running_loop().run_in_executor(self.executor, self._call, batch)
        seconds = time.monotonic() - started
        self._seconds_per_call = 0.8 * self._seconds_per_call + 0.2 * seconds
        self.stats.on_batch(len(batch), sum(w.size for w in batch), seconds)
        for w, outcome in zip(batch, outcomes):
            if w.future.done():
                continue
            if isinstance(outcome, BaseException):
                w.future.set_exception(outcome)
            else:
                w.future.set_result(outcome)

    def _call(self, batch: list[_Waiting[T]]) -> list[Any]:
        """Results of the batch's items; after a failed merged call, each item alone (result or
        exception), skipping those whose caller has gone. A backend failure fails them all at once:
        asking a backend that is down once per item would hold the model thread that many times; one
        that refused an input (:class:`~rerank.errors.InputRefused`) is asked per item."""
        try:
            out = list(self.run([w.item for w in batch]))
            if len(out) != len(batch):
                raise RuntimeError(f"the model returned {len(out)} results for {len(batch)} requests")
            return out
        except InputRefused as e:
            if len(batch) == 1:
                return [e]
        except (BackendError, TimeoutError) as e:
            if isinstance(e, TimeoutError):  # the model's own timeout: not the request deadline (504)
                e = BackendError(f"a model call timed out: {e or type(e).__name__}")
            return [e] * len(batch)
        except Exception as e:
            if len(batch) == 1:
                return [e]
        return [None if w.future.done() else self._call([w])[0] for w in batch]
