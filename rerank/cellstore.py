"""The files of an experiment's output folder: one run and one record per cell, and cell locks.

``<out>/<dataset>/<system>.trec`` holds a cell's run, ``<system>.json`` its record (settings,
query ids, timings, LLM usage, versions, or the error, and the SHA-256 of the run file). A cell whose
record says it is done with the same settings, next to the run file it recorded, is not run again; a
run file edited, cut or damaged since is run again (with a warning). The output of a shared pipeline prefix is kept under
``<out>/<dataset>/prefixes/`` (JSON, every column, exact floats) with its settings, and reused by a
later run that needs the same prefix with the same settings. Records and prefixes carry the SHA-256
of their own content (``content_sha256``): one edited or damaged since is not trusted (warned about
once) and the cell or prefix runs again. While a run works on a cell it holds
``<system>.lock`` (the owner's host and pid), so two runs of one grid into one folder never run a
cell twice; a lock left by a process that died is taken over. Locks are read, taken, taken over and
released only while holding an OS file lock (``flock``) on ``<dataset>/.lock-guard``, so two runs
can never both take one cell. Records, runs and prefixes are written to a temporary file and
renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import logging
import os
import socket
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from rerank.io import atomic_file
from rerank.naming import slug

logger = logging.getLogger("rerank")

class CellStore:
    """Runs, records and locks of the cells under ``out``."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self._changed: set[Path] = set()  # files found changed (warned about once)

    def run_path(self, dataset: str, system: str) -> Path:
        return self.out / slug(dataset) / f"{slug(system)}.trec"

    def record_path(self, dataset: str, system: str) -> Path:
        return self.run_path(dataset, system).with_suffix(".json")

    def read(self, dataset: str, system: str) -> dict[str, Any]:
        """The saved record, or ``{}`` when there is none (or it cannot be read, or was edited or damaged)."""
        path = self.record_path(dataset, system)
        try:  # bytes that are not UTF-8 cannot be the sealed text: damaged
            return self._unseal(path, path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return {}

    def done(self, dataset: str, system: str, settings: dict[str, Any]) -> bool:
        """Whether the cell finished with these settings and its run file is the one it recorded."""
        record = self.read(dataset, system)
        if record.get("status") != "ok" or any(record.get(k) != v for k, v in settings.items()):
            return False
        if self.intact(dataset, system, record):
            return True
        path = self.run_path(dataset, system)
        if path not in self._changed:
            self._changed.add(path)
            logger.warning("%s is not the run file recorded for %s on %s (missing, edited, cut or from an older "
                           "version of rerank); running the cell again", path, system, dataset)
        return False

    def intact(self, dataset: str, system: str, record: dict[str, Any]) -> bool:
        """Whether the cell's run file is there and is the one ``record`` was saved with."""
        found = _sha256(self.run_path(dataset, system))
        return found is not None and record.get("run_sha256") == found

    def write(self, dataset: str, system: str, record: dict[str, Any]) -> None:
        """Save the cell's record, with the SHA-256 of its run file when there is one."""
        path = self.record_path(dataset, system)
        path.parent.mkdir(parents=True, exist_ok=True)
        run = self.run_path(dataset, system)
        self._changed -= {run, path}
        stamp = {"run_sha256": _sha256(run)} if record.get("status") == "ok" else {}
        _replace(path, _seal({**record, **stamp}, indent=1))

    # -- shared prefixes -----------------------------------------------------------------------------
    def prefix_path(self, dataset: str, key: str) -> Path:
        return self.out / slug(dataset) / "prefixes" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json.gz"

    def read_prefix(self, dataset: str, key: str, settings: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]] | None:
        """A saved prefix output and its record, when saved with these settings (None otherwise)."""
        path = self.prefix_path(dataset, key)
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                saved = self._unseal(path, f.read())
            if saved.get("key") != key or any(saved["settings"].get(k) != v for k, v in settings.items()):
                return None
            return pd.DataFrame(saved["columns"]), saved["record"]
        except (OSError, ValueError, KeyError, TypeError, EOFError, zlib.error):
            return None  # absent, partial or unreadable: compute it again

    def write_prefix(self, dataset: str, key: str, settings: dict[str, Any], frame: pd.DataFrame,
                     record: dict[str, Any]) -> None:
        path = self.prefix_path(dataset, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"key": key, "settings": settings, "record": record,
                "columns": {c: frame[c].tolist() for c in frame.columns}}
        try:
            text = _seal(data, strict=True)
        except (TypeError, ValueError):
            return  # a column JSON cannot hold exactly (arrays): not kept, computed again when needed
        with atomic_file(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as f:
            f.write(text)

    def _unseal(self, path: Path, text: str) -> dict[str, Any]:
        """The JSON object ``text`` when its ``content_sha256`` matches its content, else ``{}`` (an
        edited or damaged one is warned about once)."""
        try:
            found = json.loads(text)
        except ValueError:
            found = None
        if isinstance(found, dict) and found.pop(_SEAL, None) == _digest(found):
            return found
        if path not in self._changed:
            self._changed.add(path)
            logger.warning("%s was edited or damaged since it was saved (or comes from an older version of rerank); "
                           "not using it", path)
        return {}

    # -- locks ------------------------------------------------------------------------------------
    def lock_path(self, dataset: str, system: str) -> Path:
        return self.run_path(dataset, system).with_suffix(".lock")

    def lock(self, dataset: str, system: str) -> str | None:
        """Take the cell's lock; None when taken (or already ours), else who holds it (``host:pid``)."""
        path = self.lock_path(dataset, system)
        with _guard(path.parent):
            owner = _read(path)
            if owner and owner != _me() and _alive(owner):
                return owner
            _replace(path, _me())  # free, ours, or left by a process that is gone
            return None

    def unlock(self, dataset: str, system: str) -> None:
        """Release the cell's lock if this process holds it, or a process that is gone left it."""
        path = self.lock_path(dataset, system)
        if not path.exists():
            return
        with _guard(path.parent):
            owner = _read(path)
            if owner == _me() or not _alive(owner):
                path.unlink(missing_ok=True)


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def _guard(folder: Path) -> Iterator[None]:
    """Hold the folder's lock guard (an exclusive ``flock``) while cell locks are read or changed."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock-guard", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


_SEAL = "content_sha256"


def _seal(data: dict[str, Any], indent: int | None = None, strict: bool = False) -> str:
    """``data`` as JSON carrying the SHA-256 of its own content (``strict``: refuse values JSON
    cannot hold, rather than writing them as strings)."""
    canon = json.loads(json.dumps(data, default=None if strict else str))
    return json.dumps({**canon, _SEAL: _digest(canon)}, indent=indent)


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()  # not UTF-8: damaged, as other text
    except OSError:
        return ""


def _alive(owner: str) -> bool:
    """Whether ``host:pid`` names a live process (on another host: assume it is)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return bool(owner)
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
