"""Datasets from ir_datasets ids. ir_datasets downloads on first use; offline, its files must already be
in its cache (``$IR_DATASETS_HOME``), or the dataset must be registered from local files."""

from __future__ import annotations

from functools import cache

from rerank.data.base import Dataset
from rerank.errors import DataError
from rerank.types import Doc, Query


class IrDatasetsDataset(Dataset):
    def __init__(self, irds_id: str, name: str | None = None, rel_threshold: int = 1):
        import ir_datasets

        try:
            self._ds = ir_datasets.load(irds_id)
        except KeyError:
            raise DataError(f"ir_datasets has no dataset {irds_id!r}") from None
        self.irds_id, self.name, self.rel_threshold = irds_id, name or irds_id, rel_threshold

    def _iterate(self, what: str):
        if not getattr(self._ds, f"has_{what}")():
            raise DataError(f"ir_datasets {self.irds_id!r} provides no {what}")
        try:
            yield from getattr(self._ds, f"{what}_iter")()
        except Exception as e:  # downloads fail offline; say what to do
            raise DataError(f"ir_datasets {self.irds_id!r}: could not read {what} ({type(e).__name__}: {e}). "
                            "Offline, place its files in $IR_DATASETS_HOME or load a BEIR folder by path.") from e

    @cache
    def queries(self) -> list[Query]:
        return self._checked_queries([Query(q.query_id, q.default_text()) for q in self._iterate("queries")])

    @cache
    def corpus(self) -> list[Doc]:
        return self._checked_corpus([Doc(d.doc_id, getattr(d, "text", None) or d.default_text(), getattr(d, "title", "") or "")
                                     for d in self._iterate("docs")])

    @cache
    def qrels(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for q in self._iterate("qrels"):
            out.setdefault(q.query_id, {})[q.doc_id] = int(q.relevance)
        if not out:
            raise DataError(f"ir_datasets {self.irds_id!r}: no judgments")
        return out
