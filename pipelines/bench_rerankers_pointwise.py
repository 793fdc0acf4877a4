"""Pointwise and pairwise LLM rerankers on TREC-DL 2019: nDCG@10 and seconds per query.

Each method reranks the bundled BM25 top-``--depth`` of the first ``--limit`` queries; nDCG@10 is
ranx's (trec_eval form, graded relevance) over those same queries. Seconds per query is the wall
time of the reranking stage (the backend is loaded once, before timing). A 135M model is a weak
reranker: these numbers document speed and honest effectiveness, not a claim to beat BM25.

    python pipelines/bench_rerankers_pointwise.py --limit 3 --depth 10            # quick run, CPU
    python pipelines/bench_rerankers_pointwise.py --backend vllm:Qwen/Qwen2.5-7B-Instruct --depth 100
"""

from __future__ import annotations

import argparse
import time

from rerank import Ranking, get
from rerank.backends import load_backend
from rerank.data import load
from rerank.evaluate import evaluate

from _args import positive, within  # pipelines/_args.py

METHODS = {
    "yes-no": ("yes-no", {}),
    "erank": ("erank", {}),
    "prp-heapsort": ("prp", {"variant": "heapsort"}),
    "prp-sliding": ("prp", {"variant": "sliding"}),
    "prp-allpair": ("prp", {"variant": "allpair"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="hf:smollm2", help="backend spec (default: hf:smollm2)")
    ap.add_argument("--limit", type=positive, default=43, help="number of queries (default: all 43)")
    ap.add_argument("--depth", type=positive, default=20, help="BM25 candidates reranked per query (default: 20)")
    ap.add_argument("--top-k", type=positive, default=10, help="positions sorted by PRP heapsort/sliding (default: 10)")
    ap.add_argument("--batch-size", type=positive, default=16, help="prompts per backend call (default: 16)")
    ap.add_argument("--methods", nargs="+", default=["yes-no", "erank", "prp-heapsort"], choices=sorted(METHODS))
    args = ap.parse_args()

    ds = load("trec-dl-2019")
    bm25 = ds.run("bm25")
    within(ap, "--limit", args.limit, len(bm25.queries()), "queries of the BM25 run")
    within(ap, "--depth", args.depth, max(len(c) for c in bm25.per_query()), "candidates per query of the BM25 run")
    qids = list(bm25.queries())[: args.limit]
    candidates = bm25.select(qids).top(args.depth)
    all_qrels = ds.qrels()
    qrels = {q: all_qrels[q] for q in qids if q in all_qrels}
    backend = load_backend(args.backend)

    print(f"TREC-DL 2019, {len(qids)} queries, BM25 top-{args.depth}, backend {args.backend}")
    print("| method | nDCG@10 | s/query |\n|---|---|---|")
    print(f"| BM25 (first stage) | {evaluate(candidates, qrels, ['ndcg@10'])['ndcg@10']:.4f} | - |", flush=True)
    for method in args.methods:
        name, params = METHODS[method]
        if name == "prp":
            params = {**params, "top_k": args.top_k}
        reranker = get("reranker", name, backend=backend, batch_size=args.batch_size, **params)
        start = time.perf_counter()
        out: Ranking = reranker(candidates)
        seconds = (time.perf_counter() - start) / len(qids)
        print(f"| {method} | {evaluate(out, qrels, ['ndcg@10'])['ndcg@10']:.4f} | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
