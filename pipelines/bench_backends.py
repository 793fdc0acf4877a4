"""Speed of the LLM backends on one model: load, greedy generation, yes/no scoring, cached re-run.

    python pipelines/bench_backends.py hf:smollm2 vllm:smollm2 llamacpp:smollm2 [--out results/backends.md]

Prints a markdown table (and writes it with --out). Numbers depend on the machine and its load.
Every backend computes on ``--threads`` CPU threads, set before any backend loads, so the order of the
specs does not matter: ``OMP_NUM_THREADS`` (vLLM's in-process default of 1 yields to it), torch's
intra-op threads (HF, in-process vLLM), and llama.cpp's ``n_threads`` and ``n_threads_batch``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

from rerank.backends import load_backend, parse_spec
from rerank.cache import CachedBackend

from _args import positive  # pipelines/_args.py

QUESTIONS = [f"Is {n} an even number? Answer yes or no." for n in range(16)]
PROMPTS = [[{"role": "user", "content": q}] for q in QUESTIONS]


def set_threads(threads: int) -> None:
    """The same thread count for torch and OpenMP, before any backend loads (vLLM's CPU worker forbids
    changing torch's later)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(threads)


def bench(spec: str, new_tokens: int, threads: int) -> dict[str, str]:
    llama = parse_spec(spec)[0] == "llamacpp"  # its own thread pools: decode, and prompt batches
    start = time.perf_counter()
    backend = load_backend(spec, **({"n_threads": threads, "n_threads_batch": threads} if llama else {}))
    load = time.perf_counter() - start
    backend.generate(PROMPTS[:1], max_new_tokens=4)  # warm-up
    start = time.perf_counter()
    made = backend.generate(PROMPTS[:8], max_new_tokens=new_tokens)
    gen = time.perf_counter() - start
    tokens = sum(g.completion_tokens for g in made)
    with tempfile.TemporaryDirectory() as tmp:
        cached = CachedBackend(backend, Path(tmp) / "calls.sqlite")
        start = time.perf_counter()
        cached.score(PROMPTS, ["Yes", "No"])
        score = time.perf_counter() - start
        start = time.perf_counter()
        cached.score(PROMPTS, ["Yes", "No"])
        rerun = time.perf_counter() - start
    return {"backend": spec, "load s": f"{load:.1f}", "generate 8x": f"{gen:.2f} s",
            "tok/s": f"{tokens / gen:.1f}", "score 16 prompts": f"{score:.2f} s",
            "cached re-run": f"{rerun * 1000:.1f} ms"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="+")
    parser.add_argument("--new-tokens", type=positive, default=32)
    parser.add_argument("--threads", type=positive, default=max(1, (os.cpu_count() or 2) // 2),
                        help="CPU threads of every backend (default: half the cores, llama.cpp's own default)")
    parser.add_argument("--out")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    set_threads(args.threads)
    rows = [bench(spec, args.new_tokens, args.threads) for spec in args.specs]
    head = list(rows[0])
    table = "\n".join(["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
                      + ["| " + " | ".join(r[h] for h in head) + " |" for r in rows])
    header = (f"threads per backend: {args.threads} (torch, OMP_NUM_THREADS, llama.cpp n_threads and "
              f"n_threads_batch); {os.cpu_count()} cores")
    print(f"{header}\n\n{table}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(f"`python pipelines/bench_backends.py {' '.join(args.specs)} --threads {args.threads}` "
                                  f"({header})\n\n{table}\n")


if __name__ == "__main__":
    main()
