"""A persistent cache of model calls, so re-running a benchmark costs nothing.

``CachedBackend(backend, path)`` answers each prompt from an SQLite file when it has seen the same
call before and asks the wrapped backend only for the rest (in one batch). A call is keyed by the
backend's ``cache_id`` (backend kind, model and anything that changes its numbers, e.g. dtype), the
verb, the prompt and the decoding settings. Sampled calls (temperature > 0) are cached too, which
makes a re-run repeat the first run's samples.

>>> from rerank.backends.fake import FakeBackend
>>> import tempfile, os
>>> cached = CachedBackend(FakeBackend(generate=str.upper), os.path.join(tempfile.mkdtemp(), "calls.sqlite"))
>>> [g.text for g in cached.generate(["a", "b"])], [g.text for g in cached.generate(["b", "c"])]
(['A', 'B'], ['B', 'C'])
>>> cached.hits, cached.misses
(1, 3)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rerank.backends.base import Backend, BackendWrapper, Generation, Prompt, checked_generations, checked_scores
from rerank.constraints import Constraint
from rerank.errors import DataError


def default_path() -> Path:
    """Where the call cache lives unless told otherwise: ``<cache_root>/calls.sqlite``."""
    from rerank.models import cache_root

    return cache_root() / "calls.sqlite"


class CallStore:
    """A key -> JSON value table in one SQLite file (safe across threads and processes).

    A file that is not a readable SQLite database is reported (as :class:`DataError`, naming the file and
    how to recover) when the store opens, so before any model is loaded.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._checked():
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
            with self._lock, self._db:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    @contextmanager
    def _checked(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise DataError(f"the call cache {self.path} is damaged ({e}); delete that file to start an empty "
                            "cache (its calls are made again), or set RERANK_CACHE to another folder") from None

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        with self._lock, self._checked():
            for start in range(0, len(keys), 500):
                chunk = list(keys[start:start + 500])
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk):
                    found[key] = json.loads(value)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        with self._lock, self._checked(), self._db:
            self._db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in items.items()])

    def __len__(self) -> int:
        with self._lock, self._checked():
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class CachedBackend(BackendWrapper):
    """Wrap ``backend`` so that repeated calls are read from ``path`` (default ``<cache_root>/calls.sqlite``)
    or from an open :class:`CallStore`."""

    def __init__(self, backend: Backend, path: str | Path | CallStore | None = None):
        super().__init__(backend)
        self.store = path if isinstance(path, CallStore) else CallStore(path or default_path())
        self.hits = self.misses = 0

    def __repr__(self) -> str:
        return f"CachedBackend({self.inner!r}, {str(self.store.path)!r})"

    def _key(self, *parts: Any) -> str:
        blob = json.dumps([self.cache_id, *parts], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()  # half a surrogate pair is no character

    def _cached(self, prompts: Sequence[Prompt], keys: list[str], compute: Callable[[list[Prompt]], list[Any]]) -> list[Any]:
        found = self.store.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = compute([prompts[i] for i in missing])
            new = {keys[i]: value for i, value in zip(missing, fresh)}
            self.store.put_many(new)
            found.update(new)
        return [found[k] for k in keys]

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: Sequence[str] = (), constraint: Constraint | None = None) -> list[Generation]:
        guide = [] if constraint is None else [constraint.spec()]  # unconstrained keys stay as they were
        keys = [self._key("generate", p, max_new_tokens, temperature, list(stop), *guide) for p in prompts]

        def compute(todo: list[Prompt]) -> list[dict[str, Any]]:
            made = self.inner.generate(todo, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop,
                                       constraint=constraint)
            return [dataclasses.asdict(g) for g in checked_generations(self.inner, made, len(todo))]

        return [Generation(**fields) for fields in self._cached(prompts, keys, compute)]

    def score(self, prompts: Sequence[Prompt], options: Sequence[str]) -> np.ndarray:
        keys = [self._key("score", p, list(options)) for p in prompts]

        def compute(todo: list[Prompt]) -> list[list[float]]:
            return checked_scores(self.inner, self.inner.score(todo, options), len(todo), len(options)).tolist()

        rows = self._cached(prompts, keys, compute)
        return np.array(rows, dtype=np.float64).reshape(len(prompts), len(options))
