"""Speed of the LLM backends on one model: load, greedy generation, yes/no scoring, cached re-run.

    python pipelines/bench_backends.py hf:smollm2 vllm:smollm2 llamacpp:smollm2 [--out results/backends.md]

Prints a markdown table (and writes it with --out). Numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rerank.backends import load_backend
from rerank.cache import CachedBackend

QUESTIONS = [f"Is {n} an even number? Answer yes or no." for n in range(16)]
PROMPTS = [[{"role": "user", "content": q}] for q in QUESTIONS]


def bench(spec: str, new_tokens: int) -> dict[str, str]:
    start = time.perf_counter()
    backend = load_backend(spec)
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
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = [bench(spec, args.new_tokens) for spec in args.specs]
    head = list(rows[0])
    table = "\n".join(["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
                      + ["| " + " | ".join(r[h] for h in head) + " |" for r in rows])
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(f"`python pipelines/bench_backends.py {' '.join(args.specs)}` "
                                  f"({os.cpu_count()} cores)\n\n{table}\n")


if __name__ == "__main__":
    main()
