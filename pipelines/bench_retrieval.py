"""Retrieval speed on SciFact: rerank's BM25 against rank-bm25 and bm25s, plus dense encode/search.

Every BM25 engine gets the same tokens (lowercase, ``\\w\\w+`` words, Lucene's English stopwords,
Snowball English stemmer) and k1=0.9, b=0.4. Indexing time includes tokenizing the corpus; query
time includes tokenizing the queries and taking the top ``k``. Times are the best of ``--repeat``
runs on one thread of this machine (the dense encoder uses torch's threads).

    python pipelines/bench_retrieval.py                # all 5,183 docs and 300 queries, k=1000
    python pipelines/bench_retrieval.py --limit 500 --repeat 1 --skip-dense   # a quick smoke run
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from ranx import Qrels, Run, evaluate

from rerank.data import load
from rerank.retrievers.bm25 import BM25
from rerank.text import Tokenizer
from rerank.types import Doc

from _args import positive, within  # pipelines/_args.py

os.environ["RERANK_PREBUILT"] = "off"  # encoding time is measured here: never read prebuilt embeddings
K1, B = 0.9, 0.4


@dataclass
class Row:
    engine: str
    index_s: float
    query_s: float
    ndcg10: float | None


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """The shortest wall time of ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def ndcg10(qrels: dict, qids: Sequence[str], docids: Sequence[str], hits: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    run = {q: {docids[int(p)]: float(s) for p, s in zip(pos, sc)} for q, (pos, sc) in zip(qids, hits)}
    run = {q: r for q, r in run.items() if r}
    return float(evaluate(Qrels({q: qrels[q] for q in qids if q in qrels}), Run(run), "ndcg@10", make_comparable=True))


def bench_rerank(docs: list[Doc], queries: list[str], k: int, repeat: int) -> tuple[float, float, list]:
    index_s, bm25 = best_time(lambda: BM25(k1=K1, b=B).index(docs), repeat)
    bm25._retrieve(queries[:1], k)
    query_s, hits = best_time(lambda: bm25._retrieve(queries, k), repeat)
    return index_s, query_s, hits


def bench_bm25s(docs: list[Doc], queries: list[str], k: int, repeat: int, backend: str) -> tuple[float, float, list]:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    texts = [d.full_text() for d in docs]

    def build():
        engine = bm25s.BM25(k1=K1, b=B, method="lucene", backend=backend)
        engine.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
        return engine

    def search():
        tokens = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False)
        return engine.retrieve(tokens, k=k, show_progress=False, n_threads=1)

    index_s, engine = best_time(build, repeat)
    search()  # numba compiles on first use
    query_s, (positions, scores) = best_time(search, repeat)
    return index_s, query_s, list(zip(positions, scores))


def bench_rank_bm25(docs: list[Doc], queries: list[str], k: int, repeat: int) -> tuple[float, float, list]:
    from rank_bm25 import BM25Okapi

    tokenizer = Tokenizer()
    index_s, engine = best_time(lambda: BM25Okapi(tokenizer.many(d.full_text() for d in docs), k1=K1, b=B), repeat)

    def search():
        out = []
        for q in queries:
            scores = engine.get_scores(tokenizer(q))
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
            out.append((top, scores[top]))
        return out

    query_s, hits = best_time(search, repeat)
    return index_s, query_s, hits


def bench_dense(docs: list[Doc], queries: list[str], k: int, repeat: int, index: str) -> tuple[float, float, list]:
    from rerank.retrievers.dense import Dense

    index_s, dense = best_time(lambda: Dense(index=index).index(docs), 1)
    query_s, hits = best_time(lambda: dense._retrieve(queries, k), repeat)
    return index_s, query_s, hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=positive, default=None,
                    help="use only the first N documents and N queries (all 300 queries when N > 300; smoke runs)")
    ap.add_argument("--repeat", type=positive, default=3, help="runs per timing; the best is reported")
    ap.add_argument("-k", type=positive, default=None, help="results per query (default: 1000, or every document when fewer)")
    ap.add_argument("--skip-dense", action="store_true", help="leave out the dense encoder (slow on a CPU)")
    args = ap.parse_args()

    ds = load("scifact")
    within(ap, "--limit", args.limit, len(ds.corpus()), "SciFact documents")
    docs, topics, qrels = ds.corpus()[: args.limit], ds.queries()[: args.limit], ds.qrels()
    qids, queries = [q.qid for q in topics], [q.text for q in topics]
    docids = [d.docid for d in docs]
    within(ap, "-k", args.k, len(docs), "documents")
    k = args.k or min(1000, len(docs))

    engines: dict[str, Callable[[], tuple[float, float, list]]] = {
        "rerank BM25": lambda: bench_rerank(docs, queries, k, args.repeat),
        "bm25s (numpy)": lambda: bench_bm25s(docs, queries, k, args.repeat, "numpy"),
        "bm25s (numba)": lambda: bench_bm25s(docs, queries, k, args.repeat, "numba"),
        "rank-bm25": lambda: bench_rank_bm25(docs, queries, k, args.repeat),
    }
    if not args.skip_dense:
        engines["dense flat (MiniLM-L6)"] = lambda: bench_dense(docs, queries, k, args.repeat, "flat")
    rows = []
    for name, run in engines.items():
        index_s, query_s, hits = run()
        rows.append(Row(name, index_s, query_s, ndcg10(qrels, qids, docids, hits)))
        print(f"  done: {name}", flush=True)
    print_table(rows, len(docs), len(queries), k, args.repeat)


def print_table(rows: list[Row], n_docs: int, n_queries: int, k: int, repeat: int) -> None:
    ours = rows[0]
    print(f"\nSciFact: {n_docs} docs, {n_queries} queries, k={k}, best of {repeat}")
    print("| engine | index s | docs/s | query s | queries/s | rerank BM25 query speed-up | nDCG@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        speedup = r.query_s / ours.query_s
        print(f"| {r.engine} | {r.index_s:.2f} | {n_docs / r.index_s:,.0f} | {r.query_s:.3f} | "
              f"{n_queries / r.query_s:,.0f} | {speedup:.2f}x | {r.ndcg10:.4f} |")


if __name__ == "__main__":
    main()
