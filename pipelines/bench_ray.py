"""Scale-out on Ray, measured against one process in the same run. Three parts, each optional:

* ``--grid FILE``: the same grid locally, then on a local Ray cluster with 1 and 2 workers (wall time,
  scaling ratio; the call cache is off). Every timed run comes after an untimed run of the whole grid
  in the same process (this one, or each Ray worker): the index cache is built and the models and
  datasets are loaded before the clock on both sides. The local process runs torch on all cores, each
  Ray worker on one thread (Ray's default for one CPU);
* ``--dense-docs N``: SciFact's first N documents encoded in one process (model loaded before the
  clock), then on 1 and 2 Ray Data actors (timed from starting the actors: each loads the model);
* ``--bm25-docs N [N ...]``: BM25 on a synthetic corpus of N documents with real term statistics
  (``pipelines/synthetic_corpus.py``): one process against 2 shards (build time, peak memory per
  worker, queries per second), and bm25s in its own process on the same files (``--bm25s-max`` docs at most).

Each one-process figure runs in a fresh subprocess, so its peak memory is its own.

    python pipelines/bench_ray.py --grid pipelines/grid_ray.toml --limit 10 --dense-docs 500 --bm25-docs 100000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _args import non_negative, positive, within  # pipelines/_args.py

os.environ["RERANK_PREBUILT"] = "off"  # encoding time is measured here: never read prebuilt embeddings
K = 100


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- grid ---------------------------------------------------------------------------------------------
def run_grid(grid: Path, limit: int | None, executor: Any, out: Path) -> float:
    from rerank.bench import Grid
    from rerank.runner import Runner, Settings

    g = Grid.read(grid)
    start = time.perf_counter()
    records = Runner(g.pipelines, g.datasets, Settings(limit=limit, call_cache=False), out, executor).run()
    failed = [r.error for r in records.values() if not r.ok]
    if failed:
        raise SystemExit(f"grid cells failed: {failed}")
    return time.perf_counter() - start


def warm_grid(spec: tuple[Path, int | None, Path]) -> None:
    """The untimed first run of the grid in this process (``spec``: grid, limit, output folder)."""
    run_grid(*spec[:2], None, spec[2])


def bench_grid(grid: Path, limit: int | None, work: Path) -> list[tuple[str, float]]:
    from rerank.distributed.cluster import import_ray
    from rerank.distributed.ray import RayExecutor

    warm_grid((grid, limit, work / "warm"))  # builds and caches the indexes, loads models and datasets here
    rows = [("local (1 process)", run_grid(grid, limit, None, work / "local"))]
    for workers in (1, 2):
        with RayExecutor(workers=workers) as ex:  # each worker warmed as this process was, before the clock
            import_ray().get([actor.call.remote(warm_grid, (grid, limit, work / f"warm-ray{workers}-{i}"))
                              for i, actor in enumerate(ex.actors)])
            rows.append((f"Ray, {workers} worker{'s' if workers > 1 else ''}", run_grid(grid, limit, ex, work / f"ray{workers}")))
    for name in ("ray1", "ray2"):
        same = all((work / "local" / p.relative_to(work / name)).read_bytes() == p.read_bytes()
                   for p in (work / name).rglob("*.trec"))
        print(f"  {name} run files identical to local: {same}", flush=True)
    return rows


# -- dense --------------------------------------------------------------------------------------------
def bench_dense(n_docs: int) -> list[tuple[str, float, int]]:
    from rerank.data import load
    from rerank.distributed.dense import encode_corpus
    from rerank.retrievers.dense import Dense

    texts = [d.full_text() for d in load("scifact").corpus()[:n_docs]]
    dense = Dense()
    dense.encoder.encode(texts[:8], kind="doc")  # model loaded before the clock
    start = time.perf_counter()
    local = dense.encoder.encode(texts, kind="doc")
    rows = [("one process (torch threads: all cores)", time.perf_counter() - start, 1)]
    for actors in (1, 2):
        start = time.perf_counter()
        got = encode_corpus(texts, Dense(), actors, batch_size=64)
        rows.append((f"Ray Data, {actors} actor{'s' if actors > 1 else ''} (1 CPU each)", time.perf_counter() - start, actors))
        print(f"  {actors} actors: max |diff| to local {np.abs(got - local).max():.2e}", flush=True)
    return rows


# -- BM25 ---------------------------------------------------------------------------------------------
def _one_process(kind: str, files: list[str], queries: list[str], out: Any) -> None:
    """In a fresh process: load the documents, build, query; report times and peak memory."""
    from rerank.io import read_jsonl
    from rerank.types import Doc

    docs = [Doc(str(r["_id"]), r.get("text", ""), r.get("title", "")) for f in files for r in read_jsonl(f)]
    loaded = peak_rss()
    start = time.perf_counter()
    if kind == "rerank":
        from rerank.retrievers.bm25 import BM25

        bm25 = BM25().index(docs)
        build = time.perf_counter() - start
        bm25._retrieve(queries[:1], K)
        start = time.perf_counter()
        bm25._retrieve(queries, K)
    else:
        import bm25s
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
        engine = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
        engine.index(bm25s.tokenize([d.full_text() for d in docs], stopwords="en", stemmer=stemmer, show_progress=False),
                     show_progress=False)
        build = time.perf_counter() - start
        start = time.perf_counter()
        engine.retrieve(bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False), k=K,
                        show_progress=False, n_threads=1)
    out.put({"build_s": build, "qps": len(queries) / (time.perf_counter() - start), "peak": peak_rss(), "docs_loaded": loaded})


def in_subprocess(kind: str, files: list[str], queries: list[str]) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_one_process, args=(kind, files, queries, out))
    proc.start()
    result = out.get()
    proc.join()
    return result


def bench_bm25(n_docs: int, work: Path, bm25s_max: int) -> list[tuple[str, dict[str, Any]]]:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from synthetic_corpus import generate

    from rerank.distributed.bm25 import build_bm25
    from rerank.io import read_jsonl

    folder = work / f"synth-{n_docs}"
    files = [str(p) for p in generate(n_docs, 2, folder)]
    queries = [r["text"] for r in read_jsonl(folder / "queries.jsonl")]
    rows = [("rerank BM25, 1 process", in_subprocess("rerank", files, queries))]
    start = time.perf_counter()
    sharded = build_bm25(files, shards=2) % K
    build = time.perf_counter() - start
    sharded({"w": queries[0]})
    start = time.perf_counter()
    sharded({f"q{i}": q for i, q in enumerate(queries)})
    qps = len(queries) / (time.perf_counter() - start)
    peaks = sharded.stages[0].peak_memory()
    sharded.stages[0].close()
    rows.append(("rerank BM25, 2 shards (scatter-gather)", {"build_s": build, "qps": qps, "peak": max(peaks), "peaks": peaks}))
    if n_docs <= bm25s_max:
        rows.append(("bm25s 1 process", in_subprocess("bm25s", files, queries)))
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=Path)
    ap.add_argument("--limit", type=positive, help="judged queries per dataset in the grid")
    ap.add_argument("--dense-docs", type=positive, help="first SciFact documents encoded")
    ap.add_argument("--bm25-docs", type=positive, nargs="*", default=[])
    ap.add_argument("--bm25s-max", type=non_negative, default=1_000_000, help="largest corpus bm25s is run on")
    ap.add_argument("--cpus", type=positive, default=2, help="logical CPUs of the local Ray cluster")
    args = ap.parse_args()
    if args.dense_docs:
        from rerank.data import load

        within(ap, "--dense-docs", args.dense_docs, len(load("scifact").corpus()), "SciFact documents")

    from rerank.distributed.cluster import connect, shutdown

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    connect(num_cpus=args.cpus)
    report: dict[str, Any] = {}
    try:
        if args.grid:
            rows = bench_grid(args.grid, args.limit, work)
            print(f"\n{args.grid} (limit {args.limit}): wall time of the whole grid, each after an untimed run of it "
                  "in the same process(es): indexes cached, models and datasets loaded; call cache off; "
                  "torch threads: all cores locally, one per Ray worker")
            print("| where | s | speed-up over 1 Ray worker |\n|---|---:|---:|")
            for name, s in rows:
                print(f"| {name} | {s:.1f} | {rows[1][1] / s:.2f}x |")
            report["grid"] = rows
        if args.dense_docs:
            rows = bench_dense(args.dense_docs)
            print(f"\nSciFact, first {args.dense_docs} documents, MiniLM-L6: encoding wall time "
                  "(one process: model loaded before the clock; Ray Data: actors started and models loaded on the clock)")
            print("| where | s | docs/s | speed-up over 1 actor |\n|---|---:|---:|---:|")
            for name, s, _ in rows:
                print(f"| {name} | {s:.1f} | {args.dense_docs / s:.1f} | {rows[1][1] / s:.2f}x |")
            report["dense"] = rows
        for n in args.bm25_docs:
            rows = bench_bm25(n, work, args.bm25s_max)
            print(f"\nBM25 on a synthetic corpus of {n:,} documents, k={K}")
            print("| engine | build s | peak memory per worker (GB) | queries/s |\n|---|---:|---:|---:|")
            for name, r in rows:
                peaks = " + ".join(f"{p / 1e9:.2f}" for p in r.get("peaks", [r["peak"]]))
                print(f"| {name} | {r['build_s']:.1f} | {peaks} | {r['qps']:.0f} |")
            report[f"bm25-{n}"] = rows
    finally:
        shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print("\n" + json.dumps(report, default=str))


if __name__ == "__main__":
    main()
