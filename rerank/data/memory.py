"""A dataset made in Python: your own documents, queries and judgments, evaluated like any other.

>>> ds = InMemoryDataset("mine", [("d1", "cats purr"), ("d2", "dogs bark")], {"q1": "cats"}, [("q1", "d1", 1)])
>>> len(ds.corpus()), ds.qrels()
(2, {'q1': {'d1': 1}})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from rerank.data.base import Dataset, checked_threshold
from rerank.errors import ConfigError, DataError
from rerank.io import relevance_grade
from rerank.types import Doc, Query, doc_from, unwritable_id

QRELS_COLUMNS = {"qid": ("qid", "query_id", "query-id", "q_id"), "docid": ("docid", "docno", "doc_id", "corpus-id"),
                 "relevance": ("relevance", "label", "score", "grade")}
"""The columns a qrels DataFrame may name its query id, document id and grade with (rerank, PyTerrier, ir_datasets, BEIR,
ranx's ``Qrels.to_dataframe()``)."""


class InMemoryDataset(Dataset):
    """Documents, queries and qrels given as Python objects, checked as a dataset's files are.

    ``corpus``: what :meth:`Retriever.index` takes (Docs, tuples, dicts, a DataFrame); ``queries``:
    ``{qid: text}``, ``Query`` records or ``(qid, text)`` pairs; ``qrels``: see :func:`as_qrels`. The
    objects are copied, so changing them afterwards does not change the dataset.
    """

    def __init__(self, name: str, corpus: Any, queries: Any, qrels: Any, rel_threshold: int = 1):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"a dataset needs a name, got {name!r}")
        self.name, self.rel_threshold = name, checked_threshold(rel_threshold, name)
        self._corpus = self._checked_corpus([doc_from(d, f"{name} corpus") for d in _rows(corpus, "corpus")])
        self._queries = self._checked_queries(_queries(queries, name))
        self._qrels = self._checked_qrels(as_qrels(qrels, f"{name} qrels"), {d.docid for d in self._corpus})

    def queries(self) -> list[Query]:
        return list(self._queries)

    def corpus(self) -> list[Doc]:
        return list(self._corpus)

    def qrels(self) -> dict[str, dict[str, int]]:
        return {q: dict(docs) for q, docs in self._qrels.items()}


def as_qrels(qrels: Any, where: str = "qrels") -> dict[str, dict[str, int]]:
    """Judgments as ``{qid: {docid: grade}}`` from that mapping, ``(qid, docid, grade)`` tuples or
    :class:`~rerank.types.Qrel` records, a DataFrame (:data:`QRELS_COLUMNS`) or a ranx ``Qrels``. Grades
    are whole numbers (:func:`rerank.io.relevance_grade`); a pair judged twice with two grades is refused."""
    if hasattr(qrels, "to_dict") and not isinstance(qrels, pd.DataFrame | Mapping):  # a ranx Qrels
        qrels = qrels.to_dict()
    if isinstance(qrels, Mapping):
        if not all(isinstance(docs, Mapping) for docs in qrels.values()):
            raise ConfigError(f"{where}: a qrels mapping is {{qid: {{docid: relevance}}}}")
        rows: Iterable[Any] = ((q, d, r) for q, docs in qrels.items() for d, r in docs.items())
    elif isinstance(qrels, pd.DataFrame):
        rows = qrels[[_column(qrels, key, where) for key in QRELS_COLUMNS]].itertuples(index=False, name=None)
    elif isinstance(qrels, str | bytes) or not isinstance(qrels, Iterable):
        raise ConfigError(f"{where} must be {{qid: {{docid: relevance}}}}, (qid, docid, relevance) tuples or Qrel "
                          f"records, a DataFrame or a ranx Qrels, got {type(qrels).__name__}")
    else:
        rows = list(qrels)
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        if not (isinstance(row, tuple | list) and len(row) == 3) or any(isinstance(x, bool) or not isinstance(x, str | int | np.integer)
                                                                          for x in row[:2]):
            raise ConfigError(f"{where}: a judgment is (qid, docid, relevance) with string ids, got {row!r:.60}")
        qid, docid, grade = str(row[0]), str(row[1]), relevance_grade(row[2], f"{where} ({row[0]!r}, {row[1]!r})")
        for kind, value in (("qid", qid), ("docid", docid)):
            if unwritable_id(value):
                raise DataError(f"{where}: {kind} {value!r:.40} is empty or starts or ends with whitespace, which qrels "
                                "and run files cannot hold (it would match nothing as written); strip it")
        if out.setdefault(qid, {}).setdefault(docid, grade) != grade:
            raise ConfigError(f"{where}: ({qid!r}, {docid!r}) is judged twice, {out[qid][docid]} and {grade}")
    return out


def _column(frame: pd.DataFrame, key: str, where: str) -> str:
    found = [c for c in QRELS_COLUMNS[key] if c in frame.columns]
    if len(found) != 1:
        raise ConfigError(f"{where}: a qrels DataFrame needs one {key} column ({', '.join(QRELS_COLUMNS[key])}); "
                          f"columns: {list(frame.columns)}")
    return found[0]


def _rows(items: Any, what: str) -> list[Any]:
    """A list of the records of ``items`` (a DataFrame's rows as dicts); ConfigError for a string or a non-iterable."""
    if isinstance(items, pd.DataFrame):
        return items.to_dict("records")
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
        raise ConfigError(f"{what} must be a list of records or a DataFrame, got {type(items).__name__}")
    return list(items)


def _queries(queries: Any, name: str) -> list[Query]:
    """``{qid: text}``, Query records, ``(qid, text)`` pairs or a DataFrame with ``qid`` and ``query`` (or ``text``)."""
    if isinstance(queries, pd.DataFrame):
        text = [c for c in ("query", "text") if c in queries.columns]
        if "qid" not in queries.columns or len(text) != 1:
            raise ConfigError(f"{name} queries: a DataFrame needs a qid column and one of query, text; columns: {list(queries.columns)}")
        queries = list(queries[["qid", text[0]]].itertuples(index=False, name=None))
    items = queries.items() if isinstance(queries, Mapping) else _rows(queries, "queries")
    out = []
    for q in items:
        if not (isinstance(q, tuple | list) and len(q) == 2 and isinstance(q[0], str | int) and not isinstance(q[0], bool)):
            raise ConfigError(f"{name} queries: a query is {{qid: text}}, a Query record or a (qid, text) pair, got {q!r:.60}")
        out.append(Query(str(q[0]), q[1]))
    return out
