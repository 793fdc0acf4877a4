"""Datasets from ir_datasets ids. ir_datasets downloads on first use; offline, its files must already be
in its cache (``$IR_DATASETS_HOME``), or the dataset must be registered from local files."""

from __future__ import annotations

import logging

from rerank.data.base import Dataset, checked_threshold, memoized
from rerank.errors import DataError
from rerank.io import relevance_grade
from rerank.types import Doc, Query

logger = logging.getLogger(__name__)


class IrDatasetsDataset(Dataset):
    def __init__(self, irds_id: str, name: str | None = None, rel_threshold: int = 1):
        import ir_datasets

        if logging.getLogger("rerank").level >= logging.WARNING:  # --quiet: rerank reports a failed read itself
            ir_datasets.log.easy().logger().setLevel(logging.ERROR)  # its retries and "[starting]" lines
        try:
            self._ds = ir_datasets.load(irds_id)
        except KeyError:
            raise DataError(f"ir_datasets has no dataset {irds_id!r}") from None
        self.irds_id, self.name = irds_id, name or irds_id
        self.rel_threshold = checked_threshold(rel_threshold, self.name)

    def _iterate(self, what: str):
        if not getattr(self._ds, f"has_{what}")():
            raise DataError(f"ir_datasets {self.irds_id!r} provides no {what}")
        try:
            yield from getattr(self._ds, f"{what}_iter")()
        except Exception as e:  # downloads fail offline; say what to do
            raise DataError(f"ir_datasets {self.irds_id!r}: could not read {what} ({type(e).__name__}: {e}). "
                            "Offline, place its files in $IR_DATASETS_HOME or load a BEIR folder by path.") from e

    @memoized
    def queries(self) -> list[Query]:
        return self._checked_queries([Query(q.query_id, q.default_text()) for q in self._iterate("queries")])

    @memoized
    def corpus(self) -> list[Doc]:
        return self._checked_corpus([Doc(d.doc_id, getattr(d, "text", None) or d.default_text(), getattr(d, "title", "") or "")
                                     for d in self._iterate("docs")])

    @memoized
    def qrels(self) -> dict[str, dict[str, int]]:
        """Judgments through the checks of a qrels file: integer grades, ids that match the queries and,
        when the documents are at hand, the corpus. A pair judged more than once (multi-round or
        sub-topic qrels) keeps its highest grade, with a warning that counts such pairs."""
        out: dict[str, dict[str, int]] = {}
        where = f"ir_datasets {self.irds_id!r} qrels"
        repeated = 0
        for q in self._iterate("qrels"):
            grade, row = relevance_grade(q.relevance, where), out.setdefault(q.query_id, {})
            repeated += q.doc_id in row
            row[q.doc_id] = max(grade, row.get(q.doc_id, grade))
        if not out:
            raise DataError(f"{where}: no judgments")
        if repeated:
            logger.warning("%s: %d repeated judgments of a (query, document) pair; each pair keeps its highest grade",
                           where, repeated)
        return self._checked_qrels(out, self.known_docids({d for docs in out.values() for d in docs}))

    def known_docids(self, docids: set[str]) -> set[str] | None:
        """Those of ``docids`` that the corpus has, looked up in ir_datasets' document store (no full
        corpus load); None when the documents are not at hand (then docids are not checked)."""
        if not self._ds.has_docs():
            return None
        try:
            return set(self._ds.docs_store().get_many(docids))
        except Exception as e:  # noqa: BLE001 -- documents not downloaded (offline): evaluate without the check
            logger.info("ir_datasets %r: docids not checked against the corpus (%s: %s)", self.irds_id,
                        type(e).__name__, e)
            return None
