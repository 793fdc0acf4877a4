"""The ``rerank`` command: a thin layer over the Python API.

    rerank eval   --dataset scifact --pipeline bm25 --pipeline "bm25 % 100 >> dense" [--pipelines FILE]
    rerank search --dataset scifact --pipeline "bm25 | dense" "what causes scurvy?" -k 5
    rerank index  --dataset scifact --retriever "bm25(k1=1.2)" --out indexes/scifact-bm25
    rerank list   [datasets|retrievers|rerankers|backends|prompts]
    rerank bench  pipelines/grid_smoke.toml --out results/smoke [--limit N] [--report-only]
    rerank train  cross-encoder --dataset scifact --out models/scifact-ce [--data synthetic qrels distill]

Errors (unknown names, malformed files, empty corpora or queries) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import tomllib

from rerank.errors import ConfigError, RerankError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("rerank").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return args.func(args)
    except (RerankError, FileNotFoundError) as e:
        print(f"rerank: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rerank: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"rerank: unexpected {type(e).__name__}: {e} (re-run with --debug for the traceback)", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rerank", description="Retrieval and reranking pipelines, evaluated.")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = p.add_subparsers(required=True, metavar="command")

    e = sub.add_parser("eval", help="evaluate pipelines on a dataset and print a comparison table")
    e.add_argument("--dataset", required=True, help="dataset name, BEIR folder, or irds:<id>")
    e.add_argument("--pipeline", action="append", default=[], metavar="[NAME=]EXPR", help="repeatable; first is the baseline")
    e.add_argument("--pipelines", type=Path, help="a TOML file with a [pipelines] table of name = expression")
    e.add_argument("--metrics", nargs="+", default=["ndcg@10", "mrr@10", "recall@100", "map@1000"])
    e.add_argument("--baseline", help="name of the baseline system (default: the first)")
    e.add_argument("--limit", type=int, help="evaluate on the first N judged queries only")
    e.add_argument("--save-runs", type=Path, help="write each system's TREC run file into this folder")
    e.set_defaults(func=_eval)

    s = sub.add_parser("search", help="answer one query with a pipeline")
    s.add_argument("--dataset", required=True)
    s.add_argument("--pipeline", required=True)
    s.add_argument("query")
    s.add_argument("-k", type=int, default=10)
    s.set_defaults(func=_search)

    i = sub.add_parser("index", help="index a dataset's corpus and save the index")
    i.add_argument("--dataset", required=True)
    i.add_argument("--retriever", required=True, help='e.g. bm25, "bm25(k1=1.2, b=0.75)", "dense(index=\'hnsw\')"')
    i.add_argument("--out", type=Path, required=True)
    i.set_defaults(func=_index)

    b = sub.add_parser("bench", help="run a grid of pipelines x datasets (resumable) and write a report")
    from rerank.bench import add_arguments, run_from_args

    add_arguments(b)
    b.set_defaults(func=run_from_args)

    t = sub.add_parser("train", help="train a reranker on a dataset's corpus (labels, synthetic queries, distillation)")
    from rerank.train.cli import add_arguments as add_train_arguments

    add_train_arguments(t)

    ls = sub.add_parser("list", help="list registered names")
    ls.add_argument("what", nargs="?", default="all", choices=["all", "datasets", "retrievers", "rerankers", "backends", "prompts"])
    ls.set_defaults(func=_list)
    return p


def _systems(args: argparse.Namespace) -> dict[str, str]:
    systems: dict[str, str] = {}
    if args.pipelines:
        table = tomllib.loads(args.pipelines.read_text()).get("pipelines")
        if not isinstance(table, dict) or not table:
            raise ConfigError(f"{args.pipelines}: expected a [pipelines] table of name = \"expression\"")
        systems.update({str(k): str(v) for k, v in table.items()})
    for item in args.pipeline:
        name, sep, expr = item.partition("=")
        if sep and name.strip() and "(" not in name:
            systems[name.strip()] = expr.strip()
        else:
            systems[item.strip()] = item.strip()
    if not systems:
        raise ConfigError("give at least one --pipeline (or --pipelines FILE)")
    return systems


def _eval(args: argparse.Namespace) -> int:
    from rerank.data import load
    from rerank.evaluate import Experiment
    from rerank.expr import build

    dataset = load(args.dataset)
    systems = {name: build(expr, dataset) for name, expr in _systems(args).items()}
    report = Experiment(systems, dataset, args.metrics, baseline=args.baseline, save_dir=args.save_runs, limit=args.limit).run()
    print(report.to_markdown())
    return 0


def _search(args: argparse.Namespace) -> int:
    from rerank.data import load
    from rerank.expr import build

    results = build(args.pipeline, load(args.dataset)).search(args.query, k=args.k)
    for r in results:
        print(f"{r.rank:>3}  {r.score:9.4f}  {r.docid:<16} {r.text[:100]!r}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from rerank.data import load
    from rerank.expr import build

    retriever = build(args.retriever)
    if not hasattr(retriever, "index"):
        raise ConfigError(f"{args.retriever!r} is not a retriever with an index")
    retriever.index(load(args.dataset).corpus()).save(args.out)
    print(f"saved {retriever!r} over {len(retriever.docs)} documents to {args.out}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from rerank import data, prompts, registry

    groups = {
        "datasets": data.names,
        "retrievers": lambda: registry.names("retriever"),
        "rerankers": lambda: registry.names("reranker"),
        "backends": lambda: registry.names("backend"),
        "prompts": prompts.names,
    }
    for name, get in groups.items():
        if args.what in ("all", name):
            print(f"{name}: {', '.join(get())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
