"""Serving benchmark: ``rerank serve`` (dynamic batching on and off) against ``vllm serve`` on one
cross-encoder folder, same machine, same requests, one server at a time.

Each request is one TREC-DL 2019 query with its BM25 top ``--docs`` passages (bundled run), sent to
the server's Jina/vLLM-shaped ``POST /rerank``. For 1, 8 and 32 concurrent asyncio clients the
script sends ``--requests`` requests and reports throughput (requests/s) and p50/p95/p99 latency,
and checks every answer (all documents back, each index once). ``agree`` is the largest score
difference to the first server on the same requests (same model, so it should be ~0).

Without ``--model`` the cross-encoder is the offline all-MiniLM-L6-v2 body with a fresh one-score
head (no trained cross-encoder installs offline): right for speed, meaningless for quality.

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

SERVERS = ("rerank", "rerank-nobatch", "vllm")
IN_PROCESS = "in-process"  # reranker.rerank() in this process, one request at a time: the model's own time


def build_tiny_cross_encoder(folder: Path) -> str:
    import torch
    from sentence_transformers import CrossEncoder

    from rerank.encoders import DEFAULT_ENCODER, resolve_encoder

    torch.manual_seed(0)  # the fresh head
    CrossEncoder(resolve_encoder(DEFAULT_ENCODER), num_labels=1).save(str(folder))
    return str(folder)


def requests_from_trec_dl(n: int, docs: int) -> list[tuple[str, list[str]]]:
    from rerank.data import load

    lists = [(c.query, list(c.texts[:docs])) for c in load("trec-dl-2019").run("bm25").top(docs).per_query()]
    return [lists[i % len(lists)] for i in range(n)]


def command(kind: str, model: str, port: int, threads: int) -> tuple[list[str], dict[str, str]]:
    if kind.startswith("rerank"):
        cmd = [sys.executable, "-m", "rerank.cli", "--quiet", "serve", "--pipeline", f"cross-encoder(model={model!r})",
               "--port", str(port), "--model-name", "ce"]
        env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
        return cmd + (["--set", "max_batch_requests=1"] if kind == "rerank-nobatch" else []), env
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", "ce",
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager"]
    return cmd, {"VLLM_CPU_KVCACHE_SPACE": "1", "TORCHDYNAMO_DISABLE": "1", "HF_HUB_OFFLINE": "1"}


class Server:
    """One server in its own process group on 127.0.0.1; stopped by its PID."""

    def __init__(self, kind: str, model: str, threads: int, timeout: float = 600.0):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd, env = command(kind, model, port, threads)
        self.kind, self.url = kind, f"http://127.0.0.1:{port}"
        self.log = Path(tempfile.mkstemp(prefix=f"bench-serve-{kind}-", suffix=".log")[1])
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **env})
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    self.ready_s = time.monotonic() - started
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{kind} not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

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
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    p.add_argument("--docs", type=int, default=20, help="documents per request")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of rerank's servers (OMP_NUM_THREADS; 0: torch's default). vLLM on CPU computes on "
                        "one core of this 2-core machine, so 1 compares like with like")
    p.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = p.parse_args()
    model = args.model or build_tiny_cross_encoder(Path(tempfile.mkdtemp(prefix="bench-serve-ce-")))
    requests = requests_from_trec_dl(args.requests, args.docs)
    rows, first_scores = [], {}
    for kind in args.servers.split(","):
        if kind == IN_PROCESS:
            wall, lat, scores = in_process_run(model, requests, args.threads)
            first_scores.setdefault(1, scores)
            p50, p95, p99 = np.percentile(lat, [50, 95, 99])
            rows.append((kind, 1, len(requests) / wall, len(requests) * args.docs / wall, p50, p95, p99,
                         max_difference(scores, first_scores[1]), 0.0))
            continue
        server = Server(kind, model, args.threads)
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
    table = [f"{args.requests} requests x {args.docs} TREC-DL 2019 passages, cross-encoder {model}, "
             f"rerank servers with OMP_NUM_THREADS={args.threads or 'default'}",
             "", "| server | clients | req/s | docs/s | p50 s | p95 s | p99 s | agree (max abs score diff) | ready s |",
             "|---|---|---|---|---|---|---|---|---|"]
    table += [f"| {k} | {c} | {rps:.2f} | {dps:.0f} | {p50:.3f} | {p95:.3f} | {p99:.3f} | {d:.1e} | {r:.0f} |"
              for k, c, rps, dps, p50, p95, p99, d, r in rows]
    print("\n".join(table))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
