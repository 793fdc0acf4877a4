"""The Dataset contract shared by every source (BEIR folders, BRIGHT, ir_datasets)."""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import cached_property, wraps
from typing import Any, TypeVar

from rerank.errors import ConfigError, DataError
from rerank.metrics import MAX_NUMBER, has_relevant
from rerank.types import Doc, Query, Ranking, is_blank, unwritable_id

logger = logging.getLogger("rerank")
R = TypeVar("R", Query, Doc)
F = TypeVar("F", bound=Callable[..., Any])


def memoized(method: F) -> F:
    """Keep what ``method`` returns on its dataset object, per arguments (``functools.cache`` on a method
    would keep every dataset it saw alive). The memo is not pickled: a copy sent to a worker reads anew."""
    @wraps(method)
    def remembered(self: Dataset, *args: Any) -> Any:
        memo = self.__dict__.setdefault("_memo", {})
        key = (method.__name__, *args)
        if key not in memo:
            memo[key] = method(self, *args)
        return memo[key]

    return remembered  # type: ignore[return-value]


def checked_threshold(value: object, where: str) -> int:
    """``value`` as a relevance threshold: an integer from 1 to :data:`~rerank.metrics.MAX_NUMBER` (0 would
    count judged non-relevant documents as relevant); ConfigError naming ``where`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NUMBER:
        raise ConfigError(f"{where}: rel_threshold must be an integer from 1 to {MAX_NUMBER:,}, got {value!r}")
    return value


class Dataset(ABC):
    """Queries, a corpus, relevance judgments and (optionally) shipped first-stage runs.

    ``rel_threshold`` is the lowest relevance that counts as relevant for binary measures
    (MAP, MRR, recall): 2 for TREC-DL, 1 elsewhere. nDCG uses the graded labels.

    A dataset object's content must not change during its life: its fingerprints (what the index cache
    and saved cells key on) are computed once. A subclass whose data changes makes a new object;
    ``load`` reads files edited since into a new one.
    """

    name: str
    rel_threshold: int = 1

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_memo"}

    @abstractmethod
    def queries(self) -> list[Query]: ...

    @abstractmethod
    def corpus(self) -> list[Doc]: ...

    @abstractmethod
    def qrels(self) -> dict[str, dict[str, int]]: ...

    def run_names(self) -> list[str]:
        """Names of shipped first-stage runs (e.g. ``["bm25"]`` for TREC-DL)."""
        return []

    def run(self, name: str = "bm25") -> Ranking:
        """A shipped first-stage run, with query text and document text attached."""
        raise DataError(f"{self.name} ships no runs")

    def exclusions(self) -> dict[str, set[str]]:
        """Per-query docids to drop before evaluation (BRIGHT's excluded ids); usually empty."""
        return {}

    @cached_property
    def docstore(self) -> dict[str, Doc]:
        """Random access to documents by docid."""
        return {d.docid: d for d in self.corpus()}

    def known_docids(self, docids: set[str]) -> set[str] | None:
        """Those of ``docids`` that the corpus has; None when the corpus is not at hand."""
        try:
            store = self.docstore
        except DataError:
            return None
        return {d for d in docids if d in store}

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the corpus content (every docid, title and text): what index caches are keyed by."""
        from rerank.index_cache import corpus_fingerprint

        return corpus_fingerprint(self.corpus())

    @cached_property
    def content_fingerprint(self) -> str:
        """A hash of everything a run, its evaluation and training read: the corpus, queries, qrels, the
        relevance threshold, excluded ids and shipped runs.
        What saved experiment records and training resumes are keyed by, so an edited file (or
        ``dataset.toml``) never reuses an old result. A dataset whose corpus cannot be read (a set that ships
        only queries and qrels) is hashed with the reason instead: runs made elsewhere are still scored on
        it, and whatever reads the corpus fails on its own."""
        try:
            corpus = self.fingerprint
        except DataError as e:
            corpus = f"no corpus: {e}"
        digest = hashlib.sha256(f"{corpus}|rel_threshold={self.rel_threshold}".encode())
        digest.update(json.dumps([tuple(q) for q in self.queries()]).encode("utf-8", "surrogatepass"))
        digest.update(json.dumps(sorted((q, sorted(d.items())) for q, d in self.qrels().items())).encode("utf-8", "surrogatepass"))
        digest.update(json.dumps(sorted((q, sorted(d)) for q, d in self.exclusions().items())).encode("utf-8", "surrogatepass"))
        digest.update(self.runs_fingerprint.encode())
        return digest.hexdigest()

    @cached_property
    def runs_fingerprint(self) -> str:
        """A hash of the shipped runs (``""`` when there are none): what a cache of a stage that may read
        them (``run('bm25')``) adds to the corpus :attr:`fingerprint`."""
        if not self.run_names():
            return ""
        digest = hashlib.sha256()
        for name in self.run_names():
            frame = self.run(name).to_pandas()[["qid", "docid", "score"]]
            digest.update(name.encode() + frame.to_csv(index=False).encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def topics(self) -> Ranking:
        """The queries as a query set, the input of a retrieval pipeline."""
        return Ranking.from_queries(self.queries())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _checked_queries(self, queries: list[Query], source: str | None = None) -> list[Query]:
        """Queries with non-empty string text and unique ids that run and qrels files can hold (exact
        repeats dropped, with a warning).
        Messages name ``source`` (the file read), else the dataset."""
        where = source or self.name
        if not queries:
            raise DataError(f"{where}: no queries")
        unwritable = [q.qid for q in queries if not isinstance(q.qid, str) or unwritable_id(q.qid)]
        if unwritable:
            raise DataError(f"{where}: {len(unwritable)} query ids are not strings, are empty or start or end with "
                            f"whitespace, which run and qrels files cannot hold (e.g. {unwritable[:3]})")
        odd = [q.qid for q in queries if not isinstance(q.text, str)]
        if odd:
            raise DataError(f"{where}: {len(odd)} queries have a text that is not a string (e.g. {odd[:3]})")
        empty = [q.qid for q in queries if is_blank(q.text)]
        if empty:
            raise DataError(f"{where}: {len(empty)} queries have empty text (e.g. {empty[:3]})")
        return unique_records(queries, where, "query")

    def _checked_corpus(self, docs: list[Doc], source: str | None = None) -> list[Doc]:
        """Documents with unique ids (exact repeats dropped, with a warning); documents with neither text
        nor title are kept and counted (a warning when they are over 1% of the corpus, else an info
        line), and a corpus of only such is refused. Messages name ``source``, else the dataset."""
        where = source or self.name
        if not docs:
            raise DataError(f"{where}: the corpus is empty")
        docs = unique_records(docs, where, "document")
        blank = [d.docid for d in docs if is_blank(d.text) and is_blank(d.title)]
        if len(blank) == len(docs):
            raise DataError(f"{where}: none of the {len(docs)} documents has a text or a title (a corpus record "
                            "holds them under 'text' and 'title')")
        if blank:  # a few are a collection's own (Cranfield has 2); more may be text under another key
            logger.log(logging.WARNING if len(blank) > len(docs) / 100 else logging.INFO,
                       "%s: %d of %d documents have neither text nor title (null, missing or empty); they are kept, "
                       "and no retriever can find them by their words (e.g. %s)", where, len(blank), len(docs), blank[:3])
        return docs

    def _checked_qrels(self, qrels: dict[str, dict[str, int]], docids: set[str] | None = None) -> dict[str, dict[str, int]]:
        """Refuse qrels that match none of the queries (or, given ``docids``, none of the documents); warn,
        with counts, about judged queries that cannot be evaluated or can only score 0, and count (an info
        line) relevant judgments of documents the corpus lacks."""
        queries = {q.qid for q in self.queries()}
        orphans = [q for q in qrels if q not in queries]
        if len(orphans) == len(qrels):
            raise DataError(f"{self.name}: none of the {len(qrels)} judged queries is among the {len(queries)} queries, "
                            f"so the qrels and the queries use different ids (qrels ids like {sorted(orphans)[:3]}, query ids like {sorted(queries)[:3]})")
        if orphans:
            logger.warning("%s: %d of %d judged queries are not among its queries, so they are neither evaluated nor "
                           "trained on (e.g. %s)",
                           self.name, len(orphans), len(qrels), sorted(orphans)[:3])
        hollow = [q for q, docs in qrels.items() if q in queries and not has_relevant(docs)]
        if hollow:
            logger.warning("%s: %d judged queries have no relevant document (every grade 0 or less), so no metric "
                           "is defined for them; they are not evaluated (e.g. %s)", self.name, len(hollow), hollow[:3])
        if docids is not None:
            judged = {d for docs in qrels.values() for d in docs}
            if not judged & docids:
                raise DataError(f"{self.name}: none of the {len(judged)} judged documents is in the corpus, so the qrels "
                                f"and the corpus use different ids (qrels ids like {sorted(judged)[:3]}, corpus ids like {sorted(docids)[:3]})")
            relevant = [d for q, docs in qrels.items() if q in queries for d, r in docs.items() if r > 0]
            absent = [d for d in relevant if d not in docids]
            if absent:  # as in trec_eval, they count and are never retrieved (a corpus cut to a pool, as TREC-DL's here)
                logger.info("%s: %d of %d relevant judgments name documents that are not in the corpus; they count as "
                            "relevant and are never retrieved, so recall stays below 1 (e.g. %s)", self.name, len(absent),
                            len(relevant), sorted(set(absent))[:3])
            blind = [q for q, docs in qrels.items() if q in queries and
                     has_relevant(docs) and not has_relevant({d: r for d, r in docs.items() if d in docids})]
            if blind:
                logger.warning("%s: %d judged queries have none of their relevant documents in the corpus, so they "
                               "score 0 for every system (e.g. %s)", self.name, len(blind), blind[:3])
        return qrels


def unique_records(records: list[R], where: str, kind: str) -> list[R]:
    """``records`` (id first) without exact repeats; two different records with one id are refused."""
    seen: dict[str, R] = {}
    repeats = 0
    for r in records:
        first = seen.setdefault(r[0], r)
        if first is r:
            continue
        if first != r:
            raise DataError(f"{where}: two different {kind} records have the id {r[0]!r}; ids must be unique")
        repeats += 1
    if not repeats:
        return records
    logger.warning("%s: %d repeated %s records dropped", where, repeats, kind)
    return list(seen.values())
