"""A dataset's shipped first-stage run (e.g. TREC-DL's BM25 top-100) as a retriever stage."""

from __future__ import annotations

import logging
from typing import Any

from rerank.data.base import Dataset
from rerank.errors import ConfigError, DataError
from rerank.stage import Stage
from rerank.types import Ranking

logger = logging.getLogger("rerank")


class RunRetriever(Stage):
    """Returns the precomputed run ``name`` of a dataset for the queries it is given.

    >>> from rerank.data import load
    >>> RunRetriever("bm25", dataset=load("trec-dl-2019"))(load("trec-dl-2019").topics())
    Ranking(43 queries, 4300 rows)
    """

    def __init__(self, name: str = "bm25", dataset: Any = None):
        if dataset is not None and not isinstance(dataset, Dataset):
            raise ConfigError(f"run(dataset=...) takes a Dataset, got {type(dataset).__name__} {dataset!r:.40}; in an "
                              "expression the pipeline's dataset is bound by itself")
        self.name, self.dataset = name, dataset
        self._ranking: Ranking | None = None

    def bind(self, dataset: Any) -> RunRetriever:
        return RunRetriever(self.name, dataset)

    def params(self) -> dict:
        return {"name": self.name, **({"dataset": self.dataset.name} if self.dataset is not None else {})}

    def transform(self, inp: Ranking) -> Ranking:
        if self.dataset is None:
            raise ConfigError(f"{self!r} is not bound to a dataset: RunRetriever(name, dataset=...)")
        if not inp.is_query_set:  # it has no score for a candidate outside the run
            raise ConfigError(f"{self!r} replays a shipped first-stage run; it cannot rescore given candidates "
                              "(put it first, as in 'run % 100 >> dense')")
        if self._ranking is None:
            self._ranking = self.dataset.run(self.name)
        asked, held = inp.queries(), self._ranking.queries()
        own = {q.qid: q.text for q in self.dataset.queries()}
        new = [q for q in asked if q not in held and q not in own]
        if new:
            raise DataError(f"{self!r} ranks only {self.dataset.name}'s own queries (ids like {sorted(held)[:3]}); "
                            f"{len(new)} are not among them (e.g. {new[:3]}; use a retriever such as bm25 for new queries)")
        other = next((q for q, text in asked.items() if q in own and text.split() != own[q].split()), None)
        if other is not None:
            raise DataError(f"{self!r} answers {self.dataset.name}'s query {other!r} ({own[other]!r:.60}), but the text asked "
                            f"under that id is {asked[other]!r:.60}; use a retriever such as bm25 for new queries")
        lacking = [q for q in asked if q not in held]
        if lacking:
            logger.warning("%r has no results for %d of the %d queries asked (e.g. %s); they count as 0",
                           self, len(lacking), len(asked), lacking[:3])
        return self._ranking.select(asked)
