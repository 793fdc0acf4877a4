"""ANNCUR versus retrieve-then-rerank: recall of the scorer's exact top-k against scorer calls per query.

The scorer is MaxSim late interaction over the offline MiniLM token embeddings (rerank/scorers.py), a
real score that no fixed query and document vectors reproduce. On a slice of a bundled collection:
exact top-k per test query (every item scored), then, for each budget B of scorer calls per query,

* ``anncur``: B/2 fixed random anchor items, B/2 exact re-scores of the best approximated items;
* ``anncur-adaptive``: the anchor items chosen in 2 rounds (the second from the current best);
* ``anncur-bm25-anchors``: anchor items from BM25's top for the query;
* ``bm25 >> scorer`` and ``dense >> scorer``: the first stage's top B, re-scored (B calls).

Dense uses the same MiniLM as MaxSim, so it is a strong (correlated) first stage here.

    python pipelines/bench_cur.py --dataset scifact --docs 300 --plot results/cur_recall_vs_cost.png
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from rerank.data import load
from rerank.retrievers.bm25 import BM25
from rerank.retrievers.cur import ANNCUR
from rerank.retrievers.dense import Dense
from rerank.scorers import CountingScorer, MaxSim

from _args import non_negative, positive, positive_list, within  # pipelines/_args.py


def recall_at(found: list[int], exact_row: np.ndarray, k: int) -> float:
    return len(set(found[:k]) & set(np.argsort(-exact_row)[:k].tolist())) / k


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="scifact")
    p.add_argument("--docs", type=non_negative, default=300, help="items in the slice (0: the whole corpus)")
    p.add_argument("--anchor-queries", type=positive, default=50, help="dataset queries used as anchor queries")
    p.add_argument("--test-queries", type=positive, default=10, help="other dataset queries, the ones evaluated")
    p.add_argument("--budgets", type=positive_list, default=[20, 40, 80],
                   help="scorer calls per query, comma-separated, each from 4 (2 adaptive rounds of B/2 anchor items) "
                        "to the items in the slice")
    p.add_argument("--k", type=positive, default=10, help="recall of the exact top-k")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default="results/cur_recall_vs_cost.png")
    args = p.parse_args()
    if min(args.budgets) < 4:
        p.error(f"argument --budgets: {min(args.budgets)} is below 4 (anncur-adaptive scores B/2 anchor items in 2 rounds)")

    ds = load(args.dataset)
    queries = [q.text for q in ds.queries()]
    within(p, "--anchor-queries plus --test-queries", args.anchor_queries + args.test_queries, len(queries),
           f"queries of {ds.name}")
    corpus = ds.corpus()
    within(p, "--docs", args.docs, len(corpus), f"documents of {ds.name}")
    items = args.docs or len(corpus)
    within(p, "--budgets", max(args.budgets), items, "items in the slice")
    within(p, "--k", args.k, items, "items in the slice")
    random.Random(args.seed).shuffle(queries)
    anchors, tests = queries[: args.anchor_queries], queries[args.anchor_queries: args.anchor_queries + args.test_queries]
    docs = corpus if not args.docs else random.Random(args.seed).sample(corpus, args.docs)
    texts = [d.full_text() for d in docs]
    print(f"{ds.name}: {len(docs)} items, {len(anchors)} anchor queries, {len(tests)} test queries, top-{args.k}")

    scorer = CountingScorer(MaxSim())
    start = time.perf_counter()
    exact = np.stack([scorer([q] * len(texts), texts) for q in tests])
    print(f"exact scores ({len(tests)} x {len(docs)}): {time.perf_counter() - start:.1f} s")
    bm25, dense = BM25().index(docs), Dense().index(docs)

    budgets = args.budgets
    methods = {
        "anncur": lambda b: ANNCUR(scorer, args.anchor_queries, b // 2, b, seed=args.seed),
        "anncur-adaptive": lambda b: ANNCUR(scorer, args.anchor_queries, b // 2, b, rounds=2, seed=args.seed),
        "anncur-bm25-anchors": lambda b: ANNCUR(scorer, args.anchor_queries, b // 2, b, anchor_items="retriever", seed=args.seed),
    }
    table: dict[str, list[float]] = {name: [] for name in [*methods, "bm25 >> scorer", "dense >> scorer"]}
    start = time.perf_counter()
    matrix = None
    for b in budgets:
        for name, make in methods.items():
            cur = make(b)
            if matrix is None:
                cur.index(docs, anchor_queries=anchors)
                matrix = cur
            else:  # the anchor matrix does not depend on the budget: share it
                cur.anchor_queries, cur.matrix = matrix.anchor_queries, matrix.matrix
                cur._set_docs(docs)
                if cur.anchor_items == "retriever":
                    cur._first = bm25
            before = scorer.calls
            found = [cur.search_positions(q, args.k)[0].tolist() for q in tests]
            assert scorer.calls - before == b * len(tests), "budget not respected"
            table[name].append(float(np.mean([recall_at(f, row, args.k) for f, row in zip(found, exact)])))
        for name, first in (("bm25 >> scorer", bm25), ("dense >> scorer", dense)):
            hits = first._retrieve(tests, b)
            found = [sorted(pos.tolist(), key=lambda i, row=row: -row[i]) for (pos, _), row in zip(hits, exact)]
            table[name].append(float(np.mean([recall_at(f, row, args.k) for f, row in zip(found, exact)])))
    print(f"anchor matrix + searches: {time.perf_counter() - start:.1f} s")

    print(f"\nrecall@{args.k} of the exact MaxSim top-{args.k} ({len(docs)} items, {len(tests)} test queries)\n")
    print("| method | " + " | ".join(f"B={b}" for b in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for name, values in table.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in table.items():
        ax.plot(budgets, values, marker="o", label=name)
    ax.set_xlabel("scorer calls per query")
    ax.set_ylabel(f"recall@{args.k} of exact top-{args.k}")
    ax.set_title(f"{ds.name}, {len(docs)} items, MaxSim scorer")
    ax.legend()
    ax.grid(alpha=0.3)
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=120, bbox_inches="tight")
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
