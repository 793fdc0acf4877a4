"""Do two versions of the LLM rerankers ask the same model calls and rank the same way?

Runs the TREC-DL 2019 grid's LLM families (the settings of ``grid_rerankers_dl19_full.toml``) over the
shipped BM25 top 100 with a deterministic stand-in model: its answers are a hash of the prompt (a
valid permutation, label or option under the request's constraint, score lines for free text, and
log-probabilities for ``score``), while prompts are sized by SmolLM2's real tokenizer in a 2,048-token
context, as on vLLM. It writes every call (prompt, options, constraint, output cap) and the final
ranking per family as JSON. Run it with each version on ``PYTHONPATH`` and compare the two files::

    PYTHONPATH=/tmp/old python pipelines/compare_llm_calls.py --limit 10 --out /tmp/old.json
    PYTHONPATH=.        python pipelines/compare_llm_calls.py --limit 10 --out /tmp/new.json
    python pipelines/compare_llm_calls.py --compare /tmp/old.json /tmp/new.json

Identical calls and rankings mean the real model gives the same nDCG, provided each output cap holds
the answer (constrained answers end at end-of-sequence whatever the cap).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np

from _args import positive, within  # pipelines/_args.py

FAMILIES = {
    "yes-no": {"batch_size": 128},
    "erank": {"batch_size": 128},
    "listwise": {"max_words": 60, "batch_size": 64},
    "first": {"max_words": 60, "batch_size": 64},
    "insertrank": {"max_words": 60, "batch_size": 64},
    "groupwise": {"batch_size": 64},
    "setwise": {"k": 10, "batch_size": 64},
    "prp": {"variant": "heapsort", "batch_size": 128},
}


def _seed(*parts: object) -> int:
    return int(hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12], 16)


def _text(prompt: object) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)  # type: ignore[union-attr]


def hash_model(tokenizer: object):
    """A Backend of the version on PYTHONPATH whose answers are a hash of the prompt."""
    from rerank.backends.base import Backend, Generation

    class HashModel(Backend):
        model, max_context, constrains = "hash", 2048, "exact"

        def __init__(self) -> None:
            self.calls: list[dict] = []

        def count_tokens(self, text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]

        def generate(self, prompts, *, max_new_tokens=256, temperature=0.0, stop=(), constraint=None):
            out = []
            for p in prompts:
                spec = constraint.spec() if constraint is not None else None
                self.calls.append({"generate": _text(p), "max_new_tokens": max_new_tokens, "constraint": spec,
                                   "stop": list(stop)})
                rng = np.random.default_rng(_seed(_text(p)))
                if spec and spec["kind"] == "permutation":
                    text = " > ".join(f"[{i}]" for i in rng.permutation(spec["n"]) + 1)[len(spec.get("consumed", "")):]
                elif spec:
                    text = spec["options"][int(rng.integers(len(spec["options"])))]
                else:
                    n = len(re.findall(r"^\[\d+\] ", _text(p), re.MULTILINE)) or 1
                    text = " " + "\n".join(f"[{i}]: {int(rng.integers(11))}" for i in range(1, n + 1))[len("[1]: "):]
                out.append(Generation(text, prompt_tokens=self.count_tokens(_text(p)), completion_tokens=1))
            return out

        def score(self, prompts, options):
            self.calls.extend({"score": _text(p), "options": list(options)} for p in prompts)
            return np.array([np.random.default_rng(_seed(_text(p), list(options))).normal(size=len(options)) for p in prompts])

    return HashModel()


def run(limit: int, out: Path) -> None:
    from transformers import AutoTokenizer

    from rerank.data import load
    from rerank.models import dense_location
    from rerank.registry import get

    tokenizer = AutoTokenizer.from_pretrained(dense_location("smollm2"))
    ranking = load("trec-dl-2019").run("bm25")
    ranking = ranking.select(list(ranking.queries())[:limit]).top(100)
    result = {}
    for name, kwargs in FAMILIES.items():
        backend = hash_model(tokenizer)
        reranker = get("reranker", name, backend=backend, **kwargs)
        ranked = reranker.rerank_many(list(ranking.per_query()))
        result[name] = {"calls": backend.calls, "rankings": {c.qid: c.docids for c in ranked}}
        print(f"{name}: {len(backend.calls)} calls", flush=True)
    out.write_text(json.dumps(result))


def compare(old_path: Path, new_path: Path) -> None:
    old, new = json.loads(old_path.read_text()), json.loads(new_path.read_text())
    print("| family | calls | same prompts | same constraints | same output caps | same rankings |")
    print("|---|---|---|---|---|---|")
    for name in FAMILIES:
        a, b = old[name], new[name]
        prompts = _signature(a["calls"], "generate", "score", "options") == _signature(b["calls"], "generate", "score", "options")
        constraints = _signature(a["calls"], "generate", "constraint") == _signature(b["calls"], "generate", "constraint")
        caps = _signature(a["calls"], "generate", "max_new_tokens") == _signature(b["calls"], "generate", "max_new_tokens")
        caps_note = "yes" if caps else "no: " + ", ".join(sorted({f"{x}->{y}" for x, y in zip(
            sorted(c["max_new_tokens"] for c in a["calls"] if "generate" in c),
            sorted(c["max_new_tokens"] for c in b["calls"] if "generate" in c)) if x != y}))
        print(f"| {name} | {len(a['calls'])} / {len(b['calls'])} | {'yes' if prompts else 'no'} | "
              f"{'yes' if constraints else 'no'} | {caps_note if any('generate' in c for c in a['calls']) else '-'} | "
              f"{'yes' if a['rankings'] == b['rankings'] else 'no'} |")


def _signature(calls: list[dict], *fields: str) -> list[str]:
    """The calls as sorted JSON rows of ``fields`` (the order of calls within a step may differ)."""
    return sorted(json.dumps([c.get(f) for f in fields]) for c in calls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=positive, default=10, help="first N queries of TREC-DL 2019 (at most 43)")
    parser.add_argument("--out", type=Path, help="where to write the calls and rankings (JSON)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"))
    args = parser.parse_args(argv)
    if args.compare:
        compare(*args.compare)
    elif args.out:
        from rerank.data import load

        within(parser, "--limit", args.limit, len(load("trec-dl-2019").run("bm25").queries()), "TREC-DL 2019 queries")
        run(args.limit, args.out)
    else:
        parser.error("give --out or --compare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
