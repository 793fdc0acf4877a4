"""Serving benchmark: ``rerank serve`` (dynamic batching on and off) against ``vllm serve`` on one
cross-encoder folder, same machine, same requests, one server at a time.

Each request is one TREC-DL 2019 query with its BM25 top ``--docs`` passages (bundled run), sent to
the server's Jina/vLLM-shaped ``POST /rerank``. For 1, 8 and 32 concurrent asyncio clients the
script sends ``--requests`` requests and reports throughput (requests/s) and p50/p95/p99 latency,
and checks every answer (all documents back, each index once). ``agree`` is the largest score
difference to the first server on the same requests (same model, so it should be ~0).

Without ``--model`` the cross-encoder is the offline all-MiniLM-L6-v2 body with a fresh one-score
head (no trained cross-encoder installs offline): right for speed, meaningless for quality. It and the
servers' logs live in a temporary folder that is removed at exit.

Threads (``--threads N``): rerank's servers get ``OMP_NUM_THREADS=N`` (the in-process run
``torch.set_num_threads(N)``); vLLM's CPU worker takes its OpenMP thread count from the cores listed in
``VLLM_CPU_OMP_THREADS_BIND`` (it overrides ``OMP_NUM_THREADS``), so it gets the last N cores this
process may use there, pinned. With ``--threads 0`` each keeps its default (vLLM: ``auto``, one thread
per physical core except those it reserves: one core of a 2-core machine). The table says which.

    python pipelines/bench_serve.py --requests 64 --docs 20 --out results/bench_serve.md
    python pipelines/bench_serve.py --model path/to/ce --servers rerank,vllm

The Infinity peer (``infinity-emb``) is not run: installing it would downgrade numpy,
huggingface_hub and uvicorn in the shared environment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np

from _args import non_negative, positive, within  # pipelines/_args.py

SERVERS = ("rerank", "rerank-nobatch", "vllm")
IN_PROCESS = "in-process"  # reranker.rerank() in this process, one request at a time: the model's own time


def build_tiny_cross_encoder(folder: Path) -> str:
    import torch
    from sentence_transformers import CrossEncoder

    from rerank.encoders import DEFAULT_ENCODER, resolve_encoder

    torch.manual_seed(0)  # the fresh head
    CrossEncoder(resolve_encoder(DEFAULT_ENCODER), num_labels=1).save(str(folder))
    return str(folder)


def trec_dl_lists(docs: int) -> list[tuple[str, list[str]]]:
    """Each TREC-DL 2019 query with its BM25 top ``docs`` passages (fewer where its run is shorter)."""
    from rerank.data import load

    return [(c.query, list(c.texts[:docs])) for c in load("trec-dl-2019").run("bm25").top(docs).per_query()]


def thread_env(kind: str, threads: int) -> dict[str, str]:
    """The thread settings a server process gets (see the module docstring); {} for the defaults."""
    if not threads:
        return {}
    if kind == "vllm":
        cores = sorted(os.sched_getaffinity(0))[-threads:]
        return {"OMP_NUM_THREADS": str(threads), "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores))}
    return {"OMP_NUM_THREADS": str(threads)}


def thread_note(kind: str, threads: int) -> str:
    if kind == IN_PROCESS:
        return f"torch.set_num_threads({threads})" if threads else "torch default"
    env = thread_env(kind, threads)
    return " ".join(f"{k}={v}" for k, v in env.items()) or ("vLLM auto binding" if kind == "vllm" else "torch default")


def command(kind: str, model: str, port: int) -> tuple[list[str], dict[str, str]]:
    if kind.startswith("rerank"):
        cmd = [sys.executable, "-m", "rerank.cli", "--quiet", "serve", "--pipeline", f"cross-encoder(model={model!r})",
               "--port", str(port), "--model-name", "ce"]
        return cmd + (["--set", "max_batch_requests=1"] if kind == "rerank-nobatch" else []), {}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", "ce",
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager"]
    return cmd, {"VLLM_CPU_KVCACHE_SPACE": "1", "TORCHDYNAMO_DISABLE": "1", "HF_HUB_OFFLINE": "1"}


class Server:
    """One server in its own process group on 127.0.0.1; stopped by its PID."""

    def __init__(self, kind: str, model: str, threads: int, logs: Path, timeout: float = 600.0):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd, env = command(kind, model, port)
        self.kind, self.url = kind, f"http://127.0.0.1:{port}"
        self.log = logs / f"{kind}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **env, **thread_env(kind, threads)})
        try:  # stopped on any failure to start, an interrupt included
            self.ready_s = self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> float:
        """Seconds until ``/health`` answers 200."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.kind} not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


async def load_run(url: str, requests: Sequence[tuple[str, list[str]]], clients: int) -> tuple[float, list[float], list[dict]]:
    """Send every request with ``clients`` concurrent workers; return (wall seconds, latencies, scores by index)."""
    latencies = [0.0] * len(requests)
    scores: list[dict] = [{}] * len(requests)
    todo = iter(range(len(requests)))

    async def worker(http: httpx.AsyncClient) -> None:
        for i in todo:
            query, docs = requests[i]
            started = time.perf_counter()
            r = await http.post(url + "/rerank", json={"model": "ce", "query": query, "documents": docs})
            latencies[i] = time.perf_counter() - started
            r.raise_for_status()
            results = r.json()["results"]
            if sorted(x["index"] for x in results) != list(range(len(docs))):
                raise RuntimeError(f"request {i}: the answer does not hold each document once")
            scores[i] = {x["index"]: x["relevance_score"] for x in results}

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await worker_warmup(http, url, requests[0])
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(clients)))
        return time.perf_counter() - started, latencies, scores


async def worker_warmup(http: httpx.AsyncClient, url: str, request: tuple[str, list[str]]) -> None:
    (await http.post(url + "/rerank", json={"model": "ce", "query": request[0], "documents": request[1]})).raise_for_status()


def in_process_run(model: str, requests: Sequence[tuple[str, list[str]]], threads: int) -> tuple[float, list[float], list[dict]]:
    import torch

    from rerank.rerankers.cross_encoder import CrossEncoderReranker

    if threads:
        torch.set_num_threads(threads)
    ce = CrossEncoderReranker(model)
    ce.rerank(*requests[0])
    latencies, scores, started = [], [], time.perf_counter()
    for query, docs in requests:
        t = time.perf_counter()
        res = ce.rerank(query, docs)
        latencies.append(time.perf_counter() - t)
        scores.append({int(r.docid): r.score for r in res})
    return time.perf_counter() - started, latencies, scores


def max_difference(a: list[dict], b: list[dict]) -> float:
    return max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a sentence-transformers cross-encoder folder (default: the offline tiny one)")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help=f"comma-separated subset of {SERVERS}, or {IN_PROCESS!r} (one client, no HTTP)")
    p.add_argument("--clients", type=positive, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=positive, default=64, help="requests per concurrency level")
    p.add_argument("--docs", type=positive, default=20, help="documents per request")
    p.add_argument("--threads", type=non_negative, default=1,
                   help="threads of every server (see above; 0: each one's default). vLLM on CPU computes on "
                        "one core of this 2-core machine by default, so 1 compares like with like")
    p.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = p.parse_args()
    if unknown := set(args.servers.split(",")) - {*SERVERS, IN_PROCESS}:
        p.error(f"argument --servers: unknown {', '.join(sorted(unknown))} (choose from {', '.join(SERVERS)}, {IN_PROCESS})")
    lists = trec_dl_lists(args.docs)
    within(p, "--docs", args.docs, min(len(docs) for _, docs in lists), "BM25 passages of every TREC-DL 2019 query")
    requests = [lists[i % len(lists)] for i in range(args.requests)]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still removes its temporary folder
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as work:
        table = run_servers(args, requests, Path(work))
    print("\n".join(table))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(table) + "\n")


def run_servers(args: argparse.Namespace, requests: list[tuple[str, list[str]]], work: Path) -> list[str]:
    """Every server of ``--servers`` in turn; the table's lines. ``work`` holds the tiny model and the logs."""
    model = args.model or build_tiny_cross_encoder(work / "cross-encoder")
    kinds = args.servers.split(",")
    rows, first_scores = [], {}
    for kind in kinds:
        if kind == IN_PROCESS:
            wall, lat, scores = in_process_run(model, requests, args.threads)
            first_scores.setdefault(1, scores)
            p50, p95, p99 = np.percentile(lat, [50, 95, 99])
            rows.append((kind, 1, len(requests) / wall, len(requests) * args.docs / wall, p50, p95, p99,
                         max_difference(scores, first_scores[1]), 0.0))
            continue
        server = Server(kind, model, args.threads, work)
        try:
            for clients in args.clients:
                wall, lat, scores = asyncio.run(load_run(server.url, requests, clients))
                first_scores.setdefault(clients, scores)
                p50, p95, p99 = np.percentile(lat, [50, 95, 99])
                rows.append((kind, clients, len(requests) / wall, len(requests) * args.docs / wall, p50, p95, p99,
                             max_difference(scores, first_scores[clients]), server.ready_s))
                print(f"{kind:>15} c={clients:<3} {rows[-1][2]:7.2f} req/s  p50 {p50:.3f}  p95 {p95:.3f}  p99 {p99:.3f} s", flush=True)
        finally:
            server.stop()
    threads = "; ".join(f"{kind}: {thread_note(kind, args.threads)}" for kind in kinds)
    table = [f"{args.requests} requests x {args.docs} TREC-DL 2019 passages, cross-encoder "
             f"{args.model or 'offline MiniLM-L6 body with a fresh head'}; threads: {threads}",
             "", "| server | clients | req/s | docs/s | p50 s | p95 s | p99 s | agree (max abs score diff) | ready s |",
             "|---|---|---|---|---|---|---|---|---|"]
    table += [f"| {k} | {c} | {rps:.2f} | {dps:.0f} | {p50:.3f} | {p95:.3f} | {p99:.3f} | {d:.1e} | {r:.0f} |"
              for k, c, rps, dps, p50, p95, p99, d, r in rows]
    return table


if __name__ == "__main__":
    main()
