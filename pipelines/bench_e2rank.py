"""E2Rank on SciFact and TREC-DL 2019: nDCG@10 before/after, and reranking latency per query.

First stage: dense retrieval with the offline MiniLM (and, on TREC-DL 2019, the shipped BM25 run).
E2Rank re-embeds each query as a listwise prompt with its top-K candidates and re-scores the
candidates by cosine; document embeddings come from the dense index (one extra query encoding).
Latency is compared with the LLM pointwise yes/no and listwise (RankGPT-style sliding window)
rerankers (SmolLM2-135M on the HF backend) on a few queries. Default sizes are slices for a 2-core
machine; ``--full`` uses every judged query and the whole corpus, with the dense index built (or
loaded from the cache, ``~/.cache/rerank/indexes``) by the pipeline-expression builder.

    python pipelines/bench_e2rank.py --dataset scifact --full
    python pipelines/bench_e2rank.py --dataset trec-dl-2019 --full
"""

from __future__ import annotations

import argparse
import random
import time

from rerank import evaluate
from rerank.data import load
from rerank.expr import build
from rerank.rerankers.e2rank import E2Rank
from rerank.retrievers.dense import Dense

from _args import non_negative, positive, within  # pipelines/_args.py


QUERIES = 50
"""Judged queries in the slice unless ``--queries`` says."""


def slice_dataset(ds, args, parser):
    queries = ds.queries()
    qrels = ds.qrels()
    queries = [q for q in queries if q.qid in qrels]
    if not args.full:
        if args.queries is not None:  # asked for: refused beyond what there is; the default takes what there is
            within(parser, "--queries", args.queries, len(queries), f"judged queries of {ds.name}")
        queries = queries[: args.queries or QUERIES]
    if ds.name.startswith("trec-dl") or args.full:
        run = ds.run("bm25").select([q.qid for q in queries]).top(args.depth) if ds.name.startswith("trec-dl") else None
        keep = set(run.to_pandas()["docid"]) if run is not None and not args.full else None
        docs = ds.corpus() if keep is None else [d for d in ds.corpus() if d.docid in keep]
        return queries, docs, run
    judged = {d for q in queries for d in qrels.get(q.qid, {})}
    others = [d for d in ds.corpus() if d.docid not in judged]
    within(parser, "--distractors", args.distractors, len(others), f"documents of {ds.name} not judged for the slice's queries")
    docs = [ds.docstore[d] for d in sorted(judged) if d in ds.docstore] + random.Random(0).sample(others, args.distractors)
    return queries, docs, None


def timed(stage, inp):
    start = time.perf_counter()
    out = stage(inp)
    return out, (time.perf_counter() - start) / max(1, len(inp.queries()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="scifact")
    p.add_argument("--queries", type=positive, help=f"queries in the slice (default: {QUERIES}, or all judged ones when fewer)")
    p.add_argument("--distractors", type=non_negative, default=500, help="SciFact: unjudged documents added to the judged ones")
    p.add_argument("--depth", type=positive, default=20, help="candidates reranked per query")
    p.add_argument("--k", type=positive, default=10, help="E2Rank: documents in the listwise prompt")
    p.add_argument("--llm-queries", type=non_negative, default=2, help="queries timed with the LLM rerankers (0: skip)")
    p.add_argument("--full", action="store_true", help="every query and the whole corpus")
    args = p.parse_args()

    ds = load(args.dataset)
    queries, docs, bm25_run = slice_dataset(ds, args, p)
    within(p, "--llm-queries", args.llm_queries, len(queries), "queries in the slice")
    print(f"{ds.name}: {len(queries)} queries, {len(docs)} documents, depth {args.depth}, K={args.k}")
    start = time.perf_counter()
    dense = build("dense", ds) if args.full else Dense().index(docs)  # full: the cached index of the dataset
    print(f"dense index: {time.perf_counter() - start:.1f} s")
    prompt = "e2rank/scifact" if "scifact" in ds.name else "e2rank/default"
    e2rank = E2Rank(prompt=prompt, num_input_docs=args.k, doc_embeddings=dense)
    qrels, metric = {q.qid: ds.qrels()[q.qid] for q in queries}, ["ndcg@10"]  # the slice's queries only
    rows = []
    firsts = [("dense", (dense % args.depth)(queries))] + ([("bm25 (shipped run)", bm25_run)] if bm25_run is not None else [])
    for name, first in firsts:
        base = evaluate(first, qrels, metric, rel_threshold=ds.rel_threshold)["ndcg@10"]
        e2rank(first.select(list(first.queries())[:1]))  # warm-up: model load
        out, latency = timed(e2rank, first)
        after = evaluate(out, qrels, metric, rel_threshold=ds.rel_threshold)["ndcg@10"]
        rows.append((name, base, after, latency * 1000))
    print("\n| first stage | nDCG@10 first stage | nDCG@10 >> e2rank | e2rank ms/query |")
    print("|---|---|---|---|")
    for name, base, after, ms in rows:
        print(f"| {name} | {base:.4f} | {after:.4f} | {ms:.1f} |")

    if args.llm_queries:
        from rerank.rerankers.listwise import Listwise
        from rerank.rerankers.pointwise import YesNo

        first = firsts[0][1]
        few = first.select(list(first.queries())[: args.llm_queries])
        _, emb = timed(e2rank, few)
        print(f"\nlatency on {args.llm_queries} queries x {args.depth} candidates (CPU):\n")
        print("| reranker | ms/query | x e2rank |")
        print("|---|---|---|")
        print(f"| e2rank (MiniLM, K={args.k}) | {emb * 1000:.1f} | 1 |")
        for name, llm in (("LLM yes/no pointwise (SmolLM2-135M, HF)", YesNo("hf:smollm2")),
                          ("LLM listwise, window 20 (SmolLM2-135M, HF)", Listwise("hf:smollm2"))):
            llm(few.select(list(few.queries())[:1]).top(2))  # warm-up: model load
            _, ms = timed(llm, few)
            print(f"| {name} | {ms * 1000:.0f} | {ms / emb:.0f} |")


if __name__ == "__main__":
    main()
