"""The on-disk cache of retriever indexes (BM25, dense, ANNCUR; E2Rank takes document embeddings from a Dense stage).

An entry is the folder ``<cache>/indexes/<dataset>-<class>-<key>`` written by ``Retriever.save``. The
key hashes the retriever's class and ``index_identity()`` (its settings but those that do not change
the index) and the corpus *content*: every docid, title and text (:func:`corpus_fingerprint`), so an
edited document never gets an old index. ``params.json`` records
the fingerprint too and is checked on load, with a seal over the header and every file
(:func:`sealed`; a large file by samples), so that a file edited, swapped or damaged by accident is
not read as the index (the seal is no signature: whoever rewrites it is trusted). Entries are written
to a temporary folder and renamed into place (:func:`write_folder`), so a partial entry is never
read; an entry that cannot be read is rebuilt.

>>> from rerank.types import Doc
>>> corpus_fingerprint([Doc("d1", "a")]) == corpus_fingerprint([Doc("d1", "b")])
False
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rerank.errors import ConfigError, DataError, one_line
from rerank.naming import slug
from rerank.types import Doc

logger = logging.getLogger("rerank")


def corpus_fingerprint(docs: Iterable[Doc]) -> str:
    """A SHA-256 over every docid, title and text, in order (one streamed pass)."""
    digest = hashlib.sha256()
    for d in docs:
        digest.update(f"{len(d.docid)}:{d.docid}{len(d.title)}:{d.title}{len(d.text)}:{d.text}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def unordered_fingerprint(docs: Iterable[Doc]) -> str:
    """A SHA-256 over the :func:`corpus_fingerprint` of each document, sorted: the same for the same
    documents in any order."""
    digest = hashlib.sha256()
    for one in sorted(corpus_fingerprint([d]) for d in docs):
        digest.update(one.encode())
    return digest.hexdigest()


def sealed(folder: Path, header: dict[str, Any]) -> dict[str, Any]:
    """``header`` with the SHA-256 of every file under ``folder`` but ``params.json`` (``files``; of a
    large file's samples, :data:`SAMPLED_ABOVE`) and a ``seal`` over the rest of the header, so that a
    file edited, swapped or damaged by accident is not read as the index."""
    files = {f.relative_to(folder).as_posix(): file_digest(f)
             for f in sorted(folder.rglob("*")) if f.is_file() and f != folder / "params.json"}
    return {**header, "files": files, "seal": _seal({**header, "files": files})}


def check_seal(folder: Path, header: dict[str, Any]) -> None:
    """DataError unless the header of the index in ``folder`` is as :func:`sealed` wrote it (cheap: the
    files are checked by :func:`check_files`)."""
    if not (isinstance(header.get("seal"), str) and isinstance(header.get("files"), dict)
            and isinstance(header.get("identity"), dict) and isinstance(header.get("corpus"), str)):
        raise DataError(f"{folder}/params.json has no seal (saved by an older rerank, or edited); rebuild the index")
    if _seal(header) != header["seal"]:
        raise DataError(f"{folder}/params.json was edited since the index was saved; rebuild the index")


def check_files(folder: Path, header: dict[str, Any]) -> None:
    """DataError unless ``folder`` holds the files its (sealed) header lists, unchanged."""
    files = header["files"]
    missing = sorted(f for f in files if not (folder / f).is_file())
    changed = sorted(f for f in files if f not in missing and file_digest(folder / f) != files[f])
    problems = [f"{', '.join(missing)} missing"] if missing else []
    problems += [f"{', '.join(changed)} changed since the index was saved (edited, swapped or damaged)"] if changed else []
    if problems:
        raise DataError(f"{folder}: {'; '.join(problems)}; rebuild the index")


def _seal(header: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({k: v for k, v in header.items() if k != "seal"}, sort_keys=True).encode()).hexdigest()


SAMPLED_ABOVE, SAMPLE = 64 << 20, 4 << 20
"""Files above 64 MiB are sealed by their size and three 4 MiB samples (start, middle, end), so that
loading a large index (memory-mapped, perhaps) reads a few MiB of it, not all of it."""


def file_digest(path: Path) -> str:
    """The SHA-256 of a file; of a file over :data:`SAMPLED_ABOVE` bytes, of its size and three samples."""
    with path.open("rb") as f:
        size = path.stat().st_size
        if size <= SAMPLED_ABOVE:
            return hashlib.file_digest(f, "sha256").hexdigest()
        digest = hashlib.sha256(f"{size}:".encode())
        for start in (0, size // 2, size - SAMPLE):
            f.seek(start)
            digest.update(f.read(SAMPLE))
        return f"sampled:{digest.hexdigest()}"


def dataset_fingerprint(dataset: Any) -> str:
    """The corpus fingerprint of ``dataset``: memoised by a :class:`~rerank.data.Dataset`, computed for any
    other object with ``corpus()``."""
    known = getattr(dataset, "fingerprint", None)
    return known if isinstance(known, str) else corpus_fingerprint(dataset.corpus())


def index_folder(retriever: Any, dataset: Any, cache_dir: str | Path) -> Path:
    """Where :func:`indexed` keeps ``retriever``'s index of ``dataset`` (the folder may not exist yet): by
    its class and index settings, the code of a plugin's class (edited since: indexed anew), what its
    settings resolve to here (:func:`~rerank.models.resolved_stamps`) and the corpus."""
    from rerank.models import code_stamps, resolved_stamps

    stamps = json.dumps([code_stamps(retriever), resolved_stamps(retriever)], sort_keys=True, default=str)
    key = f"{type(retriever).__name__}{sorted(retriever.index_identity().items())}|{stamps}|{dataset_fingerprint(dataset)}"
    name = f"{slug(dataset.name)}-{type(retriever).__name__.lower()}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    return Path(cache_dir) / "indexes" / name


def indexed(retriever: Any, dataset: Any, cache_dir: str | Path) -> Any:
    """``retriever`` indexed on ``dataset``'s corpus, loaded from the cache when an entry for it is readable."""
    folder = index_folder(retriever, dataset, cache_dir)
    if folder.exists():
        try:
            loaded = load_entry(retriever, folder, dataset_fingerprint(dataset))
            logger.info("index: %r on %s loaded from %s", retriever, dataset.name, folder)
            return loaded
        except Exception as e:  # noqa: BLE001 -- a cache entry is disposable: whatever is wrong with it, rebuild
            logger.warning("index cache %s is unreadable (%s: %s); rebuilding it", folder, type(e).__name__, one_line(e))
            shutil.rmtree(folder, ignore_errors=True)
    corpus = dataset.corpus()
    logger.info("index: %r on %s, %d documents ...", retriever, dataset.name, len(corpus))
    retriever.index(corpus)
    if _of_this_process(retriever):
        logger.info("index: %s is defined without a source file (a notebook?), so no other process could reuse "
                    "its index; it is kept in memory only", type(retriever).__name__)
        return retriever
    try:
        retriever.save(folder)
    except NotImplementedError:
        pass
    except OSError as e:
        logger.warning("could not write the index cache %s (%s); the index is kept in memory only", folder, one_line(e))
    return retriever


def _of_this_process(retriever: Any) -> bool:
    """Whether code stamped for this process only (:func:`~rerank.models.class_stamps`) builds ``retriever``."""
    from rerank.models import code_stamps

    return any(stamp.startswith("session ") for stamp in code_stamps(retriever).values())


def load_entry(retriever: Any, folder: Path, fingerprint: str) -> Any:
    """``retriever`` with the index in ``folder`` read into it (its own settings kept: device, results,
    progress), after checking that the index was built on ``fingerprint`` (``read_index`` checks the rest)."""
    meta = read_index_header(folder)
    if meta.get("corpus") != fingerprint:
        raise DataError(f"{folder} was built on another corpus")
    return retriever.read_index(folder, meta=meta)


def write_folder(path: str | Path, write: Callable[[Path], None], kind: str = "saved index") -> None:
    """Create or replace the folder ``path`` with what ``write(tmp)`` puts into a temporary folder beside it.

    The folder appears complete or not at all. An existing ``path`` is replaced only when it is an empty
    folder or holds a ``kind`` (a ``params.json``); anything else is refused, never overwritten.
    """
    path = check_target(path, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        write(tmp)
        if path.exists():
            old = tmp.with_suffix(".old")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_index_header(folder: Path) -> dict[str, Any]:
    """The ``params.json`` of a saved index: a JSON object with rerank's ``class``, ``params`` and
    ``rerank_version``; DataError for a folder without one, or with someone else's ``params.json``."""
    meta_file = folder / "params.json"
    if not meta_file.is_file():
        raise DataError(f"{folder} is not a saved index (no params.json)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{meta_file} is damaged ({type(e).__name__}: {one_line(e, 200)}); rebuild the index") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("class"), str) and isinstance(meta.get("params"), dict)
            and "rerank_version" in meta):
        raise DataError(f"{meta_file} is not the header of a rerank index (it needs class, params and rerank_version)")
    return meta


def check_target(path: str | Path, kind: str = "saved index") -> Path:
    """``path`` if :func:`write_folder` may write there: absent, an empty folder, or a folder with a ``kind``
    (whose ``params.json`` is rerank's: a model's ``params.json`` does not make its folder replaceable)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder; choose a new folder for the {kind}")
    if path.is_dir() and any(path.iterdir()):
        try:
            read_index_header(path)
        except DataError:
            raise ConfigError(f"{path} is a folder that does not hold a {kind}; choose a new or empty folder") from None
    return path

