"""Core records and the two ranking types every stage speaks.

Vocabulary (used everywhere in rerank): ``qid``, ``query``, ``docid``, ``text``, ``title``,
``score``, ``rank`` (1-based, as in TREC run files).

* :class:`Ranking` holds scored candidates for many queries (a DataFrame underneath). A Ranking
  without ``docid`` is a query set: the input of a first-stage retriever.
* :class:`Candidates` is one query's candidate list, the unit reranker families work on.
* :class:`RankedResults` is what ``pipe.search("text")`` and ``reranker.rerank(query, docs)``
  return: a small list of :class:`Result` records for application code.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from rerank.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

QUERY_COLUMNS = ("qid", "query")
RANK_COLUMNS = ("qid", "query", "docid", "score", "rank")


class Query(NamedTuple):
    qid: str
    text: str


class Doc(NamedTuple):
    docid: str
    text: str
    title: str = ""

    def full_text(self) -> str:
        """Title and text joined, the usual input of BEIR-style retrievers."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


def unwritable_id(value: str) -> bool:
    """An id that run and qrels files cannot hold as written: empty, or with whitespace around it."""
    return not value.strip() or value != value.strip()


def checked_doc(doc: Doc, where: str) -> Doc:
    """``doc`` when its docid, text and title are strings (else ConfigError naming ``where``) of real
    characters, with a docid that run and qrels files can hold: not empty, no whitespace around it
    (else DataError)."""
    if not (type(doc.docid) is str and type(doc.text) is str and type(doc.title) is str):  # the common case skips this
        for name, value in zip(Doc._fields, doc):
            if not isinstance(value, str):
                raise ConfigError(f"{where}: a document's {name} must be a string, got {type(value).__name__} {value!r:.60} "
                                  f"(document {doc.docid!r:.40})")
    if unwritable_id(doc.docid):
        raise DataError(f"{where}: docid {doc.docid!r:.40} is empty or starts or ends with whitespace, which run and "
                        "qrels files cannot hold")
    bad = next((name for name, value in zip(Doc._fields, doc) if half_surrogate(value)), None)
    if bad is not None:
        raise DataError(f"{where}: the {bad} of document {doc.docid!r:.40} holds half of a surrogate pair, which is no character")
    return doc


DOC_ID_KEYS, DOC_TEXT_KEYS = ("_id", "docid", "docno", "id"), ("text", "contents")
"""The keys a document given as a dict may hold its id and text under (BEIR, rerank, PyTerrier, pyserini)."""


def doc_from(item: Any, owner: str) -> Doc:
    """A checked :class:`Doc` from a Doc, a ``(docid, text[, title])`` tuple of strings, or a dict with one
    id (``_id``, ``docid``, ``docno`` or ``id``; a whole number becomes its digits), one text (``text``, or
    pyserini's ``contents``) and optionally a ``title`` (missing: None, or NaN in a DataFrame); ConfigError
    naming ``owner`` for anything else."""
    if isinstance(item, Mapping):
        ids, texts = [k for k in DOC_ID_KEYS if k in item], [k for k in DOC_TEXT_KEYS if k in item]
        if len(ids) != 1 or len(texts) != 1:
            raise ConfigError(f"{owner}: a document dict needs one id key ({', '.join(DOC_ID_KEYS)}) and one text key "
                              f"({', '.join(DOC_TEXT_KEYS)}); got keys {sorted(map(str, item))[:8]}")
        docid = item[ids[0]]
        docid = str(docid) if isinstance(docid, int | np.integer) and not isinstance(docid, bool) else docid
        title = item.get("title")
        item = Doc(docid, item[texts[0]], "" if title is None or (isinstance(title, float) and title != title) else title)
    elif not isinstance(item, Doc):
        if not (isinstance(item, tuple | list) and 2 <= len(item) <= 3 and all(isinstance(x, str) for x in item)):
            raise ConfigError(f"{owner}: documents must be Doc records, (docid, text[, title]) tuples of strings or "
                              f"dicts with an id and a text, got {item!r:.60}")
        item = Doc(*item)
    return checked_doc(item, owner)


def is_blank(text: str) -> bool:
    """Whether ``text`` has no visible character: only whitespace, control (Cc) and format (Cf)
    characters such as NUL, the zero-width space or a byte-order mark. What "empty" means for a query
    or a document everywhere (data files, stages, training, the service)."""
    return all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text)


def half_surrogate(text: str) -> bool:
    """Whether ``text`` holds half of a surrogate pair: no character, and no UTF-8 for it."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def positive_count(k: Any, what: str) -> int:
    """``k`` as an int when it is a whole number >= 1 (not a bool), else ConfigError naming ``what``."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"{what} must be a positive integer, got {k!r}")
    return int(k)


class Qrel(NamedTuple):
    qid: str
    docid: str
    relevance: int


class Result(NamedTuple):
    docid: str
    score: float
    rank: int
    text: str = ""
    title: str = ""


@dataclass(frozen=True)
class RankedResults:
    """Ranked results of one query: iterate, index, ``top_k(k)``, ``get(docid)``.

    >>> r = RankedResults("q", [Result("d1", 2.0, 1), Result("d2", 1.0, 2)])
    >>> r.top_k(1)[0].docid, r.get("d2").rank, len(r)
    ('d1', 2, 2)
    """

    query: str
    results: list[Result]
    info: Mapping[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Result]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> Result:
        return self.results[i]

    def top_k(self, k: int) -> list[Result]:
        return self.results[:positive_count(k, "top_k's k")]

    def get(self, docid: str) -> Result:
        for r in self.results:
            if r.docid == docid:
                return r
        raise KeyError(f"docid {docid!r} is not among the {len(self)} results")

    @property
    def docids(self) -> list[str]:
        return [r.docid for r in self.results]

    def to_pandas(self) -> pd.DataFrame:
        """One row per result: ``query``, ``docid``, ``score``, ``rank``, ``text``, ``title``."""
        return pd.DataFrame([r._asdict() for r in self.results], columns=list(Result._fields)).assign(query=self.query)[
            ["query", *Result._fields]]


@dataclass(frozen=True)
class Candidates:
    """One query's candidates in their current order (best first).

    ``scores`` are the scores of the stage that produced the list (first-stage scores for a
    reranker). ``info`` carries per-query notes of a stage (reasoning text, parse repairs, ...).
    """

    qid: str
    query: str
    docids: list[str]
    texts: list[str]
    scores: np.ndarray
    titles: list[str] | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.docids)
        if len(self.texts) != n or len(self.scores) != n or (self.titles is not None and len(self.titles) != n):
            raise ValueError(f"query {self.qid!r}: docids, texts, scores (and titles) must have equal lengths")

    def __len__(self) -> int:
        return len(self.docids)

    def with_scores(self, scores: Sequence[float] | np.ndarray, **info: Any) -> Candidates:
        """New candidates sorted by ``scores`` (descending; ties keep the current order); numbers only
        (:func:`number_array`: text, booleans and None are refused)."""
        scores = number_array(scores)
        if scores.shape != (len(self),):
            raise ValueError(f"expected {len(self)} scores, got shape {scores.shape}")
        order = np.argsort(-scores, kind="stable")
        return self._take(order, scores[order], info)

    def reordered(self, order: Sequence[int], **info: Any) -> Candidates:
        """New candidates in ``order`` (indices into the current list, a full permutation).

        Order-only paradigms (listwise, pairwise, setwise) use this: the score falls with the
        new position, so the result stays score-sorted.
        """
        given = np.asarray(order)
        if given.size and given.dtype.kind not in "iu":  # int64 would cut 2.7 to 2 and read '2' as 2
            raise ValueError(f"order must be positions (whole numbers) of range({len(self)}), got {given.tolist()}")
        order = given.astype(np.int64)
        if sorted(order.tolist()) != list(range(len(self))):
            raise ValueError(f"order must be a permutation of range({len(self)}), got {order.tolist()}")
        return self._take(order, np.arange(len(self), 0, -1, dtype=np.float64), info)

    def non_finite(self) -> np.ndarray:
        """Positions whose score is NaN or infinite."""
        return np.flatnonzero(~np.isfinite(self.scores))

    def top(self, k: int) -> Candidates:
        return self._take(np.arange(min(k, len(self))), self.scores[:k], {})

    def _take(self, order: np.ndarray, scores: np.ndarray, info: Mapping[str, Any]) -> Candidates:
        return replace(
            self,
            docids=[self.docids[i] for i in order],
            texts=[self.texts[i] for i in order],
            titles=None if self.titles is None else [self.titles[i] for i in order],
            scores=np.asarray(scores, dtype=np.float64),
            info={**self.info, **info},
        )

    def to_results(self) -> RankedResults:
        titles = self.titles or [""] * len(self)
        return RankedResults(
            self.query,
            [Result(d, float(s), i + 1, t, ti) for i, (d, s, t, ti) in enumerate(zip(self.docids, self.scores, self.texts, titles))],
            dict(self.info),
        )


class Ranking:
    """Scored candidates for many queries, backed by a DataFrame.

    Columns: ``qid``, ``query``, ``docid``, ``score``, ``rank`` and optionally ``text``, ``title``
    and stage-specific extras. A Ranking with only ``qid`` and ``query`` is a query set. Every
    method returns a new Ranking; the underlying frame is never modified in place. A Ranking made by
    rerankers keeps their per-query notes (``Candidates.info``: parse repairs, truncations) beside
    the frame: :meth:`per_query` and :meth:`results` give them back, ``top``, ``select`` and
    ``assign`` keep them, :meth:`to_pandas` has no room for them.

    >>> r = Ranking.from_records([("q1", "cats", "d1", 0.5), ("q1", "cats", "d2", 0.9)])
    >>> r.top(1).to_pandas()[["qid", "docid", "rank"]].values.tolist()
    [['q1', 'd2', 1]]
    """

    def __init__(self, frame: pd.DataFrame):
        if not isinstance(frame, pd.DataFrame):
            raise ConfigError(f"a Ranking wraps a DataFrame, got {type(frame).__name__}; see Ranking.from_records, from_run, from_queries")
        if frame.columns.duplicated().any():  # from_pandas names doc_id and docno alike docid
            raise DataError(f"a Ranking's columns must have distinct names; {sorted(set(frame.columns[frame.columns.duplicated()]))} "
                            f"repeat (columns: {list(frame.columns)}); keep one of each")
        if not frame.index.is_unique:  # rows are picked by label below (a frame concatenated without ignore_index)
            frame = frame.reset_index(drop=True)
        ranked = "docid" in frame.columns
        if ranked and "docno" in frame.columns:  # PyTerrier's results: its docid would be read as the document's id
            raise DataError("the frame has both docid and docno columns, two ids for each document (in PyTerrier's results "
                            "docid is the index's internal number, docno the document's id); drop the one that is not "
                            "the document's id: Ranking.from_pandas(frame.drop(columns='docid'))")
        if not ranked and "docno" in frame.columns:  # PyTerrier's name: would be read as a query set, its documents lost
            raise DataError("a Ranking's documents are in a docid column; this frame has PyTerrier's docno: "
                            "read it with Ranking.from_pandas, which renames foreign columns")
        missing = [c for c in (*QUERY_COLUMNS, *(("score",) if ranked else ())) if c not in frame.columns]
        if missing:
            raise DataError(f"a Ranking needs columns {list(QUERY_COLUMNS)} (a query set), and docid and score (a ranking); "
                            f"missing {missing} (columns: {list(frame.columns)})")
        ids = [c for c in ("qid", "query", "docid") if c in frame.columns]
        frame = _one_text_per_query(frame.assign(**{c: _as_strings(frame[c], c) for c in ids}))
        if ranked:
            frame = _sorted(_checked(frame.assign(score=as_scores(frame["score"]))))
        self._frame = frame.reset_index(drop=True)
        self._info: dict[str, Mapping[str, Any]] = {}

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_queries(cls, queries: Iterable[Query | tuple[str, str]] | Mapping[str, str]) -> Ranking:
        """From ``{qid: text}`` or ``Query`` records (``(qid, text)`` pairs)."""
        items = _rows(queries.items() if isinstance(queries, Mapping) else queries, 2,
                      "Ranking.from_queries takes {qid: text}, Query records or (qid, text) pairs")
        return cls(_table(items, list(QUERY_COLUMNS)))

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, str, str, float]]) -> Ranking:
        """From ``(qid, query, docid, score)`` tuples; ranks are assigned by score."""
        records = _rows(records, 4, "Ranking.from_records takes (qid, query, docid, score) tuples")
        return cls(_table(records, ["qid", "query", "docid", "score"]))

    @classmethod
    def from_pandas(cls, df: pd.DataFrame) -> Ranking:
        """From a DataFrame in rerank's vocabulary or a foreign one (see :mod:`rerank.io`). A frame without
        documents whose query text is in ``text`` (BEIR's and Hugging Face's query sets) is a query set."""
        from rerank.io import normalize_columns

        frame = normalize_columns(df)
        if {"qid", "docid", "score", "rank"} <= set(frame.columns) and not frame.empty:
            frame = _by_given_rank(frame)
        if "query" not in frame.columns and "docid" not in frame.columns and "text" in frame.columns:
            frame = frame.rename(columns={"text": "query", **({"_id": "qid"} if "qid" not in frame.columns else {})})
        if "query" not in frame.columns:
            frame = frame.assign(query="")
        return cls(frame)

    @classmethod
    def from_candidates(cls, cands: Iterable[Candidates]) -> Ranking:
        parts, info = [], {}
        for c in cands:
            if c.info:
                info[c.qid] = dict(c.info)
            part = {"qid": c.qid, "query": c.query, "docid": c.docids, "score": c.scores, "text": c.texts}
            if c.titles is not None:
                part["title"] = c.titles
            parts.append(pd.DataFrame(part))
        if not parts:
            return cls.empty()
        out = cls(pd.concat(parts, ignore_index=True))
        out._info = info
        return out

    @classmethod
    def from_run(cls, run: Any, queries: Any = None) -> Ranking:
        """From a ranx ``Run`` (or its ``{qid: {docid: score}}`` dict), with the texts of ``queries``
        (``{qid: text}``, ``Query`` records or ``(qid, text)`` pairs, or a query set: a dataset's ``queries()``
        or ``topics()``)."""
        data = run.to_dict() if hasattr(run, "to_dict") else run
        if not (isinstance(data, Mapping) and all(isinstance(docs, Mapping) for docs in data.values())):
            raise ConfigError(f"Ranking.from_run takes a ranx Run or a {{qid: {{docid: score}}}} dict, got {type(run).__name__}: {run!r:.60}")
        texts = {} if queries is None else queries.queries() if isinstance(queries, Ranking) else cls.from_queries(queries).queries()
        rows = [(q, texts.get(str(q), ""), d, s) for q, docs in data.items() for d, s in docs.items()]
        return cls.from_records(rows)

    @classmethod
    def read_trec(cls, path: str | Path, queries: Any = None, docs: Any = None) -> Ranking:
        """A TREC run file; with ``queries`` (as :meth:`from_run` takes them) and ``docs`` (see :meth:`with_texts`),
        ready for a reranker."""
        from rerank.io import read_trec_run

        ranking = cls.from_run(read_trec_run(path), queries)
        return ranking if docs is None else ranking.with_texts(docs)

    @classmethod
    def concat(cls, parts: Sequence[Ranking]) -> Ranking:
        """The rows of rankings of different queries (shards of one ranking) as one, with their per-query notes."""
        out = cls(pd.concat([p._frame for p in parts], ignore_index=True))
        out._info = {q: info for p in parts for q, info in p._info.items()}
        return out

    @classmethod
    def empty(cls) -> Ranking:
        return cls(pd.DataFrame({c: pd.Series(dtype=object if c != "score" else np.float64) for c in RANK_COLUMNS[:-1]}))

    # -- views --------------------------------------------------------------------------------
    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self._frame.columns)

    @property
    def is_query_set(self) -> bool:
        return "docid" not in self._frame.columns

    def __len__(self) -> int:
        return len(self._frame)

    def __repr__(self) -> str:
        queries = f"{self._frame['qid'].nunique()} queries"
        return f"Ranking({queries})" if self.is_query_set else f"Ranking({queries}, {len(self)} rows)"

    def to_pandas(self) -> pd.DataFrame:
        return self._frame.copy()

    def queries(self) -> dict[str, str]:
        """``{qid: query}`` in order of first appearance."""
        return dict(zip(self._frame["qid"], self._frame["query"]))

    def query_set(self) -> Ranking:
        return Ranking(self._frame[list(QUERY_COLUMNS)].drop_duplicates("qid"))

    def to_dict(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for q, d, s in zip(self._frame["qid"], self._frame["docid"], self._frame["score"]):
            out.setdefault(q, {})[d] = float(s)
        return out

    def to_run(self, name: str | None = None) -> Any:
        """A ranx ``Run`` (ids as str, scores as float64)."""
        from ranx import Run

        return Run(self.to_dict(), name=name)

    def write_trec(self, path: str | Path, tag: str = "rerank") -> None:
        from rerank.io import write_trec_run

        write_trec_run(self._frame, path, tag)

    def per_query(self) -> Iterator[Candidates]:
        """One :class:`Candidates` per query, in rank order."""
        has_text, has_title = "text" in self._frame.columns, "title" in self._frame.columns
        for qid, g in self._frame.groupby("qid", sort=False):
            yield Candidates(
                qid=str(qid),
                query=str(g["query"].iat[0]),
                docids=g["docid"].tolist(),
                texts=_texts(g, str(qid)) if has_text else [""] * len(g),
                scores=g["score"].to_numpy(np.float64),
                titles=g["title"].fillna("").astype(str).tolist() if has_title else None,
                info=self._info.get(str(qid), {}),
            )

    def results(self, qid: str) -> RankedResults:
        """One query's results (``qid`` as given to the stage; a whole number is its digits)."""
        qid = str(qid)
        for c in self.per_query():
            if c.qid == qid:
                return c.to_results()
        raise KeyError(f"query {qid!r} is not in this ranking")

    # -- transformations ----------------------------------------------------------------------
    def top(self, k: int) -> Ranking:
        """The first ``k`` candidates of each query."""
        if self.is_query_set:
            raise ConfigError("top(k) cuts ranked documents; this Ranking is a query set (run a retriever on it first)")
        return self._derived(self._frame[self._frame["rank"] <= positive_count(k, "top's k")])

    def select(self, qids: Iterable[str]) -> Ranking:
        """The rows of the queries ``qids`` (a collection of ids; one id is ``[qid]``). An id with no
        rows gives none, as a query a retriever found nothing for does: compare with :meth:`queries`."""
        if isinstance(qids, str | bytes) or not isinstance(qids, Iterable):
            raise ConfigError(f"select takes a collection of query ids, got {type(qids).__name__} {qids!r:.40}"
                              + ("; for one query give [qid]" if isinstance(qids, str) else ""))
        keep = set(map(str, qids))
        return self._derived(self._frame[self._frame["qid"].isin(keep)])

    def assign(self, **columns: Any) -> Ranking:
        return self._derived(self._frame.assign(**columns))

    def with_texts(self, docs: Any) -> Ranking:
        """This ranking with each document's ``text`` (its title and text, as retrievers give them) and
        ``title`` from ``docs``: a dataset (its ``docstore``) or a mapping docid -> :class:`Doc` or text.
        What a run read from a file needs before a reranker (``Ranking.read_trec(path, queries, docs)``).
        DataError naming a docid that ``docs`` lacks."""
        store = getattr(docs, "docstore", docs)
        if not isinstance(store, Mapping):
            raise ConfigError(f"texts come from a dataset or a mapping docid -> Doc or text, got {type(docs).__name__}")
        if self.is_query_set:
            raise ConfigError("a query set has no documents to give texts to")
        docids = self._frame["docid"].tolist()
        missing = sorted({d for d in docids if d not in store})
        if missing:
            raise DataError(f"{len(missing)} docid(s) of the ranking are not among the documents given for their "
                            f"texts (e.g. {missing[:3]})")
        found = [store[d] if isinstance(store[d], Doc) else Doc(d, store[d]) for d in docids]
        odd = next((d for d in found if not isinstance(d.text, str) or not isinstance(d.title, str)), None)
        if odd is not None:
            raise DataError(f"document {odd.docid!r} has no text: {odd.text!r:.60}")
        return self.assign(text=[d.full_text() for d in found], title=[d.title for d in found])

    def with_columns_of(self, source: Ranking) -> Ranking:
        """This ranking with the columns of ``source`` it lacks (not ``rank``), joined by (qid, docid):
        a stage that builds its output anew keeps its input's extra columns (a ``url``), as a cut-off does."""
        extra = [c for c in source.columns if c not in self.columns and c != "rank"]
        if not extra or self.is_query_set or source.is_query_set:
            return self
        return self._derived(self._frame.merge(source._frame[["qid", "docid", *extra]], on=["qid", "docid"], how="left"))

    def _derived(self, frame: pd.DataFrame) -> Ranking:
        """A Ranking of ``frame`` (rows of this one) with the per-query notes of the queries it keeps."""
        out = Ranking(frame)
        if self._info:
            kept = set(out._frame["qid"])
            out._info = {q: info for q, info in self._info.items() if q in kept}
        return out


def _texts(group: pd.DataFrame, qid: str) -> list[str]:
    """The ``text`` of one query's rows; a row without one (a document a fused ranking took from a run
    without texts) is refused."""
    texts = group["text"].tolist()
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise DataError(f"query {qid!r}, document {group['docid'].iat[bad]!r} has no text ({texts[bad]!r}); "
                        "give every ranking texts (a fused run without texts leaves its documents without)")
    return texts


def _one_text_per_query(frame: pd.DataFrame) -> pd.DataFrame:
    """Refuse a qid given two query texts; in a query set, drop exact repeats (with a warning that counts them)."""
    pairs = frame[["qid", "query"]].drop_duplicates()
    clash = pairs["qid"].duplicated(keep=False)
    if clash.any():
        qid = pairs.loc[clash, "qid"].iloc[0]
        texts = pairs.loc[pairs["qid"] == qid, "query"].tolist()[:2]
        raise DataError(f"a Ranking gives each query one text; {clash.sum()} (qid, text) pairs share a qid "
                        f"(e.g. query {qid!r}: {texts[0]!r} and {texts[1]!r})")
    if "docid" in frame.columns or len(pairs) == len(frame):
        return frame
    logger.warning("query set: %d repeated queries dropped", len(frame) - len(pairs))
    return frame.loc[pairs.index]


def _by_given_rank(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame's rows in each query's given ``rank`` order, which then breaks ties of equal scores (ranks are
    read as :func:`as_scores` reads scores: numbers or plain-number text, no booleans); ranks that disagree
    with the scores (a later rank scored higher) are counted in a warning: scores decide. A frame the
    constructor refuses (repeated columns, missing qids) is left to it, to name the problem."""
    if frame.columns.duplicated().any() or frame["qid"].isna().any():
        return frame
    ranks = as_scores(frame["rank"], "a Ranking's rank column").to_numpy()  # read as scores are: True is no rank 1
    if not np.isfinite(ranks).all():
        raise DataError(f"a Ranking's rank column must hold finite numbers; {int((~np.isfinite(ranks)).sum())} rows do "
                        "not (drop the column to rank by score alone)")
    qids = frame["qid"].astype(str).to_numpy()  # as the constructor will have them: 7 and "7" are one query
    order = np.lexsort((np.arange(len(frame)), ranks, pd.factorize(qids)[0]))  # queries in first-appearance order
    frame, qids = frame.iloc[order], qids[order]
    higher = as_scores(frame["score"]).groupby(qids, sort=False).diff().to_numpy() > 0
    if higher.any():
        logger.warning("%d queries have a rank column that disagrees with their scores (a later rank scored higher); "
                       "they are ranked by score, equal scores in the given rank order", len(set(qids[higher])))
    return frame


def as_scores(values: pd.Series, what: str = "a Ranking's scores") -> pd.Series:
    """The ``score`` column as floats: numbers, or text that reads as a plain decimal number; anything
    else (booleans, ``1_000``, other scripts' digits, missing values) is refused, as in run files, in a
    message about ``what``."""
    from rerank.io import PLAIN_NUMBER, plain_float

    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype(np.float64)
    out = []
    for value in values:
        try:
            if isinstance(value, bool | np.bool_) or value is None:
                raise TypeError
            out.append(plain_float(value) if isinstance(value, str) else float(value))
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"{what} must be numbers; {value!r:.40} is not ({PLAIN_NUMBER})") from None
    return pd.Series(out, index=values.index, dtype=np.float64)


def number_array(values: Any) -> np.ndarray:
    """``values`` (scores a plugin returned: an array, a list or tuple, perhaps of columns) as a float
    array; :class:`NotNumbers` when they hold None, booleans, text, times or complex numbers, which numpy
    would read as NaN, 1.0, the number written, a count or the real part; what ``np.asarray`` raises
    for anything else it cannot read."""
    if not_numbers(values):
        raise NotNumbers(f"{values!r:.80} are not numbers")
    return np.asarray(values, dtype=np.float64)


class NotNumbers(TypeError):
    """Scores that hold something other than real numbers (see :func:`number_array`)."""


def not_numbers(values: Any) -> bool:
    """Whether ``values`` hold None, a boolean, text, a time or a complex number (NumPy or torch)."""
    dtype = getattr(values, "dtype", None)
    kind = getattr(dtype, "kind", None)  # a numpy array or scalar
    if kind is not None:
        return kind in "bSUmMc" or (kind == "O" and any(not_numbers(v) for v in np.ravel(values)))
    if dtype is not None:  # a torch tensor: its dtype has no kind
        return str(dtype) == "torch.bool" or getattr(values, "is_complex", lambda: False)()
    if isinstance(values, list | tuple):
        return any(not_numbers(v) for v in values)
    return values is None or isinstance(values, bool | str | bytes | complex)


def _rows(items: Iterable[Any], width: int, takes: str) -> list[Any]:
    """``items`` as a list of rows of ``width`` values each; ConfigError starting with ``takes`` otherwise
    (a string or a mapping would be read as its letters or keys; a number is no rows)."""
    if not isinstance(items, Iterable):
        raise ConfigError(f"{takes}, got {type(items).__name__}: {items!r:.80}")
    rows = list(items)
    odd = next((r for r in rows if isinstance(r, str | bytes | Mapping) or not (hasattr(r, "__len__") and len(r) == width)), None)
    if odd is not None:
        raise ConfigError(f"{takes}, got {odd!r:.80}")
    return rows


def _table(rows: list, columns: list[str]) -> pd.DataFrame:
    """A frame of ``rows``; DataError naming the value that holds half of a surrogate pair (no character,
    no UTF-8)."""
    try:
        return pd.DataFrame(rows, columns=columns)
    except UnicodeEncodeError:
        bad = next(((dict(zip(columns, r)), c) for r in rows for c, v in zip(columns, r) if isinstance(v, str) and half_surrogate(v)), None)
        if bad is None:
            raise
        raise DataError(f"the {bad[1]} {bad[0][bad[1]]!r:.60} (in {bad[0]!r:.120}) holds half of a surrogate pair, "
                        "which is no character") from None


def _as_strings(values: pd.Series, column: str) -> pd.Series:
    """A ``qid``, ``query`` or ``docid`` column as strings. Whole numbers become their digits; a missing
    value, a float (an id read as ``1.0`` would never match its qrels' ``1``) or any other type is refused."""
    kind = pd.api.types.infer_dtype(values, skipna=False)
    if kind in ("string", "empty") and not values.isna().any():  # pandas' str dtype holds NaN for a missing value
        return values
    if kind != "integer":
        good = values.map(lambda v: isinstance(v, (str, int, np.integer)) and not isinstance(v, bool), na_action=None)
        good = good.to_numpy(bool) & ~values.isna().to_numpy()
        if not good.all():
            first = values[~good].iloc[0]
            first = first.item() if isinstance(first, np.generic) else first
            what = "have none" if pd.isna(first) else f"hold a {type(first).__name__} (e.g. {first!r})"
            hint = "; read ids as text (pandas: dtype=str)" if isinstance(first, float) and not pd.isna(first) else ""
            raise DataError(f"a Ranking's {column} column must hold text or whole numbers; {int((~good).sum())} rows {what}{hint}")
    return values.astype(str)


def _checked(frame: pd.DataFrame) -> pd.DataFrame:
    """Refuse what would make a ranking ambiguous: a score that is not a finite number, a document twice for one query."""
    bad = ~np.isfinite(frame["score"].to_numpy())
    if bad.any():
        row = frame[bad].iloc[0]
        raise DataError(f"a Ranking needs finite scores; {int(bad.sum())} rows have none "
                        f"(e.g. query {row['qid']!r}, document {row['docid']!r}: {row['score']})")
    twice = frame.duplicated(["qid", "docid"])
    if twice.any():
        row = frame[twice].iloc[0]
        raise DataError(f"a Ranking holds each document once per query; {int(twice.sum())} rows repeat a (qid, docid) pair "
                        f"(e.g. query {row['qid']!r}, document {row['docid']!r})")
    return frame


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort by query (first-appearance order) then score descending; recompute 1-based ranks."""
    if frame.empty:
        return frame.assign(rank=pd.Series(dtype=np.int64))
    order = np.lexsort((np.arange(len(frame)), -frame["score"].to_numpy(), pd.factorize(frame["qid"])[0]))
    frame = frame.iloc[order]
    return frame.assign(rank=frame.groupby("qid", sort=False).cumcount().to_numpy() + 1)
