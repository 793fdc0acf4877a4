"""Benchmark the list-based LLM rerankers on TREC-DL 2019 over the bundled BM25 run.

Reranks the BM25 top ``--depth`` of the first ``--limit`` queries with listwise (RankGPT sliding
window), FIRST, InsertRank, setwise (heapsort) and groupwise, and prints nDCG@10, seconds per query
and the valid-answer rate (answers that needed no repair) of each, next to BM25 itself::

    python pipelines/bench_rerankers_listwise.py --limit 5 --depth 20 --backend hf:smollm2

All queries' prompts at the same step share one backend call, so seconds per query fall with more
queries on a batching backend. A 135M model is a weak reranker: the numbers measure the mechanics
(speed, format-following), not what the methods can do with a strong model.
"""

from __future__ import annotations

import argparse
import time

from rerank import Ranking, evaluate
from rerank.backends import load_backend
from rerank.data import load
from rerank.registry import get

from _args import positive, within  # pipelines/_args.py

METHODS = {
    "listwise": lambda a: {"window": a.window, "step": a.step},
    "first": lambda a: {"window": a.window, "step": a.step},
    "insertrank": lambda a: {"window": a.window, "step": a.step, "normalize": a.normalize, "score_range": (0, 100)},
    "setwise": lambda a: {"set_size": a.set_size, "k": 10},
    "groupwise": lambda a: {"group_size": a.set_size + 1, "anchors": 1},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=positive, default=5, help="number of queries (first N judged queries)")
    ap.add_argument("--depth", type=positive, default=20, help="BM25 candidates reranked per query")
    ap.add_argument("--backend", default="hf:smollm2", help="backend spec, e.g. hf:smollm2 or vllm:Qwen/Qwen2.5-7B-Instruct")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--window", type=positive, default=10, help="listwise window (FIRST, InsertRank too)")
    ap.add_argument("--step", type=positive, default=5, help="listwise step")
    ap.add_argument("--set-size", type=positive, default=4, help="setwise set size (groupwise groups are one larger)")
    ap.add_argument("--normalize", default="minmax", choices=["raw", "minmax", "rank"], help="InsertRank score display")
    ap.add_argument("--max-words", type=positive, default=60, help="words kept per passage")
    ap.add_argument("--batch-size", type=positive, default=8, help="prompts per backend call")
    args = ap.parse_args()
    if unknown := set(args.methods.split(",")) - set(METHODS):
        ap.error(f"argument --methods: unknown {', '.join(sorted(unknown))} (choose from {', '.join(METHODS)})")

    ds = load("trec-dl-2019")
    run = ds.run("bm25")
    judged = [q for q in run.queries() if q in ds.qrels()]
    within(ap, "--limit", args.limit, len(judged), "judged queries of the BM25 run")
    within(ap, "--depth", args.depth, max(len(c) for c in run.per_query()), "candidates per query of the BM25 run")
    qids = judged[: args.limit]
    first_stage = run.select(qids).top(args.depth)
    qrels = {q: ds.qrels()[q] for q in qids}  # judged queries outside the slice would count as 0
    t = time.perf_counter()
    backend = load_backend(args.backend)
    print(f"TREC-DL 2019, {len(qids)} queries, BM25 top {args.depth}, backend {args.backend} "
          f"(loaded in {time.perf_counter() - t:.0f} s)\n")
    print("| method | nDCG@10 | s/query | valid answers | answers |\n|---|---|---|---|---|")
    print(f"| bm25 | {evaluate(first_stage, qrels, ['ndcg@10'])['ndcg@10']:.4f} | - | - | - |")
    cands = list(first_stage.per_query())
    for name in args.methods.split(","):
        reranker = get("reranker", name, backend=backend, max_words=args.max_words, batch_size=args.batch_size,
                       depth=args.depth, **METHODS[name](args))
        t = time.perf_counter()
        out = reranker.rerank_many(cands)
        seconds = (time.perf_counter() - t) / len(cands)
        ndcg = evaluate(Ranking.from_candidates(out), qrels, ["ndcg@10"])["ndcg@10"]
        answers = sum(c.info["parse"]["answers"] for c in out)
        valid = sum(c.info["parse"]["valid"] for c in out)
        print(f"| {name} | {ndcg:.4f} | {seconds:.2f} | {valid / max(answers, 1):.0%} | {answers} |", flush=True)


if __name__ == "__main__":
    main()
