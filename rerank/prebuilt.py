"""Prebuilt document embeddings shipped with bundled collections, as Pyserini ships prebuilt indexes.

A prebuilt entry is ``<datasets dir>/prebuilt/<key>.npy.gz`` (float32, one row per document in
corpus order) with ``<key>.json`` beside it: the corpus fingerprint
(:func:`rerank.index_cache.corpus_fingerprint`), the encoder identity
(:meth:`rerank.encoders.Encoder.identity`) and the SHA-256 of the array. :func:`lookup` answers
only when all three match the documents and encoder asked for, so an entry never stands in for other
data, another model or another runtime (``"auto"`` resolves to bf16 or float32 first). Anything
unreadable is skipped with a warning, and the documents are encoded as usual.
``RERANK_PREBUILT=off`` turns lookups off.

>>> lookup([], {"model": "m"}) is None
True
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerank.errors import one_line
from rerank.index_cache import corpus_fingerprint
from rerank.types import Doc

logger = logging.getLogger("rerank")


def entry_key(fingerprint: str, identity: dict[str, Any]) -> str:
    """The file stem of the entry for a corpus fingerprint and an encoder identity."""
    return hashlib.sha256(f"{fingerprint}|{json.dumps(identity, sort_keys=True)}".encode()).hexdigest()[:16]


def folders() -> list[Path]:
    """Where entries are looked for: ``prebuilt/`` of every bundled-datasets folder (none when off)."""
    if os.environ.get("RERANK_PREBUILT", "").lower() in ("off", "0", "false", "no"):
        return []
    from rerank.data import dataset_dirs

    return [d / "prebuilt" for d in dataset_dirs() if (d / "prebuilt").is_dir()]


def lookup(docs: Sequence[Doc], identity: dict[str, Any]) -> np.ndarray | None:
    """The prebuilt embeddings of ``docs`` under ``identity``, or None. The fingerprint is computed
    only when an entry with this identity and document count exists."""
    fingerprint = None
    for folder in folders():
        for meta_path in sorted(folder.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                if not isinstance(meta, dict):
                    raise ValueError(f"{meta_path.name} is not a JSON object")
                if meta.get("encoder") != identity or meta.get("documents") != len(docs):
                    continue
                fingerprint = fingerprint or corpus_fingerprint(docs)
                if meta.get("corpus") != fingerprint or meta_path.stem != entry_key(fingerprint, identity):
                    continue
                data = gzip.decompress(meta_path.with_suffix(".npy.gz").read_bytes())
                if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
                    raise ValueError("its array does not match the checksum in its .json")
                embeddings = np.load(io.BytesIO(data), allow_pickle=False)
                if embeddings.ndim != 2 or embeddings.shape[0] != len(docs) or embeddings.dtype != np.float32:
                    raise ValueError(f"array of shape {embeddings.shape} and dtype {embeddings.dtype}")
                if not np.isfinite(embeddings).all():
                    raise ValueError("the array holds NaN or infinite values")
            except (OSError, ValueError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
                logger.warning("prebuilt embeddings %s are unreadable (%s); encoding instead",
                               meta_path.with_suffix(""), one_line(e))
                continue
            logger.info("dense: %d prebuilt document embeddings from %s", len(docs), meta_path.with_suffix(".npy.gz"))
            return embeddings
    return None


def write(folder: str | Path, docs: Sequence[Doc], identity: dict[str, Any], embeddings: np.ndarray) -> Path:
    """Write the entry for ``docs`` and ``identity`` into ``folder``; returns the array's path."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.shape[0] != len(docs):
        raise ValueError(f"{len(docs)} documents but {embeddings.shape[0]} embeddings")
    fingerprint = corpus_fingerprint(docs)
    buffer = io.BytesIO()
    np.save(buffer, embeddings, allow_pickle=False)
    data = buffer.getvalue()
    meta = {"corpus": fingerprint, "documents": len(docs), "encoder": identity, "dim": int(embeddings.shape[1]),
            "sha256": hashlib.sha256(data).hexdigest()}
    folder, key = Path(folder), entry_key(fingerprint, identity)
    folder.mkdir(parents=True, exist_ok=True)
    array_path = folder / f"{key}.npy.gz"
    array_path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    (folder / f"{key}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return array_path
