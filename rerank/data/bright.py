"""BRIGHT (reasoning-intensive retrieval): 12 tasks, each with examples (queries, gold ids, excluded
ids) and a document collection, in an original and a long-document setting.

Two sources are read:

* BRIGHT's published layout, a local copy of the dataset: ``<root>/examples/<task>*.{parquet,jsonl}``
  (fields ``id, query, gold_ids, gold_ids_long, excluded_ids``), ``<root>/documents/<task>*`` and
  ``<root>/long_documents/<task>*`` (fields ``id, content``) -- :meth:`BrightDataset.from_published`;
* the bundled queries and qrels (``datasets/bright/<task>``), with documents from a local copy of
  BRIGHT given as ``documents=<root or file>`` or ``$RERANK_BRIGHT``.

Excluded ids are dropped from rankings before evaluation, as in BRIGHT's official scorer.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rerank.data.base import Dataset, checked_threshold, memoized
from rerank.errors import DataError
from rerank.io import find_file, jsonl_records, read_qrels, record_id, record_text
from rerank.types import Doc, Query

TASKS = ("biology", "earth-science", "economics", "psychology", "robotics", "stackoverflow", "sustainable-living",
         "leetcode", "pony", "aops", "theoremqa-questions", "theoremqa-theorems")
HF_TASK = {t: t.replace("-", "_") for t in TASKS}  # BRIGHT's file names use underscores


class BrightDataset(Dataset):
    def __init__(self, folder: str | Path | None, name: str, documents: str | Path | None = None, long: bool = False,
                 qrels: str = "original", rel_threshold: int = 1, examples: list[dict[str, Any]] | None = None):
        self.folder = Path(folder) if folder else None
        self.name = name
        self.task = name.split("/")[-1]
        if self.task not in TASKS:
            raise DataError(f"unknown BRIGHT task {self.task!r}; tasks: {', '.join(TASKS)}")
        self.long = long
        self.qrels_variant = qrels
        self.rel_threshold = checked_threshold(rel_threshold, self.name)
        self.documents = documents_location(documents)
        self._examples = examples

    @classmethod
    def from_published(cls, root: str | Path, task: str, long: bool = False) -> BrightDataset:
        """Read queries, gold ids, excluded ids and documents from a local copy of BRIGHT."""
        root = Path(root)
        examples = [r for _, r in _read_records(_task_files(root / "examples", task))]
        if not examples:
            raise DataError(f"{root}/examples has no records for task {task!r}")
        return cls(None, f"bright/{task}", documents=root, long=long, examples=examples)

    # -- queries and judgments ----------------------------------------------------------------
    @memoized
    def _records(self) -> list[dict[str, Any]]:
        """Examples as dicts with id, query, gold_ids, gold_ids_long, excluded_ids."""
        if self._examples is not None:
            return [{**e, "id": str(e["id"])} for e in self._examples]
        assert self.folder is not None
        qfile = find_file(self.folder, "queries.jsonl")
        if qfile is None:
            raise DataError(f"{self.name}: no queries.jsonl in {self.folder}")
        excluded: dict[str, list[str]] = {}
        efile = find_file(self.folder, "excluded_ids.jsonl")
        if efile is not None:
            excluded = {record_id(r, where): _ids(r.get("excluded_ids")) for where, r in jsonl_records(efile)}
        out = []
        for where, r in jsonl_records(qfile):
            meta, qid = r.get("metadata") or {}, record_id(r, where)
            out.append({"id": qid, "query": record_text(r, "text", where, required=True), "gold_ids": _ids(meta.get("gold_ids")),
                        "gold_ids_long": _ids(meta.get("gold_ids_long")), "excluded_ids": excluded.get(qid, [])})
        return out

    def queries(self) -> list[Query]:
        return self._checked_queries([Query(e["id"], e["query"]) for e in self._records()])

    @memoized
    def qrels(self) -> dict[str, dict[str, int]]:
        """The judgments, checked against the queries and, when documents were given, the corpus."""
        if self.long:
            qrels = {e["id"]: {d: 1 for d in _ids(e["gold_ids_long"]) if d != "N/A"} for e in self._records()}
            qrels = {q: docs for q, docs in qrels.items() if docs}
            if not qrels:
                raise DataError(f"{self.name}: BRIGHT has no long-document setting for this task")
        elif self.folder is not None:
            stem = "qrels/test.tsv" if self.qrels_variant == "original" else f"qrels/test.{self.qrels_variant}.tsv"
            path = find_file(self.folder, stem)
            if path is None:
                raise DataError(f"{self.name}: {self.folder / stem} not found (variants: original, anserini-fixed)")
            qrels = read_qrels(path)
        else:
            qrels = {e["id"]: {d: 1 for d in _ids(e["gold_ids"])} for e in self._records()}
        return self._checked_qrels(qrels, {d.docid for d in self.corpus()} if self.documents is not None else None)

    def exclusions(self) -> dict[str, set[str]]:
        return {e["id"]: set(_ids(e["excluded_ids"])) - {"N/A"} for e in self._records() if e["excluded_ids"]}

    # -- documents ----------------------------------------------------------------------------
    @memoized
    def corpus(self) -> list[Doc]:
        if self.documents is None:
            raise DataError(f"{self.name}: BRIGHT documents are not bundled; pass documents=<local copy of BRIGHT> "
                            "(a folder with documents/ and long_documents/, or a jsonl/parquet file) or set $RERANK_BRIGHT")
        sub = "long_documents" if self.long else "documents"
        files = [self.documents] if self.documents.is_file() else _task_files(self.documents / sub, self.task)
        docs = [Doc(record_id(r, where, key="id"), record_text(r, "content", where, required=True))
                for where, r in _read_records(files)]
        return self._checked_corpus(docs)


def _ids(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = ast.literal_eval(value) if value.startswith("[") else [value]
    return [str(v) for v in value]


def documents_location(documents: str | Path | None) -> Path | None:
    """Where BRIGHT's documents are read from: ``documents``, else ``$RERANK_BRIGHT``, else nowhere."""
    given = documents or os.environ.get("RERANK_BRIGHT")
    return Path(given) if given else None


def _task_files(folder: Path, task: str) -> list[Path]:
    files = sorted(p for p in folder.glob("*") if p.name.startswith((task, HF_TASK[task])) and
                   p.name.endswith((".parquet", ".jsonl", ".jsonl.gz")))
    if not files:
        raise DataError(f"no files for BRIGHT task {task!r} in {folder} (expected {HF_TASK[task]}*.parquet or .jsonl)")
    return files


def _read_records(files: list[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` per record of jsonl or parquet files (``where``: file and line or row)."""
    for f in files:
        if f.name.endswith(".parquet"):
            import pandas as pd

            yield from ((f"{f}:row {i + 1}", r) for i, r in enumerate(pd.read_parquet(f).to_dict("records")))
        else:
            yield from jsonl_records(f)
