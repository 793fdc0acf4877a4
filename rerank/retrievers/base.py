"""The retriever contract: index documents, retrieve for a query set, rescore given candidates.

A retriever given a query set retrieves its top ``num_results`` per query. Given a Ranking that
already has candidates (``bm25 >> dense``), it rescores exactly those candidates, so every
retriever is also a reranker. Output rows carry ``text`` (title and body joined, what a reranker
reads) and ``title``.
"""

from __future__ import annotations

import copy
import functools
import gzip
import inspect
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from rerank import __version__
from rerank._progress import progress_bar
from rerank.errors import ConfigError, DataError, RerankError, one_line
from rerank.index_cache import (
    check_files,
    check_seal,
    corpus_fingerprint,
    dataset_fingerprint,
    read_index_header,
    sealed,
    unordered_fingerprint,
    write_folder,
)
from rerank.stage import Stage, callable_directly, check_query_texts, leaves
from rerank.types import Doc, Ranking, doc_from, positive_count


class Retriever(Stage):
    """Base class of first-stage retrievers. Subclasses implement ``_build``, ``_retrieve``,
    ``_rescore`` and, to persist, ``_save_index`` / ``_load_index``."""

    requires = ("qid", "query")
    num_results: int = 1000
    progress: bool | None = None
    search_settings: tuple[str, ...] = ()
    """Settings that do not change the index built (a FAISS probe count, a scorer budget, an encoding
    batch size): not part of its identity, so a saved index reads into a retriever with other values."""

    def __init__(self, num_results: int = 1000, progress: bool | None = None):
        self.num_results, self.progress = num_results, progress  # num_results is checked as it is set
        self._forget_docs()

    # -- subclass hooks -----------------------------------------------------------------------
    def _build(self, docs: Sequence[Doc]) -> None:
        raise NotImplementedError

    def _retrieve(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each query: (document positions, scores), best first, at most ``k``."""
        raise NotImplementedError

    def _rescore(self, query: str, positions: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} cannot rescore given candidates")

    def _save_index(self, path: Path) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    def _load_index(self, path: Path, mmap: bool) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be loaded")

    def __setattr__(self, name: str, value: Any) -> None:
        """A setting a retriever is built with is fixed once set: its index, its cache key and its repr
        follow it, so changing it afterwards would let the cache answer for other settings."""
        if name in _built_with(type(self)) and name in self.__dict__:
            raise ConfigError(f"{type(self).__name__}.{name} is fixed when the retriever is built (its index, cache "
                              f"key and repr follow it); build a new one: {type(self).__name__}({name}=...)")
        if name == "num_results":
            value = positive_count(value, f"{type(self).__name__}: num_results")
        super().__setattr__(name, value)

    def index_identity(self) -> dict[str, Any]:
        """Everything that changes the index built from a corpus (the index cache's key, recorded in a
        saved index): the parameters but the result count, progress bars and :attr:`search_settings`."""
        skip = ("num_results", "progress", *self.search_settings)
        return {k: v for k, v in self.params().items() if k not in skip}

    # -- public API ---------------------------------------------------------------------------
    def index(self, docs: Iterable[Doc]) -> Self:
        """Index ``docs`` (any iterable of :class:`~rerank.types.Doc`); returns ``self``."""
        docs = as_docs(docs, f"{self!r}")
        if not docs:
            raise DataError(f"{self!r}: the corpus is empty, nothing to index")
        self._set_docs(docs)
        try:
            self._build(docs)
        except BaseException:  # interrupted or failed: no documents over the old index (nor its embeddings lent)
            self._forget_docs()
            raise
        return self

    @property
    def is_indexed(self) -> bool:
        return self._docs is not None

    @property
    def docs(self) -> list[Doc]:
        if self._docs is None:
            raise ConfigError(f"{self!r} has no index yet: call .index(docs) or {type(self).__name__}.load(path)")
        return self._docs

    def with_num_results(self, k: int) -> Self:
        """A shallow copy (sharing the index) that retrieves ``k`` per query."""
        other = copy.copy(self)
        other.num_results = k
        return other

    @callable_directly
    def transform(self, inp: Ranking) -> Ranking:
        docs = self.docs
        check_query_texts(inp, self)
        if inp.is_query_set:
            queries = inp.queries()
            hits = self._retrieve(list(queries.values()), min(self.num_results, len(docs)))
            frames = [_frame(qid, q, pos, sc) for (qid, q), (pos, sc) in zip(queries.items(), hits)]
        else:
            frames = []
            for c in progress_bar(list(inp.per_query()), "rescore", self.progress, unit="query"):
                known = [d for d in c.docids if d in self._position]
                if len(known) < len(c.docids):
                    raise DataError(f"{self!r}: {len(c.docids) - len(known)} candidate docids of query {c.qid!r} are not in the index")
                pos = np.array([self._position[d] for d in c.docids], dtype=np.int64)
                check_same_documents(self, c.docids, c.texts, f" of query {c.qid!r}")
                frames.append(_frame(c.qid, c.query, pos, self._rescore(c.query, pos)))
        frame = pd.concat(frames, ignore_index=True)
        pos = frame.pop("pos").to_numpy()
        frame["docid"] = [docs[i].docid for i in pos]
        frame["text"] = [self._texts[i] for i in pos]
        frame["title"] = [docs[i].title for i in pos]
        return Ranking(frame)

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the index as plain files: ``params.json``, ``docs.jsonl.gz`` and the model's arrays.

        The folder appears complete or not at all (written beside it, then renamed); an existing saved
        index there is replaced, any other existing file or folder is refused.
        """
        write_folder(path, self._write)

    def _write(self, path: Path) -> None:
        with gzip.open(path / "docs.jsonl.gz", "wt", encoding="utf-8") as f:
            for d in self.docs:
                f.write(json.dumps({"_id": d.docid, "title": d.title, "text": d.text}) + "\n")
        self._save_index(path)
        header = {"class": _class_path(type(self)), "rerank_version": __version__, "params": _json_ready(self.params()),
                  "identity": _json_ready(self.index_identity()), "corpus": self.corpus_fingerprint}
        (path / "params.json").write_text(json.dumps(sealed(path, header), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = False) -> Self:
        """Load an index written by :meth:`save` (``mmap=True`` maps large arrays from disk).

        DataError for a folder that is no saved index, a class that is no retriever, documents that
        are not the ones indexed (edited, reordered, missing) and damaged files."""
        path = Path(path)
        meta = read_index_header(path)
        check_seal(path, meta)
        if cls is not Retriever:
            check_class(meta, cls, path)
        klass = _retriever_class(meta["class"], path)
        try:
            self = klass(**meta["params"])
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}/params.json: its params do not build a {klass.__name__} ({e})") from None
        return self.read_index(path, mmap=mmap, meta=meta)

    def read_index(self, path: str | Path, *, mmap: bool = False, meta: dict[str, Any] | None = None) -> Self:
        """Read the index saved in ``path`` into this retriever, whose settings stay (its ``device``,
        ``num_results``, progress); DataError when the index was built by another class or with other
        settings, and as for :meth:`load`."""
        from rerank.io import read_corpus

        path = Path(path)
        meta = meta if meta is not None else read_index_header(path)
        check_seal(path, meta)
        check_class(meta, type(self), path)
        built, mine = meta["identity"], _json_ready(self.index_identity())
        other = sorted(k for k in mine.keys() | built.keys() if k not in mine or k not in built or mine[k] != built[k])
        if other and all(_unstamped(built.get(k), mine.get(k)) for k in other):
            raise DataError(f"{path} was saved by an earlier rerank, which did not record the encoder's weights "
                            "stamp; rebuild the index (rerank index, or .index(docs).save(path))")
        if other:
            def shown(values: dict[str, Any]) -> str:
                return ", ".join(f"{k}={values[k]!r}" if k in values else f"{k} at its default" for k in other)

            raise DataError(f"{path} was built with {shown(built)}, not {shown(mine)}; construct {type(self).__name__} "
                            "with the settings it was built with to read it")
        check_files(path, meta)
        docs = read_corpus(path / "docs.jsonl.gz")
        if corpus_fingerprint(docs) != meta["corpus"]:  # a large docs file is sealed by samples only
            raise DataError(f"{path}/docs.jsonl.gz is not the corpus this index was built on (edited, reordered or "
                            "cut); rebuild the index")
        self._set_docs(docs, meta["corpus"])
        try:
            self._load_index(path, mmap)
        except RerankError:
            raise  # already says what is wrong (e.g. arrays that do not fit the documents)
        except (OSError, ValueError, RuntimeError, KeyError, EOFError) as e:
            raise DataError(f"{path}: a file of the saved index is missing or damaged ({one_line(e, 200)}); "
                            "rebuild the index") from None
        return self

    @property
    def corpus_fingerprint(self) -> str:
        """The :func:`~rerank.index_cache.corpus_fingerprint` of the indexed documents (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = corpus_fingerprint(self.docs)
        return self._fingerprint

    def document(self, docid: str) -> Doc | None:
        """The indexed document ``docid``, or None."""
        position = self._position.get(docid)
        return None if position is None else self.docs[position]

    def _forget_docs(self) -> None:
        """No indexed documents: as built, and after an index() that did not finish."""
        self._docs: list[Doc] | None = None
        self._texts: list[str] = []
        self._position: dict[str, int] = {}
        self._fingerprint: str | None = None

    def _set_docs(self, docs: list[Doc], fingerprint: str | None = None) -> None:
        check_unique_docids(docs, repr(self))
        self._docs, self._fingerprint = docs, fingerprint
        self._texts = [d.full_text() for d in docs]
        self._position = {d.docid: i for i, d in enumerate(docs)}


@functools.cache
def _built_with(cls: type) -> frozenset[str]:
    """The attributes that keep ``cls``'s constructor arguments, but ``num_results`` and ``progress``
    (how many results it returns and how it reports, which :meth:`Retriever.with_num_results` changes)."""
    kept = getattr(cls, "kept_as", {})
    names = [n for n, p in inspect.signature(cls.__init__).parameters.items()
             if n not in ("self", "num_results", "progress") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return frozenset(kept.get(n, n) for n in names)


def _unstamped(built: Any, mine: Any) -> bool:
    """An encoder identity saved before weights stamps, which is ``mine`` but its ``weights``."""
    return (isinstance(built, dict) and isinstance(mine, dict) and "weights" not in built and "weights" in mine
            and built == {k: v for k, v in mine.items() if k != "weights"})


def check_indexed_on(stage: Stage, dataset: Any) -> None:
    """DataError when a retriever inside ``stage`` holds an index of other documents than ``dataset``'s
    corpus (in any order): its results would be scored as the dataset's."""
    for leaf in leaves(stage):
        if (isinstance(leaf, Retriever) and leaf.is_indexed and leaf.corpus_fingerprint != dataset_fingerprint(dataset)
                and unordered_fingerprint(leaf.docs) != unordered_fingerprint(dataset.corpus())):
            raise DataError(f"{leaf!r} holds an index of {len(leaf.docs)} documents that are not {dataset.name}'s corpus "
                            "(another corpus, part of it, or edited since); index it on this dataset's corpus "
                            f"({type(leaf).__name__}(...).index(dataset.corpus())), or give the system as an expression "
                            "string, which is indexed on each dataset")


def check_same_documents(index: Retriever, docids: Sequence[str], texts: Sequence[str], where: str = "") -> None:
    """DataError when a candidate's text cannot stand for the document ``index`` holds under its docid:
    the stages were indexed on different corpora. A text stands for a document when it is empty, or,
    whitespace aside, the start of the document's title and text, its text or its title (a truncated or
    title-only copy, as PyTerrier's metadata may hold)."""
    for docid, given in zip(docids, texts):
        doc = index.document(docid)
        if doc is None or not given:
            continue
        full = doc.full_text()  # starts with the title: a title-only copy is its start too
        if given in (full, doc.text):  # the usual case, cheaply
            continue
        words = " ".join(given.split())
        if words and not any(" ".join(t.split()).startswith(words) for t in (full, doc.text)):
            raise DataError(f"{index!r}: candidate {docid!r}{where} comes with another text than the index holds for that "
                            f"docid ({given!r:.40} against {full!r:.40}); were the stages indexed on different corpora?")


def check_unique_docids(docs: Sequence[Doc], owner: str) -> None:
    """DataError naming a docid that ``docs`` hold twice (an index maps each docid to one document)."""
    seen: set[str] = set()
    for d in docs:
        if d.docid in seen:
            raise DataError(f"{owner}: the corpus has duplicate docids (e.g. {d.docid!r})")
        seen.add(d.docid)


def as_docs(docs: Iterable[Any] | pd.DataFrame, owner: str) -> list[Doc]:
    """``docs`` as Doc records: Docs, ``(docid, text[, title])`` tuples of strings, dicts with an id and a
    text (BEIR's ``{"_id", "title", "text"}``), or a DataFrame of such columns (:func:`~rerank.types.doc_from`;
    ConfigError for anything else: a dict's keys or a string would be read letter by letter)."""
    if isinstance(docs, pd.DataFrame):
        docs = docs.to_dict("records")
    if isinstance(docs, str | bytes | Mapping) or not isinstance(docs, Iterable):
        raise ConfigError(f"{owner}: index() takes Doc records, (docid, text[, title]) tuples, dicts or a DataFrame, "
                          f"got {type(docs).__name__}")
    return [doc_from(d, owner) for d in docs]


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__name__}"


def check_class(meta: dict[str, Any], cls: type, path: Path) -> None:
    """DataError unless the saved index's header names ``cls``."""
    if meta["class"] != _class_path(cls):
        raise DataError(f"{path} holds a {meta['class']} index, not a {cls.__name__} one")


def _retriever_class(name: str, path: Path) -> type[Retriever]:
    """The retriever class ``"module:Class"`` a saved index names; DataError for anything else. Only a
    registered retriever's module, or one imported already, is imported: an index folder must not make
    rerank run or call arbitrary code."""
    import importlib
    import sys

    from rerank.registry import registered_paths

    module, _, attr = name.partition(":")
    if module not in sys.modules and name not in registered_paths("retriever"):
        raise DataError(f"{path}/params.json names the class {name!r}, which is neither a registered retriever nor "
                        "imported; import or register its module first (rerank --plugin)")
    try:
        klass = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        raise DataError(f"{path}/params.json names the class {name!r}, which cannot be imported") from None
    if not (isinstance(klass, type) and issubclass(klass, Retriever)):
        raise DataError(f"{path}/params.json names {name!r}, which is not a retriever; refusing to load it")
    return klass


def _frame(qid: str, query: str, positions: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"qid": qid, "query": query, "pos": np.asarray(positions, dtype=np.int64),
                         "score": np.asarray(scores, dtype=np.float64)})


def _json_ready(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as they read back from JSON (tuples as lists, paths as text), so that recorded
    settings and computed ones compare equal when they are."""
    return json.loads(json.dumps(settings, default=str))

