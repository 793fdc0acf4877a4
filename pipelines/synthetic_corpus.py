"""A synthetic corpus with real term statistics, for BM25 scale tests beyond the bundled collections.

Word frequencies come from the bundled TREC-DL 2019/2020 passages and SciFact abstracts (their
unigram distribution), document lengths from the TREC-DL passages (MS MARCO-like, ~60 words), and a
share of tokens (``--rare``, default 5%) from an open Zipf vocabulary (exponent 1.3), so the
vocabulary keeps growing with the corpus as real vocabularies do (Heaps' law). Queries are the real
queries of the same collections. Seeded: the same arguments give the same files.

    python pipelines/synthetic_corpus.py --docs 1000000 --shards 2 --out /tmp/synth-1m
    # -> corpus-0.jsonl.gz, corpus-1.jsonl.gz (contiguous halves, BEIR layout), queries.jsonl
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from rerank.data import load

SOURCES = ("trec-dl-2019", "trec-dl-2020", "scifact")
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+")


def statistics() -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Words and their probabilities, passage lengths, and real queries of the bundled collections."""
    counts: Counter[str] = Counter()
    lengths: list[int] = []
    queries: list[str] = []
    for name in SOURCES:
        ds = load(name)
        for d in ds.corpus():
            words = WORD.findall(d.full_text())
            counts.update(words)
            if name.startswith("trec-dl"):
                lengths.append(len(words))
        queries.extend(q.text for q in ds.queries())
    words, freq = zip(*counts.most_common())
    p = np.asarray(freq, dtype=np.float64)
    return list(words), p / p.sum(), np.asarray(lengths), queries


def generate(n_docs: int, shards: int, out: Path, seed: int = 0, rare: float = 0.05) -> list[Path]:
    words, p, lengths, queries = statistics()
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(shards):
        start, stop = shard * n_docs // shards, (shard + 1) * n_docs // shards
        path = out / f"corpus-{shard}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
            for block in range(start, stop, 10_000):
                n = min(10_000, stop - block)
                sizes = rng.choice(lengths, n)
                ids = rng.choice(len(words), int(sizes.sum()), p=p)
                tail = rng.random(len(ids)) < rare
                rare_ids = rng.zipf(1.3, int(tail.sum()))
                tokens = np.asarray(words, dtype=object)[ids]
                tokens[tail] = [f"x{np.base_repr(int(r), 36).lower()}" for r in rare_ids]
                for i, doc in enumerate(np.split(tokens, np.cumsum(sizes)[:-1])):
                    f.write(json.dumps({"_id": f"d{block + i}", "text": " ".join(doc)}) + "\n")
        paths.append(path)
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for i, q in enumerate(queries):
            f.write(json.dumps({"_id": f"q{i}", "text": q}) + "\n")
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--shards", type=int, default=2, help="corpus files, contiguous slices of one corpus")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rare", type=float, default=0.05, help="share of tokens from the open Zipf vocabulary")
    args = p.parse_args()
    if args.docs < args.shards or args.shards < 1 or not 0 <= args.rare < 1:
        p.error("need docs >= shards >= 1 and 0 <= rare < 1")
    for path in generate(args.docs, args.shards, args.out, args.seed, args.rare):
        print(path)


if __name__ == "__main__":
    main()
