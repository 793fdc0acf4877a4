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

from rerank.data.base import Dataset, checked_threshold, memoized, unique_records
from rerank.errors import DataError, one_line
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
        examples = [r for _, r in _read_records(_task_files(root / "examples", task))]  # checked by _records
        if not examples:
            raise DataError(f"{root}/examples has no records for task {task!r}")
        return cls(None, f"bright/{task}", documents=root, long=long, examples=examples)

    # -- queries and judgments ----------------------------------------------------------------
    @memoized
    def _records(self) -> list[dict[str, Any]]:
        """Examples as dicts with id, query and the lists gold_ids, gold_ids_long, excluded_ids; a record
        repeated exactly is dropped (counted), two different ones with one id are refused."""
        if self._examples is not None:
            rows = [_example(e, f"{self.name} example {i + 1}") for i, e in enumerate(self._examples)]
        else:
            assert self.folder is not None
            qfile = find_file(self.folder, "queries.jsonl")
            if qfile is None:
                raise DataError(f"{self.name}: no queries.jsonl in {self.folder}")
            efile = find_file(self.folder, "excluded_ids.jsonl")
            excluded = dict(unique_records([(record_id(r, where), _ids(r.get("excluded_ids"), where))
                                            for where, r in jsonl_records(efile)], str(efile), "excluded_ids")) if efile else {}
            rows = []
            for where, r in jsonl_records(qfile):
                meta, qid = r.get("metadata") or {}, record_id(r, where)
                rows.append((qid, {"id": qid, "query": record_text(r, "text", where, required=True),
                                   "gold_ids": _ids(meta.get("gold_ids"), where), "gold_ids_long": _ids(meta.get("gold_ids_long"), where),
                                   "excluded_ids": excluded.get(qid, [])}))
        return [e for _, e in unique_records(rows, self.name, "example")]

    @memoized
    def queries(self) -> list[Query]:
        return self._checked_queries([Query(e["id"], e["query"]) for e in self._records()])

    @memoized
    def qrels(self) -> dict[str, dict[str, int]]:
        """The judgments, checked against the queries and, when documents were given, the corpus."""
        if self.long:
            qrels = {e["id"]: {d: 1 for d in e["gold_ids_long"] if d != "N/A"} for e in self._records()}
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
            qrels = {e["id"]: {d: 1 for d in e["gold_ids"]} for e in self._records()}
        return self._checked_qrels(qrels, {d.docid for d in self.corpus()} if self.documents is not None else None)

    @memoized
    def exclusions(self) -> dict[str, set[str]]:
        """Excluded ids per query; one that is judged relevant to its query is refused, as in BRIGHT's scorer."""
        out = {e["id"]: ids for e in self._records() if (ids := set(e["excluded_ids"]) - {"N/A"})}
        qrels = self.qrels()
        clash = sorted(q for q, ids in out.items() if any(qrels.get(q, {}).get(d, 0) > 0 for d in ids))
        if clash:
            raise DataError(f"{self.name}: {len(clash)} queries exclude a document judged relevant to them (e.g. "
                            f"{clash[:3]}); excluded ids are dropped from rankings, so they cannot be relevant")
        return out

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


def _example(record: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """``(id, example)`` of a record of BRIGHT's published examples, its id lists checked."""
    qid = record_id(record, where, key="id")
    return qid, {"id": qid, "query": record_text(record, "query", where, required=True),
                 **{key: _ids(record.get(key), where) for key in ("gold_ids", "gold_ids_long", "excluded_ids")}}


def _ids(value: Any, where: str) -> list[str]:
    """A list of ids: a list (a NumPy array from parquet), a string holding a Python list, one id, or None."""
    if value is None:
        return []
    if isinstance(value, str) and value.startswith("["):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise DataError(f"{where}: {value[:60]!r} is not a list of ids") from None
    elif isinstance(value, str):
        value = [value]
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        raise DataError(f"{where}: ids must be a list of strings, got {value!r:.60}")
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

            try:
                frame = pd.read_parquet(f)
            except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
                raise DataError(f"{f}: not a readable parquet file ({one_line(e)})") from None
            yield from ((f"{f}:row {i + 1}", r) for i, r in enumerate(frame.to_dict("records")))
        else:
            yield from jsonl_records(f)
