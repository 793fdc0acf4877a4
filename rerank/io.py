"""Readers and writers: TREC run and qrels files, BEIR jsonl/tsv (plain or gzip), foreign column names.

Foreign vocabularies (``query_id``/``doc_id``, ``docno``, ``corpus-id``, ...) are translated here and
nowhere else.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from rerank.errors import DataError

FOREIGN_COLUMNS = {
    "query_id": "qid", "query-id": "qid", "q_id": "qid", "topic": "qid",
    "doc_id": "docid", "docno": "docid", "corpus-id": "docid", "corpus_id": "docid", "pid": "docid",
    "query_text": "query", "body": "text", "relevance": "relevance", "score": "score",
}


def normalize_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Rename foreign column names to rerank's vocabulary."""
    return df.rename(columns={c: FOREIGN_COLUMNS[c] for c in df.columns if c in FOREIGN_COLUMNS and FOREIGN_COLUMNS[c] not in df.columns})


def open_text(path: str | Path) -> IO[str]:
    """Open a text file, transparently decompressing ``.gz``."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read qrels in TREC format (``qid 0 docid rel``) or BEIR tsv (``query-id corpus-id score``, header)."""
    qrels: dict[str, dict[str, int]] = {}
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts or (lineno == 1 and parts[0] in ("query-id", "qid", "query_id")):
                continue
            if len(parts) == 4:
                qid, _, docid, rel = parts
            elif len(parts) == 3:
                qid, docid, rel = parts
            else:
                raise DataError(f"{path}:{lineno}: expected 'qid 0 docid relevance' or 'qid docid relevance', got {line.strip()!r}")
            try:
                qrels.setdefault(qid, {})[docid] = int(float(rel))
            except ValueError:
                raise DataError(f"{path}:{lineno}: relevance {rel!r} is not a number") from None
    if not qrels:
        raise DataError(f"{path}: no judgments found")
    return qrels


def read_trec_run(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a TREC run file (``qid Q0 docid rank score tag``)."""
    run: dict[str, dict[str, float]] = {}
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataError(f"{path}:{lineno}: expected 6 fields 'qid Q0 docid rank score tag', got {len(parts)}")
            try:
                run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
            except ValueError:
                raise DataError(f"{path}:{lineno}: score {parts[4]!r} is not a number") from None
    if not run:
        raise DataError(f"{path}: the run file is empty")
    return run


def write_trec_run(frame: pd.DataFrame, path: str | Path, tag: str) -> None:
    """Write ``qid Q0 docid rank score tag`` lines, ``tag`` with whitespace replaced."""
    tag = "_".join(tag.split()) or "rerank"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for q, d, r, s in zip(frame["qid"], frame["docid"], frame["rank"], frame["score"]):
            f.write(f"{q} Q0 {d} {int(r)} {float(s):.6f} {tag}\n")
