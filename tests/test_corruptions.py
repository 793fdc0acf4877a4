"""Random corruptions of a small BEIR folder fed to ``rerank eval``: truncation, byte flips, duplicated lines
and swapped columns. Each case must end in exit status 0 with the right answer, or exit status 2 with one
line; never anything else.

The right answer comes from an independent, strict reading of the corrupted files (plain ``json``,
``gzip`` and ``str.split``): when it fails, rerank must refuse; when it succeeds, rerank must give on the
corrupted folder exactly what it gives on a clean rewrite of what was read (exact repeats dropped), and
exit with the same status.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from test_bad_input import beir, table

from rerank.cli import main

CASES, SEED = 40, 20261202
TARGETS = ("corpus.jsonl.gz", "queries.jsonl", "qrels/test.tsv")
KINDS = ("truncate", "flip", "duplicate", "swap")
EVAL = ("--quiet", "eval", "--pipeline", "bm25", "--metrics", "ndcg@10", "mrr@10", "recall@100")


def corrupt(folder: Path, rng: random.Random) -> str:
    """Apply one random corruption to one file of ``folder``; returns what was done."""
    target, kind = rng.choice(TARGETS), rng.choice(KINDS)
    path = folder / target
    raw = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(raw[: rng.randrange(len(raw))])
    elif kind == "flip":
        flipped = bytearray(raw)
        flipped[rng.randrange(len(raw))] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(flipped))
    else:
        gz = target.endswith(".gz")
        lines = (gzip.decompress(raw) if gz else raw).decode().splitlines(keepends=True)
        i = rng.randrange(len(lines))
        if kind == "duplicate":
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
        elif target.endswith(".tsv"):
            cols = lines[i].rstrip("\n").split("\t")
            a, b = rng.sample(range(len(cols)), 2)
            cols[a], cols[b] = cols[b], cols[a]
            lines[i] = "\t".join(cols) + "\n"
        else:
            record = json.loads(lines[i])
            keys = list(record)
            a, b = rng.sample(keys, 2)
            record[a], record[b] = record[b], record[a]
            lines[i] = json.dumps(record) + "\n"
        data = "".join(lines).encode()
        path.write_bytes(gzip.compress(data) if gz else data)
    return f"{kind} {target}"


# -- the independent, strict reading ----------------------------------------------------------------
class Refuse(Exception):
    pass


def text_lines(path: Path) -> list[str]:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8").split("\n")
    except (EOFError, OSError, zlib.error, UnicodeDecodeError) as e:
        raise Refuse(e) from None


def unique(items: list[tuple]) -> list[tuple]:
    seen: dict[str, tuple] = {}
    for item in items:
        if seen.setdefault(item[0], item) != item:
            raise Refuse(f"two records for {item[0]!r}")
    return list(seen.values())


def json_records(path: Path) -> list[dict]:
    out = []
    for line in text_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise Refuse(e) from None
        if not isinstance(record, dict):
            raise Refuse("not an object")
        rid = record.get("_id")
        if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not str(rid).strip():
            raise Refuse("bad id")
        out.append({**record, "_id": str(rid)})
    return out


def strict_read(folder: Path) -> tuple[list[tuple], list[tuple], list[tuple]]:
    docs = []
    for r in json_records(folder / "corpus.jsonl.gz"):
        fields = [r.get("text"), r.get("title")]
        if any(f is not None and not isinstance(f, str) for f in fields):
            raise Refuse("document text is not a string")
        docs.append((r["_id"], fields[0] or "", fields[1] or ""))
    queries = []
    for r in json_records(folder / "queries.jsonl"):
        if not isinstance(r.get("text"), str):
            raise Refuse("query text is not a string")
        queries.append((r["_id"], r["text"]))
    judgments = []
    for n, line in enumerate(text_lines(folder / "qrels" / "test.tsv")):
        parts = qrels_fields(line.strip())
        if not parts or (n == 0 and parts[0] == "query-id"):
            continue
        if len(parts) not in (3, 4):
            raise Refuse("qrels line")
        if not set(parts[-1]) <= set("+-.0123456789eE"):
            raise Refuse("grade")  # plain decimal digits only: float() would also read '1_0' or Arabic-Indic digits
        try:
            grade = float(parts[-1])
        except ValueError:
            raise Refuse("grade") from None
        if not math.isfinite(grade) or grade != int(grade):
            raise Refuse("grade")
        judgments.append((f"{parts[0]}\t{parts[-2]}", int(grade)))
    return unique(docs), unique(queries), unique(judgments)


def qrels_fields(line: str) -> list[str]:
    """The README's rule: at tabs when the non-blank tab-separated fields (stripped) are 3 or 4, else at whitespace."""
    tabbed = [field.strip() for field in line.split("\t")]
    tabbed = [field for field in tabbed if field]
    return tabbed if 3 <= len(tabbed) <= 4 else line.split()


def rewrite(folder: Path, docs: list[tuple], queries: list[tuple], judgments: list[tuple]) -> Path:
    """A clean BEIR folder holding what the strict reading found."""
    corpus = [json.dumps({"_id": d, "title": title, "text": text}) + "\n" for d, text, title in docs]
    return beir(folder, corpus=corpus, queries=[json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries],
                qrels=[f"{pair}\t{grade}\n" for pair, grade in judgments], gz=True)


# -- the property ----------------------------------------------------------------------------------
def run_eval(capsys, folder: Path) -> tuple[int, str, str]:
    code = main([*EVAL, "--dataset", str(folder)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_refusal(code: int, out: str, err: str, what: str) -> None:
    assert code == 2, f"{what}: exit {code}\n{out}\n{err}"
    assert out == "" and err.count("\n") == 1 and err.startswith("rerank: error: "), f"{what}: {err!r}"


def cases(tmp_path: Path):
    rng = random.Random(SEED)
    for n in range(CASES):
        folder = beir(tmp_path / f"case{n}" / "data", gz=True)
        yield folder, corrupt(folder, rng)


def test_random_corruptions_give_the_right_answer_or_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RERANK_CACHE", str(tmp_path / "cache"))
    outcomes = {"answered": 0, "refused": 0}
    answers: dict[str, tuple[int, str, str]] = {}  # clean rewrites by content: most corruptions read back alike
    for folder, what in cases(tmp_path):
        code, out, err = run_eval(capsys, folder)
        assert code in (0, 2), f"{what}: exit {code}\n{err}"
        try:
            content = strict_read(folder)
        except Refuse:
            assert_one_line_refusal(code, out, err, what)
            outcomes["refused"] += 1
            continue
        if repr(content) not in answers:
            answers[repr(content)] = run_eval(capsys, rewrite(folder.parent / "clean", *content))
        want_code, want_out, want_err = answers[repr(content)]
        assert code == want_code, f"{what}: exit {code} ({err.strip()}), the clean rewrite gives {want_code} ({want_err.strip()})"
        if code == 2:
            assert_one_line_refusal(code, out, err, what)
            outcomes["refused"] += 1
        else:
            assert table(out) == table(want_out), what
            outcomes["answered"] += 1
    assert outcomes["answered"] >= 5 and outcomes["refused"] >= 5, outcomes  # both branches are exercised


def test_corruptions_in_a_real_process(tmp_path):
    """Two of the cases above through ``python -m rerank.cli``: real stderr, real exit status."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RERANK_CACHE": str(tmp_path / "cache")}
    seen = set()
    for folder, what in cases(tmp_path):
        try:
            strict_read(folder)
            continue
        except Refuse:
            pass
        kind = what.split()[0]
        if kind in seen:
            continue
        seen.add(kind)
        proc = subprocess.run([sys.executable, "-m", "rerank.cli", *EVAL, "--dataset", str(folder)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert_one_line_refusal(proc.returncode, proc.stdout, proc.stderr, what)
        if len(seen) == 2:
            return
    pytest.fail(f"fewer than two kinds of refused corruption among the cases: {seen}")
