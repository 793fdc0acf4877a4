"""The Dataset contract shared by every source (BEIR folders, BRIGHT, ir_datasets)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property

from rerank.errors import DataError
from rerank.types import Doc, Query, Ranking


class Dataset(ABC):
    """Queries, a corpus, relevance judgments and (optionally) shipped first-stage runs.

    ``rel_threshold`` is the lowest relevance that counts as relevant for binary measures
    (MAP, MRR, recall): 2 for TREC-DL, 1 elsewhere. nDCG uses the graded labels.
    """

    name: str
    rel_threshold: int = 1

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

    def topics(self) -> Ranking:
        """The queries as a query set, the input of a retrieval pipeline."""
        return Ranking.from_queries(self.queries())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _checked_queries(self, queries: list[Query]) -> list[Query]:
        if not queries:
            raise DataError(f"{self.name}: no queries")
        empty = [q.qid for q in queries if not q.text.strip()]
        if empty:
            raise DataError(f"{self.name}: {len(empty)} queries have empty text (e.g. {empty[:3]})")
        return queries

    def _checked_corpus(self, docs: list[Doc]) -> list[Doc]:
        if not docs:
            raise DataError(f"{self.name}: the corpus is empty")
        return docs
