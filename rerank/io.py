"""Readers and writers: TREC run and qrels files, BEIR jsonl/tsv (plain or gzip), foreign column names.

Every reader checks what it reads: a problem is a :class:`~rerank.errors.DataError` naming the file and
line; the only repairs (exact repeats of a line) are counted in a warning.

Foreign vocabularies (``query_id``/``doc_id``, ``docno``, ``corpus-id``, ...) are translated here and
nowhere else.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import re
import tomllib
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from rerank.errors import ConfigError, DataError
from rerank.types import Doc, Query

logger = logging.getLogger("rerank")

FOREIGN_COLUMNS = {
    "query_id": "qid", "query-id": "qid", "q_id": "qid", "topic": "qid",
    "doc_id": "docid", "docno": "docid", "corpus-id": "docid", "corpus_id": "docid", "pid": "docid",
    "query_text": "query", "body": "text", "relevance": "relevance", "score": "score",
}


def normalize_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Rename foreign column names to rerank's vocabulary."""
    return df.rename(columns={c: FOREIGN_COLUMNS[c] for c in df.columns if c in FOREIGN_COLUMNS and FOREIGN_COLUMNS[c] not in df.columns})


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Numbered lines of a UTF-8 text file (``.gz`` decompressed; a leading byte-order mark dropped).

    Bytes that are not UTF-8 and a truncated or corrupt gzip stream raise :class:`DataError` naming the
    file and line.
    """
    path = Path(path)
    lineno = 0
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                    "convert the file to UTF-8") from None
                yield lineno, line.removeprefix("\ufeff") if lineno == 1 else line
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: truncated or corrupt gzip data after line {lineno} ({e}); "
                        "re-create or re-download the file") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not a file") from None


def find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists; both is a :class:`DataError` (which one is meant?)."""
    found = [c for c in (folder / stem, folder / f"{stem}.gz") if c.exists()]
    if len(found) == 2:
        raise DataError(f"both {found[0]} and {found[1]} exist; remove one")
    return found[0] if found else None


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's content (a leading byte-order mark dropped), or one line naming the file and what is wrong."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror}") from None


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """One JSON object per non-blank line."""
    return (record for _, record in jsonl_records(path))


class RepeatedKey(ValueError):
    """A JSON object names one key twice (``json`` alone would keep the last value silently)."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) < len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise RepeatedKey(f"the key {key!r} appears twice in one JSON object")
    return record


decode_json = json.JSONDecoder(object_pairs_hook=_object).decode
"""``json.loads`` that refuses an object with a repeated key (:class:`RepeatedKey`), at any depth."""


def jsonl_records(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` per JSON-object line; ``where`` is ``path:line``, for messages about the record."""
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        try:
            record = decode_json(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        except RepeatedKey as e:
            raise DataError(f"{path}:{lineno}: {e}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        if _SURROGATE_ESCAPE.search(line) and not _encodable(record):
            raise DataError(f"{path}:{lineno}: a \\u escape names half of a surrogate pair, which is no character")
        yield f"{path}:{lineno}", record


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _encodable(record: dict[str, Any]) -> bool:
    """Whether ``record`` holds only real characters (a lone surrogate escape decodes to none)."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_queries(path: str | Path) -> list[Query]:
    """BEIR queries: one ``{"_id": ..., "text": ...}`` object per line."""
    return [Query(record_id(r, where), record_text(r, "text", where, required=True)) for where, r in jsonl_records(path)]


def read_corpus(path: str | Path) -> list[Doc]:
    """BEIR documents: one ``{"_id": ..., "title": ..., "text": ...}`` object per line (title and text may be absent)."""
    return [Doc(record_id(r, where), record_text(r, "text", where), record_text(r, "title", where))
            for where, r in jsonl_records(path)]


def record_id(record: dict[str, Any], where: str, key: str = "_id") -> str:
    """``record[key]`` as a string; a missing, empty or non-scalar id is a :class:`DataError`."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        got = f"no {key!r}" if value is None else f"{key!r} {value!r}"
        raise DataError(f"{where}: a record needs a non-empty string {key!r}, got {got}")
    if str(value) != str(value).strip():
        raise DataError(f"{where}: {key!r} {value!r} starts or ends with whitespace, which qrels and run files "
                        "cannot hold; strip it")
    return str(value)


def record_text(record: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    """``record[key]`` as a string (``""`` when absent or null, unless ``required``); other types are refused."""
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: {key!r} must be a string, got {'nothing' if value is None else type(value).__name__}")
    return value


_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NOT_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
PLAIN_NUMBER = "write plain decimal digits, as in 2, -0.5 or 1e-3"


def plain_float(text: str) -> float:
    """``float(text)`` for a plain decimal number (sign, digits, fraction, exponent) or a spelled-out NaN or
    infinity; ``ValueError`` for anything else, even what ``float`` reads (``1_000``, ``١٢``, spaces around)."""
    if not (_DECIMAL.fullmatch(text) or _NOT_FINITE.fullmatch(text)):
        raise ValueError(f"not a plain decimal number: {text!r}")
    return float(text)


def relevance_grade(value: Any, where: str) -> int:
    """A relevance label as an integer grade: integers and integral numbers pass (text only as plain decimal
    digits), up to :data:`MAX_GRADE` either way; anything else is refused."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = plain_float(value) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{where}: relevance {value!r} is not a number; write whole numbers, as in 0, 1 or 2") from None
    if not math.isfinite(number) or number != int(number):
        raise DataError(f"{where}: relevance {value!r} is not an integer grade (qrels grade documents 0, 1, 2, ...)")
    if abs(number) > MAX_GRADE:
        raise DataError(f"{where}: relevance {value!r} is out of range (grades go up to {MAX_GRADE:,})")
    return int(number)


MAX_GRADE = 10**9
"""The largest relevance grade (either sign): TREC grades are small, and the evaluator holds them in 64 bits."""


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read qrels in TREC format (``qid 0 docid rel``) or BEIR tsv (``query-id corpus-id score``, header).

    A line is split at tabs when that gives 3 or 4 fields (BEIR: ids may hold spaces), else at whitespace
    (TREC). The first judgment decides the file's form (4 fields: TREC, 3: BEIR); a line of the other
    form is refused, so a TREC line cut short is never read as another judgment. A line repeated with
    the same grade is dropped (with a warning that counts them); a pair judged twice with different
    grades is refused.
    """
    qrels: dict[str, dict[str, int]] = {}
    repeated, form = 0, None
    for lineno, line in read_lines(path):
        parts = _qrels_fields(line)
        if not parts or (lineno == 1 and parts[0].lower() in ("query-id", "qid", "query_id")):
            continue
        if lineno == 1 and parts[-1] and not _DECIMAL.fullmatch(parts[-1]) and not _NOT_FINITE.fullmatch(parts[-1]):
            raise DataError(f"{path}:1: {line.strip()!r} is neither a judgment (its relevance {parts[-1]!r} is not a "
                            "number) nor a header rerank reads (one whose first column is query-id, qid or query_id)")
        if len(parts) not in (3, 4):
            raise DataError(f"{path}:{lineno}: expected 'qid 0 docid relevance' or 'qid docid relevance', got {line.strip()!r}")
        form = form or (len(parts), lineno)
        if len(parts) != form[0]:
            raise DataError(f"{path}:{lineno}: {len(parts)} fields where the file's first judgment (line {form[1]}) has "
                            f"{form[0]}; a line cut short or joined? got {line.strip()!r}")
        if len(parts) == 4:
            qid, _, docid, rel = parts
        else:
            qid, docid, rel = parts
        grade = relevance_grade(rel, f"{path}:{lineno}")
        repeated += _put_once(qrels, qid, docid, grade, f"{path}:{lineno}", "judges", "grades")
    if not qrels:
        raise DataError(f"{path}: no judgments found")
    if repeated:
        logger.warning("%s: %d repeated judgment lines dropped", path, repeated)
    return qrels


def _qrels_fields(line: str) -> list[str]:
    """A qrels line's fields: at tabs when that gives 3 or 4 fields (BEIR, whose ids may hold spaces; runs of
    tabs are one separator, spaces around a field are dropped), else at whitespace (TREC, and lines that
    mix tabs and spaces)."""
    parts = [p.strip() for p in line.split("\t") if p.strip()]
    return parts if len(parts) in (3, 4) else line.split()


def read_trec_run(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a TREC run file (``qid Q0 docid rank score tag``); the rank column is ignored, as in trec_eval.

    A line repeated with the same score is dropped (with a warning that counts them); a document ranked
    twice for one query with different scores, and a score that is not a finite number, are refused.
    """
    run: dict[str, dict[str, float]] = {}
    repeated = 0
    for lineno, line in read_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise DataError(f"{path}:{lineno}: expected 6 fields 'qid Q0 docid rank score tag', got {len(parts)}")
        qid, _, docid, _, score_text, _ = parts
        try:
            score = plain_float(score_text)
        except ValueError:
            raise DataError(f"{path}:{lineno}: score {score_text!r} is not a number; {PLAIN_NUMBER}") from None
        if not math.isfinite(score):
            raise DataError(f"{path}:{lineno}: score {score_text!r} is not a finite number")
        repeated += _put_once(run, qid, docid, score, f"{path}:{lineno}", "ranks", "scores")
    if not run:
        raise DataError(f"{path}: the run file is empty")
    if repeated:
        logger.warning("%s: %d repeated run lines dropped", path, repeated)
    return run


def _put_once(table: dict[str, dict[str, Any]], qid: str, docid: str, value: Any, where: str, verb: str, what: str) -> int:
    """Set ``table[qid][docid] = value``; 1 when that repeats an equal value, 0 when new; a different value is refused."""
    row = table.setdefault(qid, {})
    if docid not in row:
        row[docid] = value
        return 0
    if row[docid] != value:
        raise DataError(f"{where}: query {qid!r} {verb} document {docid!r} twice, with {what} {row[docid]} and {value}")
    return 1


def write_trec_run(frame: pd.DataFrame, path: str | Path, tag: str) -> None:
    """Write ``qid Q0 docid rank score tag`` lines, ``tag`` with whitespace replaced; scores at full
    precision (shortest round-trip form), so a run read back ranks and scores exactly as written.
    An id that is empty or holds whitespace, which would shift the fields, is refused."""
    tag = "_".join(tag.split()) or "rerank"
    path = Path(path)
    for column, kind in (("qid", "query"), ("docid", "document")):
        _check_run_ids(frame[column], kind, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for q, d, r, s in zip(frame["qid"], frame["docid"], frame["rank"], frame["score"]):
            f.write(f"{q} Q0 {d} {int(r)} {float(s)!r} {tag}\n")


def _check_run_ids(ids: pd.Series, kind: str, path: Path) -> None:
    """Refuse ids a run file cannot hold: its fields are separated by whitespace."""
    bad = ids[ids.str.contains(r"\s") | (ids == "")]
    if len(bad):
        raise DataError(f"{path}: cannot write a TREC run file: {len(bad)} rows have a {kind} id that is empty or "
                        f"holds whitespace (e.g. {bad.iloc[0]!r}), which would shift its whitespace-separated fields")


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (a name unique across processes and hosts) for the block to
    write; renamed onto ``path`` when the block ends, removed when it fails: a reader never sees half
    a file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
