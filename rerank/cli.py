"""The ``rerank`` command: a thin layer over the Python API.

    rerank eval   --dataset scifact --pipeline bm25 --pipeline "bm25 % 100 >> dense" [--pipelines FILE] [--executor ray]
    rerank search --dataset scifact --pipeline "bm25 | dense" "what causes scurvy?" -k 5
    rerank index  --dataset scifact --retriever "bm25(k1=1.2)" --out indexes/scifact-bm25
    rerank list   [datasets|retrievers|rerankers|backends|prompts]
    rerank bench  pipelines/grid_smoke.toml --out results/smoke [--limit N] [--report-only] [--executor ray]
    rerank serve  --pipeline "cross-encoder(model='models/ce')" [--dataset D | --index PATH] [--port 8000]
    rerank train  cross-encoder --dataset scifact --out models/scifact-ce [--data synthetic qrels distill]

Errors (unknown names, malformed files, empty corpora or queries, bad arguments, missing or unwritable
paths) print one line and exit 2; anything unexpected prints one line and exits 1 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from rerank.errors import ConfigError, DataError, RerankError, one_line
from rerank.metrics import DEFAULT_METRICS, has_relevant
from rerank.registry import import_plugin

# Errors that name a problem with the user's input or paths: one line, exit status 2.
USER_ERRORS = (RerankError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("rerank").setLevel(logging.WARNING if args.quiet else logging.INFO)
    if args.quiet:  # other libraries' bars too: Hugging Face's ("Loading weights"), read when transformers is
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # first imported, and tqdm's (ir_datasets')
        os.environ.setdefault("TQDM_DISABLE", "1")
    if args.http_timeout is not None:  # read by every HTTP backend this command (and its workers) loads
        os.environ["RERANK_HTTP_TIMEOUT"] = str(args.http_timeout)
    terminated: list[int] = []

    def on_sigterm(signum: int, frame: Any) -> None:
        """SIGTERM stops the command as Ctrl-C does, so its clean-ups run (a Ray cluster it started is
        stopped); noted here, as Ray turns any exception raised while it waits into KeyboardInterrupt."""
        terminated.append(signum)
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, on_sigterm) if main_thread else None
    try:
        for plugin in args.plugin:
            import_plugin(plugin)
        return args.func(args)
    except USER_ERRORS as e:
        if args.debug:
            raise
        print(one_line(f"rerank: error: {e}", limit=None), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rerank: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except Exception as e:
        if args.debug:
            raise
        print(one_line(f"rerank: unexpected {type(e).__name__}: {e} (re-run with --debug for the traceback)", limit=None), file=sys.stderr)
        return 1
    finally:
        if before is not None:
            signal.signal(signal.SIGTERM, before)


GLOBAL_FLAGS = ("--quiet", "--debug", "--plugin", "--http-timeout")
"""Options of ``rerank`` itself, written before the command."""


class _Once(argparse.Action):
    """Store a single-valued option, refusing it a second time (argparse keeps the last silently, so
    ``--dataset a --dataset b`` would evaluate ``b`` alone)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        given = namespace.__dict__.setdefault("_given", set())
        if self.dest in given:
            before, now = getattr(namespace, self.dest), values
            if isinstance(values, list):  # nargs: its values go after one option
                parser.error(f"{option_string} given twice; give all its values after one: {option_string} "
                             + " ".join(map(str, [*before, *now])))
            parser.error(f"{option_string} given twice ({str(before)!r} and {str(now)!r}); "
                         f"{'/'.join(self.option_strings)} takes one value")
        given.add(self.dest)
        setattr(namespace, self.dest, values)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (exit status 2), like every other error, and single-valued
    options refused when repeated."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.register("action", None, _Once)
        self.register("action", "store", _Once)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        return super().parse_known_args(_negative_values_joined(sys.argv[1:] if args is None else list(args)), namespace)

    def error(self, message: str):  # type: ignore[override]
        if "unrecognized arguments" in message and any(f in message.split() for f in GLOBAL_FLAGS):
            message += f"; {', '.join(GLOBAL_FLAGS)} go before the command (rerank --plugin my.py eval ...)"
        self.exit(2, one_line(f"{self.prog}: error: {message} (see {self.prog} --help)", limit=None) + "\n")


def _negative_values_joined(args: list[str]) -> list[str]:
    """``--learning-rate -1e-5`` as ``--learning-rate=-1e-5``: argparse takes a negative number in
    scientific notation (or ``-inf``) for an unknown option, and answers "expected one argument"
    where the value's own check would name the problem."""
    out: list[str] = []
    for arg in args:
        option = out[-1] if out and "--" not in out else ""
        if option.startswith("--") and option != "--" and "=" not in option and arg.startswith("-") and _is_number(arg):
            out[-1] = f"{option}={arg}"
        else:
            out.append(arg)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rerank", description="Retrieval and reranking pipelines, evaluated.")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE|FILE.py",
                   help="import a module that registers stages or backends (@register), e.g. my_reranker.py (repeatable)")
    p.add_argument("--http-timeout", type=_seconds, metavar="SECONDS",
                   help="deadline of each request to an LLM server, retries included (default 60)")
    sub = p.add_subparsers(required=True, metavar="command")

    e = sub.add_parser("eval", help="evaluate pipelines on a dataset and print a comparison table")
    e.add_argument("--dataset", required=True, help="dataset name, BEIR folder, or irds:<id>")
    e.add_argument("--pipeline", action="append", default=[], metavar="[NAME=]EXPR", help="repeatable; first is the baseline")
    e.add_argument("--pipelines", type=_path, help="a TOML file with a [pipelines] table of name = expression")
    e.add_argument("--run", action="append", default=[], metavar="[NAME=]FILE",
                   help="a TREC run file made elsewhere, evaluated as a system (repeatable; after the pipelines)")
    e.add_argument("--metrics", nargs="+", action="extend", metavar="METRIC",
                   help=f"metrics (repeatable, or split at commas); default: {' '.join(DEFAULT_METRICS)}")
    e.add_argument("--baseline", help="name of the baseline system (default: the first)")
    e.add_argument("--limit", type=_positive, help="evaluate on the first N judged queries only")
    e.add_argument("--save-runs", type=_path, help="keep runs, records and the report in this folder (and resume from it)")
    _experiment_arguments(e)
    e.set_defaults(func=_eval)

    s = sub.add_parser("search", help="answer one query with a pipeline")
    s.add_argument("--dataset", required=True)
    s.add_argument("--pipeline", required=True)
    s.add_argument("query")
    s.add_argument("-k", type=_positive, default=10)
    s.set_defaults(func=_search)

    i = sub.add_parser("index", help="index a dataset's corpus and save the index")
    i.add_argument("--dataset", required=True)
    i.add_argument("--retriever", required=True, help='e.g. bm25, "bm25(k1=1.2, b=0.75)", "dense(index=\'hnsw\')"')
    i.add_argument("--out", type=_path, required=True)
    i.set_defaults(func=_index)

    b = sub.add_parser("bench", help="run a grid of pipelines x datasets (resumable) and write a report")
    b.add_argument("grid", type=_path, help="a grid TOML file, e.g. pipelines/grid_smoke.toml")
    b.add_argument("--out", type=_path, help="output folder (default: results/<grid name>)")
    b.add_argument("--limit", type=_positive, help="run on the first N judged queries of each dataset")
    b.add_argument("--report-only", action="store_true", help="do not run cells; rebuild the report from what is saved")
    _experiment_arguments(b, grid=True)
    b.set_defaults(func=_bench)

    sv = sub.add_parser("serve", help="serve a pipeline over HTTP in Cohere's, Jina's and vLLM's rerank API shapes")
    from rerank.serve.command import add_arguments as add_serve_arguments

    add_serve_arguments(sv)

    t = sub.add_parser("train", help="train a reranker on a dataset's corpus (labels, synthetic queries, distillation)")
    from rerank.train.cli import add_arguments as add_train_arguments

    add_train_arguments(t)

    ls = sub.add_parser("list", help="list registered names")
    ls.add_argument("what", nargs="?", default="all", choices=["all", "datasets", "retrievers", "rerankers", "backends", "prompts"])
    ls.set_defaults(func=_list)
    return p


def _experiment_arguments(p: argparse.ArgumentParser, grid: bool = False) -> None:
    """--test, --correction and --executor; for a grid, test and correction default to the grid file's."""
    note = " (default: the grid file's)" if grid else ""
    p.add_argument("--test", choices=["student", "fisher"], default=None if grid else "student",
                   help=f"significance test against the baseline: paired t-test (default) or Fisher's randomization{note}")
    p.add_argument("--correction", choices=["none", "bonferroni", "holm"], default=None if grid else "none",
                   help=f"multiple-comparison correction over each table's comparisons{note}")
    p.add_argument("--executor", default="local", help="where cells run: local (default), ray, or ray:ADDRESS")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _positive(text: str) -> int:
    """A positive whole number in ASCII digits (as metric cut-offs are), checked before anything loads."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer in digits 0-9, got {text}")
    return int(text)


def _path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (give a file or folder)")
    return Path(text)


def _systems(args: argparse.Namespace) -> dict[str, Any]:
    """Name -> pipeline expression, from --pipelines, --pipeline, and Rankings read from --run files."""
    from rerank.bench import pipeline_table, read_toml
    from rerank.types import Ranking

    systems: dict[str, Any] = {}
    if args.pipelines:
        raw = read_toml(args.pipelines)
        stray = sorted(set(raw) - {"pipelines"})
        if stray:  # a grid's settings or a misspelt table would be ignored here
            raise ConfigError(f"{args.pipelines}: eval reads only a [pipelines] table, not {stray} "
                              "(a grid file with [grid] settings runs with rerank bench)")
        systems.update(pipeline_table(raw, str(args.pipelines)))
    for item in args.pipeline:
        name, sep, expr = item.partition("=")
        named = sep and name.strip() and _closed(name)  # bm25(k1=0.9) is an expression, "Dense (MiniLM)=dense" named
        name, expr = (name.strip(), expr.strip()) if named else (item.strip(), item.strip())
        if name in systems:
            raise ConfigError(f"pipeline name {name!r} is given twice; name each one (--pipeline NAME=EXPR)")
        systems[name] = expr
    for item in getattr(args, "run", []):
        name, sep, path = item.partition("=")
        whole = sep and Path(item.strip()).is_file()  # runs/a=b.trec: a file, not NAME=FILE
        name, path = (name.strip(), path.strip()) if sep and name.strip() and not whole else (_run_name(item.strip()), item.strip())
        if not path:
            raise ConfigError(f"--run {item!r}: give a run file, as --run NAME=FILE or --run FILE")
        if name in systems:
            raise ConfigError(f"system name {name!r} is given twice; name each run (--run NAME=FILE)")
        systems[name] = Ranking.read_trec(path)
    if not systems:
        raise ConfigError("give at least one --pipeline (or --pipelines FILE, or --run FILE)")
    return systems


def _closed(text: str) -> bool:
    """Whether ``text`` leaves no bracket open, so the ``=`` after it is no argument's (``bm25(k1=0.9)``);
    a name may hold closed brackets, a lone closing one or a quote ("Bob's BM25 :)")."""
    depth = 0
    for char in text:
        depth = depth + 1 if char in "([{" else max(0, depth - 1) if char in ")]}" else depth
    return depth == 0


def _run_name(path: str) -> str:
    """A run file's default system name: its file name without ``.gz`` and its extension (``run.bm25``)."""
    return Path(Path(path).name.removesuffix(".gz")).stem


def _eval(args: argparse.Namespace) -> int:
    from rerank.evaluate import Experiment
    from rerank.metrics import parse_metrics
    from rerank.runner import DatasetSpec, load_dataset

    metrics = parse_metrics(args.metrics)  # checked before anything loads or runs
    systems = _systems(args)
    spec = DatasetSpec(args.dataset)
    log = logging.getLogger("rerank")  # one line per stage, also when stdout is not a terminal (make demo in CI)
    log.info("load: %s ...", args.dataset)
    dataset = load_dataset(spec)  # a dataset that does not load is one error, not one per system
    qrels, qids = dataset.qrels(), {q.qid for q in dataset.queries()}  # its qrels too: damaged ones are one error
    try:
        corpus = f"{len(dataset.corpus())} documents"
    except DataError:  # a set of queries and qrels only still scores --run files; a pipeline needs the corpus
        if any(isinstance(s, str) for s in systems.values()):
            raise
        corpus = "no corpus"
    log.info("load: %s, %s, %d queries, %d judged (with a relevant document)", dataset.name,
             corpus, len(qids), sum(q in qids and has_relevant(docs) for q, docs in qrels.items()))
    experiment = Experiment(systems, [spec], metrics, baseline=args.baseline,
                            save_dir=args.save_runs, limit=args.limit, executor=args.executor, test=args.test,
                            correction=args.correction, name=args.dataset)
    log.info("evaluate: %d pipeline%s on %s ...", len(systems), "" if len(systems) == 1 else "s", dataset.name)
    report = experiment.run(progress=False if args.quiet else None)
    failed = report.errors()
    if len(failed) == len(report.cells):
        raise RerankError("; ".join(f"{c.system}: {c.error}" for c in failed))
    print(report.to_markdown())
    if failed:
        print(f"rerank: error: {len(failed)} of {len(report.cells)} systems failed: "
              + "; ".join(f"{c.system}: {c.error}" for c in failed), file=sys.stderr)
        return 2
    return 0


def _bench(args: argparse.Namespace) -> int:
    from rerank import significance
    from rerank.bench import Grid

    grid = Grid.read(args.grid)
    if args.test is not None:
        grid = replace(grid, test=args.test)
    if args.correction is not None:
        grid = replace(grid, correction=significance.check(grid.test, args.correction))
    out = args.out or Path("results") / grid.name
    experiment = grid.experiment(out, args.limit, args.executor)
    if args.report_only:
        report = experiment.collect()
        if all(c.status == "missing" for c in report.cells.values()):
            raise ConfigError(f"--report-only: no cell saved under {out} matches this grid and these settings "
                              "(another --out or --limit?); nothing written")
        report.write(out)
    else:
        report = experiment.run(progress=False if args.quiet else None)
    print(report.to_markdown())
    print(f"\nreport: {out / 'report.html'}, {out / 'report.md'} and {out / 'report.json'}")
    # not cells --report-only finds not run; a run that left cells to another run's lock is not complete
    failed = [c for c in report.errors() if c.status == "error" or (c.status == "missing" and not args.report_only)]
    if failed:
        print(f"rerank: error: {len(failed)} of {len(report.cells)} cells failed or were not run (listed in the report), "
              f"e.g. {failed[0].system} on {failed[0].dataset}: {one_line(failed[0].error)}", file=sys.stderr)
        return 2
    return 0


def _search(args: argparse.Namespace) -> int:
    from rerank.data import load
    from rerank.expr import build

    results = build(args.pipeline, load(args.dataset)).search(args.query, k=args.k)
    for r in results:
        print(f"{r.rank:>3}  {r.score:9.4f}  {r.docid:<16} {r.text[:100]!r}")
    if not results:
        print(f"no results for {args.query!r}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from rerank.data import load
    from rerank.expr import build
    from rerank.index_cache import check_target

    check_target(args.out)
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
        "backends": lambda: [f"{n} (for tests)" if n == "fake" else n for n in registry.names("backend")],
        "prompts": prompts.names,
    }
    for name, get in groups.items():
        if args.what in ("all", name):
            print(f"{name}: {', '.join(get())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
