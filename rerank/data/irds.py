"""Datasets from ir_datasets ids. ir_datasets downloads on first use; offline, its files must already be
in its cache (``$IR_DATASETS_HOME``), or the dataset must be registered from local files."""

from __future__ import annotations

import logging
import re

from rerank.data.base import Dataset, checked_threshold, memoized
from rerank.errors import DataError
from rerank.io import relevance_grade
from rerank.types import Doc, Query, checked_doc

logger = logging.getLogger(__name__)


class IrDatasetsDataset(Dataset):
    """``rel_threshold``: the lowest grade binary measures count as relevant; default: the one
    ir_datasets' documentation gives its official measures (``RR(rel=2)`` on the TREC-DL passage
    collections, see :func:`official_threshold`)."""

    def __init__(self, irds_id: str, name: str | None = None, rel_threshold: int | None = None):
        import ir_datasets

        if logging.getLogger("rerank").level >= logging.WARNING:  # --quiet: rerank reports a failed read itself
            ir_datasets.log.easy().logger().setLevel(logging.ERROR)  # its retries and "[starting]" lines
        try:
            self._ds = ir_datasets.load(irds_id)
        except KeyError:
            raise DataError(f"ir_datasets has no dataset {irds_id!r}") from None
        self.irds_id, self.name = irds_id, name or irds_id
        if rel_threshold is None:
            documented = self._ds.documentation() if hasattr(self._ds, "documentation") else {}  # none for a local one
            rel_threshold = official_threshold(documented.get("official_measures", []), self.name)
        self.rel_threshold = checked_threshold(rel_threshold, self.name)

    def _iterate(self, what: str):
        if not getattr(self._ds, f"has_{what}")():
            raise DataError(f"ir_datasets {self.irds_id!r} provides no {what}")
        try:
            yield from getattr(self._ds, f"{what}_iter")()
        except Exception as e:  # downloads fail offline (OSError): say what to do; else its files hold a bad record
            hint = " Offline, place its files in $IR_DATASETS_HOME or load a BEIR folder by path." if isinstance(e, OSError) else ""
            raise DataError(f"ir_datasets {self.irds_id!r}: could not read {what} ({type(e).__name__}: {e}).{hint}") from e

    @memoized
    def queries(self) -> list[Query]:
        return self._checked_queries([Query(q.query_id, q.default_text()) for q in self._iterate("queries")])

    @memoized
    def corpus(self) -> list[Doc]:
        where = f"ir_datasets {self.irds_id!r} docs"
        return self._checked_corpus([checked_doc(Doc(d.doc_id, getattr(d, "text", None) or d.default_text(),
                                                     getattr(d, "title", "") or ""), where) for d in self._iterate("docs")])

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


BINARY_MEASURES = frozenset({"AP", "RR", "P", "R", "SetP", "SetR", "SetF", "Success", "Bpref", "Rprec", "infAP", "NumRelRet"})
"""ir_measures' measures that read relevance as yes/no, at their ``rel=`` level (1 unless named)."""


def official_threshold(measures: list[str], name: str) -> int:
    """The ``rel=`` level of a dataset's official binary measures (ir_measures names, e.g. ``RR(rel=2)``),
    1 when they name none. When they differ (``AP@100`` at 1, ``RR(rel=2)``), 1 with a warning, as one
    threshold cannot give both.

    >>> official_threshold(["nDCG@10", "RR(rel=2)", "AP(rel=2)"], "dl19")
    2
    >>> official_threshold(["nDCG@10", "RR@10"], "x")
    1
    """
    levels = {m: int(level.group(1)) if (level := re.search(r"\brel=(\d+)", m)) else 1
              for m in measures if re.split(r"[@(]", m)[0] in BINARY_MEASURES}
    if len(set(levels.values())) > 1:
        logger.warning("%s: ir_datasets' official measures use different relevance levels (%s); rel_threshold is 1 "
                       "here (pass rel_threshold= to evaluate binary measures at another level)", name,
                       ", ".join(levels))
        return 1
    return next(iter(levels.values()), 1)
