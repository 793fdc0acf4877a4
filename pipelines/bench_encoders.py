"""Encoder and cross-encoder runtimes against raw sentence-transformers (torch, float32), in one run.

Dense: SciFact documents (title and text, MiniLM, batch 64) encoded by raw ``SentenceTransformer.encode``
and by ``Dense(runtime=...)`` indexing, then SciFact dense nDCG@10 (300 queries) for each runtime. With
``--docs N`` below the corpus size the collection is a slice: every judged document plus random others
up to N (the nDCG of a slice is higher than on the full corpus; compare runtimes with each other).
Cross-encoder: TREC-DL 2019 BM25 top-``--top`` pairs scored by raw ``CrossEncoder.predict`` and by
``CrossEncoderReranker(runtime=...)``. No trained cross-encoder installs offline, so the model is the
offline MiniLM body with an untrained one-score head (as in the tests) and the figure of merit is
score agreement with float32 torch: mean per-query Spearman correlation.

Runtimes that cannot be installed here are listed with the reason. Times are wall clock, one pass.

    python pipelines/bench_encoders.py                          # all 5,183 docs, 43 queries x top 100
    python pipelines/bench_encoders.py --docs 600 --queries 5   # a short run
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Callable

import numpy as np
from scipy.stats import spearmanr

from rerank import Ranking, evaluate
from rerank.data import load
from rerank.encoders import DEFAULT_ENCODER, RUNTIMES, resolve_encoder, runtime_kwargs
from rerank.errors import MissingDependency
from rerank.rerankers.cross_encoder import CrossEncoderReranker
from rerank.retrievers.dense import Dense
from rerank.types import Doc

from _args import positive, within  # pipelines/_args.py

os.environ["RERANK_PREBUILT"] = "off"  # encoding time is measured here: never read prebuilt embeddings
TRIED = [r for r in RUNTIMES if r != "auto"]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def available(runtime: str) -> str | None:
    """None when ``runtime`` can run here, else why not."""
    try:
        runtime_kwargs(runtime)
    except MissingDependency as e:
        return str(e).split(";")[0]
    return None


def scifact_docs(n_docs: int | None, parser: argparse.ArgumentParser) -> list[Doc]:
    """SciFact's corpus, or (``n_docs`` below its size) every judged document plus random others up to ``n_docs``."""
    docs = load("scifact").corpus()
    within(parser, "--docs", n_docs, len(docs), "SciFact documents")
    if n_docs is None or n_docs == len(docs):
        return docs
    judged = {d for rels in load("scifact").qrels().values() for d in rels}
    kept, others = [d for d in docs if d.docid in judged], [d for d in docs if d.docid not in judged]
    if n_docs < len(kept):
        parser.error(f"argument --docs: {n_docs} is below the {len(kept)} judged SciFact documents, which every slice keeps")
    return kept + random.Random(0).sample(others, n_docs - len(kept))


def bench_dense(docs: list[Doc]) -> None:
    from sentence_transformers import SentenceTransformer

    ds = load("scifact")
    texts = [d.full_text() for d in docs]
    raw = SentenceTransformer(resolve_encoder(DEFAULT_ENCODER), device="cpu")
    raw.encode(texts[:64], batch_size=64)  # warm-up
    base, _ = timed(lambda: raw.encode(texts, batch_size=64, normalize_embeddings=True))
    what = "the full corpus" if len(docs) == len(ds.corpus()) else "judged documents + random others"
    print(f"\n## Dense encoding: SciFact, {len(docs)} documents ({what}), all-MiniLM-L6-v2, batch 64\n")
    print("| runtime | seconds | docs/s | vs raw sentence-transformers torch | nDCG@10 (SciFact dense) |")
    print("|---|---|---|---|---|")
    print(f"| raw sentence-transformers, torch fp32 | {base:.1f} | {len(docs) / base:.1f} | 1.00x | |")
    topics = Ranking.from_queries(ds.queries())
    for runtime in TRIED:
        if why := available(runtime):
            print(f"| rerank Dense, {runtime} | not installable here: {why} | | | |")
            continue
        dense = Dense(runtime=runtime, num_results=100)
        dense.encoder.encode(texts[:64], kind="doc")  # warm-up (and load)
        secs, _ = timed(lambda: dense.index(docs))
        ndcg = evaluate(dense(topics), ds.qrels(), ["ndcg@10"])["ndcg@10"]
        print(f"| rerank Dense, {runtime} | {secs:.1f} | {len(docs) / secs:.1f} | {base / secs:.2f}x | {ndcg:.4f} |")


def bench_cross_encoder(n_queries: int, top: int) -> None:
    from sentence_transformers import CrossEncoder

    run = load("trec-dl-2019").run("bm25")
    run = run.select(list(run.queries())[:n_queries]).top(top)
    cands = list(run.per_query())
    pairs = [(c.query, t) for c in cands for t in c.texts]
    with tempfile.TemporaryDirectory() as folder:
        CrossEncoder(resolve_encoder(DEFAULT_ENCODER), num_labels=1).save(folder)
        raw = CrossEncoder(folder, device="cpu")
        raw.predict(pairs[:32], batch_size=32)
        base, reference = timed(lambda: raw.predict(pairs, batch_size=32, show_progress_bar=False))
        print(f"\n## Cross-encoding: TREC-DL 2019 BM25, {len(cands)} queries x top {top} = {len(pairs)} pairs, batch 32\n")
        print("| runtime | seconds | pairs/s | vs raw sentence-transformers torch | Spearman with fp32 torch (mean per query) |")
        print("|---|---|---|---|---|")
        print(f"| raw sentence-transformers CrossEncoder, torch fp32 | {base:.1f} | {len(pairs) / base:.1f} | 1.00x | 1 |")
        for runtime in TRIED:
            if why := available(runtime):
                print(f"| rerank cross-encoder, {runtime} | not installable here: {why} | | | |")
                continue
            ce = CrossEncoderReranker(folder, runtime=runtime, truncation="truncate")
            ce.predict(pairs[:32])
            secs, scores = timed(lambda: ce.predict(pairs))
            rho, start = [], 0
            for c in cands:
                rho.append(spearmanr(scores[start:start + len(c)], reference[start:start + len(c)]).statistic)
                start += len(c)
            print(f"| rerank cross-encoder, {runtime} | {secs:.1f} | {len(pairs) / secs:.1f} | {base / secs:.2f}x | "
                  f"{np.mean(rho):.4f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=positive, help="SciFact documents to encode, at least the judged ones (default: all)")
    p.add_argument("--queries", type=positive, default=43, help="TREC-DL 2019 queries for the cross-encoder")
    p.add_argument("--top", type=positive, default=100, help="BM25 candidates per query for the cross-encoder")
    p.add_argument("--skip-dense", action="store_true")
    p.add_argument("--skip-cross", action="store_true")
    args = p.parse_args()
    docs = None if args.skip_dense else scifact_docs(args.docs, p)
    run = load("trec-dl-2019").run("bm25")
    within(p, "--queries", args.queries, len(run.queries()), "TREC-DL 2019 queries")
    within(p, "--top", args.top, max(len(c) for c in run.per_query()), "BM25 candidates per query")
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if docs is not None:
        bench_dense(docs)
    if not args.skip_cross:
        bench_cross_encoder(args.queries, args.top)


if __name__ == "__main__":
    main()
