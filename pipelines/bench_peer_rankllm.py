"""Speed and robustness against a peer on the same server: our listwise and yes/no rerankers vs rank_llm's RankGPT.

Starts an OpenAI-compatible server on loopback with SmolLM2-135M-Instruct, llama-cpp-python's (Q4_1
GGUF, the default) or ``vllm serve`` (``--server vllm``, bf16, with rerank's constrained-decoding
logits processor), then reranks the TREC-DL 2019 BM25 top ``--depth`` of the first ``--limit`` judged
queries with

* ``listwise``: our :class:`~rerank.rerankers.listwise.Listwise` (RankGPT sliding window) through
  ``openai:http://127.0.0.1:PORT/v1#smollm2``, its answers constrained (:mod:`rerank.constraints`):
  by a GBNF grammar on llama.cpp (``window`` ids in ``[i] > [j]`` form, repeats possible), exactly
  (a full permutation) on vLLM;
* ``listwise_free``: the same without the constraint (``constrained=False``), as rank_llm runs;
* ``listwise_engine`` (``--server vllm`` only): our exact-constrained listwise on vLLM's in-process
  engine (``vllm:smollm2``, same weights, dtype and context), for users who need no server; it runs
  after the server has stopped;
* ``yes_no``: our :class:`~rerank.rerankers.pointwise.YesNo` through the same server (on llama.cpp,
  chat prompts are scored from ``top_logprobs`` of the first answer token, because llama-cpp-python's
  echoed prompt logprobs are wrong; on vLLM, from echoed prompt logprobs);
* ``rank_llm``: rank_llm 0.26.0's RankGPT sliding window (``SafeLiteLLM``, temperature 0, same output
  cap), run in its own virtual environment by ``pipelines/_rankllm_driver.py`` under a wall-clock timeout;

and prints nDCG@10, seconds per query and the valid-answer rate (answers that were a full permutation
before any repair) next to BM25::

    python -m venv .venv-rankllm  # Python 3.12
    .venv-rankllm/bin/pip install 'rank-llm[litellm]==0.26.0'
    python pipelines/bench_peer_rankllm.py --limit 10 --tokenizer smollm2 [--server vllm]

Both sides get the same window, step, words per passage, output-token cap and request concurrency.
On ``vllm serve`` every method gets a fresh server, so no method's timing is a replay of another's
prompts from vLLM's prefix cache (the cache still serves what a method shares within its own run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from rerank import Ranking, evaluate
from rerank.backends import load_backend
from rerank.data import load
from rerank.models import dense_location, gguf_path
from rerank.registry import get
from rerank.types import Candidates

from _args import positive  # pipelines/_args.py

ROOT = Path(__file__).resolve().parent.parent
SERVED_NAME = "smollm2"
METHODS = ("listwise", "listwise_free", "listwise_engine", "yes_no", "rank_llm")


def start_server(kind: str, n_ctx: int, logits_all: bool, timeout: float = 300.0) -> tuple[subprocess.Popen, str, Path]:
    """The server in its own process group; returns (process, base URL ending in /v1, log).

    ``llamacpp``: llama-cpp-python's server on the Q4_1 GGUF. ``logits_all`` is needed for any
    logprobs (yes/no scoring) but copies the full vocabulary's logits for every prompt token, which
    slows generation several-fold, so generation runs on a server without it.
    ``vllm``: ``vllm serve`` on the GGUF converted to bf16 safetensors, with rerank's
    constrained-decoding logits processor (our listwise then asks for exact permutations).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["--host", "127.0.0.1", "--port", str(port), "--seed", "0"]
    if kind == "llamacpp":
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path(SERVED_NAME)), "--model_alias", SERVED_NAME,
               "--n_ctx", str(n_ctx), "--logits_all", str(logits_all).lower(), *common]
        env = {}
    else:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", dense_location(SERVED_NAME),
               "--served-model-name", SERVED_NAME, "--dtype", "bfloat16", "--max-model-len", str(n_ctx),
               "--enforce-eager", "--logits-processors", "rerank.backends.vllm_logits:ConstrainedDecoding", *common]
        env = {"VLLM_CPU_KVCACHE_SPACE": "2", "TORCHDYNAMO_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    log = Path(tempfile.mkstemp(prefix=f"{kind}-bench-", suffix=".log")[1])
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **env})
    url, started = f"http://127.0.0.1:{port}/v1", time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"{kind} server not ready after {timeout} s:\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_ours(name: str, reranker, cands: list[Candidates], qrels) -> dict:
    started = time.perf_counter()
    out = reranker.rerank_many(cands)
    seconds = time.perf_counter() - started
    row = {"method": name, "ndcg": evaluate(Ranking.from_candidates(out), qrels, ["ndcg@10"])["ndcg@10"],
           "s_per_query": seconds / len(cands)}
    if "parse" in out[0].info:
        row["answers"] = sum(c.info["parse"]["answers"] for c in out)
        row["valid"] = sum(c.info["parse"]["valid"] for c in out)
    return row


def run_rankllm(python: Path, base_url: str, cands: list[Candidates], qrels, args, max_tokens: int) -> dict:
    """rank_llm's RankGPT in its own venv, reading and writing JSON; killed after ``--peer-timeout`` s."""
    requests = [{"query": {"text": c.query, "qid": c.qid},
                 "candidates": [{"docid": d, "score": float(s), "doc": {"text": t}}
                                for d, s, t in zip(c.docids, c.scores, c.texts)]} for c in cands]
    config = {"model": f"openai/{SERVED_NAME}", "api_base": base_url, "context_size": args.n_ctx,
              "window": args.window, "step": args.step, "depth": args.depth, "max_words": args.max_words,
              "max_tokens": max_tokens, "concurrency": args.concurrency}
    with tempfile.TemporaryDirectory() as tmp:
        spec, result = Path(tmp) / "in.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps({"config": config, "requests": requests}))
        proc = subprocess.Popen([str(python), str(ROOT / "pipelines" / "_rankllm_driver.py"), str(spec), str(result)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=args.peer_timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            return {"method": "rank_llm", "error": f"no answer within {args.peer_timeout} s (killed)"}
        if proc.returncode != 0:
            return {"method": "rank_llm", "error": f"exit {proc.returncode}: {log.decode(errors='replace')[-1500:]}"}
        data = json.loads(result.read_text())
    by_qid = {c.qid: c for c in cands}
    reranked = [by_qid[r["qid"]].reordered([by_qid[r["qid"]].docids.index(d) for d in r["docids"]])
                for r in data["results"]]
    valid = [v for r in data["results"] for v in r["valid"]]
    return {"method": "rank_llm", "ndcg": evaluate(Ranking.from_candidates(reranked), qrels, ["ndcg@10"])["ndcg@10"],
            "s_per_query": data["seconds"] / len(cands), "answers": len(valid), "valid": sum(valid),
            "examples": [r["responses"][0][:120] for r in data["results"][:2] if r["responses"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=positive, default=5, help="number of queries (first N judged queries)")
    ap.add_argument("--depth", type=positive, default=20, help="BM25 candidates reranked per query")
    ap.add_argument("--window", type=positive, default=20, help="listwise window")
    ap.add_argument("--step", type=positive, default=10, help="listwise step (rank_llm's stride)")
    ap.add_argument("--max-words", type=positive, default=100, help="words kept per passage (both sides)")
    ap.add_argument("--n-ctx", type=positive, default=4096, help="server context length (both sides fit prompts to it)")
    ap.add_argument("--concurrency", type=positive, default=8, help="requests in flight (our backend, rank_llm's threads)")
    ap.add_argument("--tokenizer", default=None,
                    help="render chat prompts locally with this tokenizer (e.g. smollm2) and send them to /completions, "
                         "so the answer prefix '[' is honored; default: /chat/completions, where llama.cpp ignores it")
    ap.add_argument("--methods", default="listwise,listwise_free,yes_no,rank_llm", help="comma-separated subset")
    ap.add_argument("--server", choices=("llamacpp", "vllm"), default="llamacpp",
                    help="llama-cpp-python's server (Q4_1 GGUF) or vllm serve (bf16), shared by all methods")
    ap.add_argument("--rankllm-python", type=Path, default=ROOT / ".venv-rankllm" / "bin" / "python",
                    help="python of the virtual environment that has rank-llm 0.26.0")
    ap.add_argument("--peer-timeout", type=float, default=900.0, help="wall-clock limit of the rank_llm subprocess (s)")
    args = ap.parse_args()
    methods = args.methods.split(",")
    if unknown := [m for m in methods if m not in METHODS]:
        sys.exit(f"unknown method {unknown[0]!r}; choose from {','.join(METHODS)}")
    if "listwise_engine" in methods and args.server != "vllm":
        sys.exit("listwise_engine compares with vllm serve: add --server vllm")
    if "rank_llm" in methods and not args.rankllm_python.exists():
        sys.exit(f"{args.rankllm_python} not found: python3.12 -m venv .venv-rankllm && "
                 ".venv-rankllm/bin/pip install 'rank-llm[litellm]==0.26.0' (or drop rank_llm from --methods)")

    ds = load("trec-dl-2019")
    run = ds.run("bm25")
    qids = [q for q in run.queries() if q in ds.qrels()][: args.limit]
    first_stage = run.select(qids).top(args.depth)
    qrels = {q: ds.qrels()[q] for q in qids}
    cands = list(first_stage.per_query())
    max_tokens = 0  # our Listwise's output cap (its longest permutation in the server's tokens), given to rank_llm too

    def listwise_on(backend, constrained: bool = True):
        return get("reranker", "listwise", backend=backend, window=args.window, step=args.step, depth=args.depth,
                   max_words=args.max_words, batch_size=max(len(cands), 1), constrained=constrained)

    rows = [{"method": "bm25", "ndcg": evaluate(first_stage, qrels, ["ndcg@10"])["ndcg@10"]}]
    generation = [m for m in methods if m not in ("yes_no", "listwise_engine")]
    scoring = [m for m in methods if m == "yes_no"]
    groups = ([(False, generation), (True, scoring)] if args.server == "llamacpp"
              else [(True, [m]) for m in generation + scoring])
    for logits_all, group in groups:
        if not group:
            continue
        proc, base_url, log = start_server(args.server, args.n_ctx, logits_all)
        try:
            backend = load_backend(f"openai:{base_url}#{SERVED_NAME}", concurrency=args.concurrency,
                                   max_context=args.n_ctx, timeout=600,
                                   tokenizer=args.tokenizer if args.server == "vllm" or not logits_all else None,
                                   guided="xargs" if args.server == "vllm" else "auto")
            listwise = listwise_on(backend)
            max_tokens = max_tokens or listwise.answer_tokens(args.window)
            for name in group:
                if name in ("listwise", "listwise_free"):
                    free = name == "listwise_free"
                    label = f"listwise (ours, {'free' if free else 'constrained: ' + backend.constrains})"
                    rows.append(run_ours(label, listwise_on(backend, constrained=not free), cands, qrels))
                elif name == "yes_no":
                    yes_no = get("reranker", "yes-no", backend=backend, max_words=args.max_words, batch_size=max(len(cands), 1))
                    rows.append(run_ours("yes_no (ours)", yes_no, cands, qrels))
                else:
                    rows.append(run_rankllm(args.rankllm_python, base_url, cands, qrels, args, max_tokens))
                print(f"  done: {rows[-1]['method']}", file=sys.stderr, flush=True)
        finally:
            stop(proc)
            log.unlink(missing_ok=True)

    if "listwise_engine" in methods:
        engine = load_backend("vllm:" + SERVED_NAME, max_model_len=args.n_ctx, dtype="bfloat16",
                              cpu_env={"VLLM_CPU_KVCACHE_SPACE": "2"})  # as the server
        try:
            reranker = listwise_on(engine)
            max_tokens = max_tokens or reranker.answer_tokens(args.window)
            rows.append(run_ours(f"listwise (ours, in-process vLLM engine, constrained: {engine.constrains})",
                                 reranker, cands, qrels))
            print(f"  done: {rows[-1]['method']}", file=sys.stderr, flush=True)
        finally:
            engine.close()

    print(f"TREC-DL 2019, {len(qids)} queries, BM25 top {args.depth}, window {args.window}, step {args.step}, "
          f"{args.max_words} words/passage, output cap {max_tokens} tokens, "
          f"{'llama-cpp-python server (SmolLM2-135M-Instruct Q4_1' if args.server == 'llamacpp' else 'vllm serve (SmolLM2-135M-Instruct bf16'}"
          f", context {args.n_ctx}), concurrency {args.concurrency}, "
          f"our prompts via {'/completions + ' + args.tokenizer + ' chat template' if args.tokenizer else '/chat/completions'}\n")
    print("| method | nDCG@10 | s/query | valid answers | answers |\n|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | failed: {r['error']} | | | |")
            continue
        sq = f"{r['s_per_query']:.2f}" if "s_per_query" in r else "-"
        rate = f"{r['valid'] / max(r['answers'], 1):.0%}" if "answers" in r else "-"
        print(f"| {r['method']} | {r['ndcg']:.4f} | {sq} | {rate} | {r.get('answers', '-')} |")
    for r in rows:
        if r.get("examples"):
            print(f"\nrank_llm first responses: {r['examples']}")


if __name__ == "__main__":
    main()
