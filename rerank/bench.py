"""Benchmark grids: pipelines x datasets, resumable, with a Markdown and HTML report.

A grid is a TOML file (see ``pipelines/grid_*.toml``)::

    [grid]
    metrics = ["ndcg@10", "mrr@10", "recall@100"]   # optional (these are the defaults)
    baseline = "BM25"                               # optional: the first pipeline
    limit = 50                                      # optional: first N judged queries per dataset

    datasets = ["scifact", { name = "trec-dl-2019", first = "run" },
                { name = "bright/biology", label = "bright/biology (long)", options = { long = true } }]

    [pipelines]
    "BM25" = "{first}"
    "BM25 >> MiniLM" = "{first} % 20 >> biencoder"

``{first}`` in an expression is the dataset's first stage: ``bm25`` unless the dataset says otherwise
(``first = "run"`` uses TREC-DL's shipped BM25 run). ``options`` go to :func:`rerank.data.load`.

Each cell (dataset, pipeline) writes ``<out>/<dataset>/<pipeline>.trec`` and a ``.json`` beside it
(expression, query ids, versions, timings, LLM tokens, or the error). Latency is measured after a
warm-up on the first query (model loading and indexing are timed apart, as ``build_and_warmup_s``). A cell whose JSON says it is
done with the same settings is not run again, so an interrupted grid resumes where it stopped; LLM
calls go through :class:`rerank.cache.CachedBackend`. A cell that fails (missing corpus, ids that do
not match the qrels, a model call that raises) is recorded with its error and the grid goes on.

    python -m rerank.bench pipelines/grid_smoke.toml --out results/smoke --limit 20
    rerank bench pipelines/grid_smoke.toml --out results/smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from rerank._progress import progress_bar
from rerank.backends.base import Backend, Generation, Prompt
from rerank.constraints import Constraint
from rerank.errors import ConfigError, DataError
from rerank.evaluate import evaluate_per_query, judged_topics
from rerank.report import BenchReport, Cell
from rerank.rerankers._llm import LLMReranker
from rerank.rerankers._parsing import ParseLog
from rerank.stage import Fuse, Pipeline, Stage
from rerank.types import Ranking

logger = logging.getLogger("rerank")
DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100")
_VERSIONED = ("rerank", "torch", "transformers", "sentence-transformers", "ranx", "vllm", "llama-cpp-python", "openai")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    label: str
    first: str = "bm25"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Grid:
    datasets: list[DatasetSpec]
    pipelines: dict[str, str]
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    baseline: str | None = None
    limit: int | None = None
    name: str = "grid"

    @classmethod
    def read(cls, path: str | Path) -> Grid:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"grid file {path} not found (see pipelines/grid_*.toml)")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        return cls.from_dict(raw, name=path.stem, where=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], name: str = "grid", where: str = "grid") -> Grid:
        settings = raw.get("grid", {})
        pipelines = raw.get("pipelines")
        if not isinstance(pipelines, dict) or not pipelines:
            raise ConfigError(f'{where}: expected a [pipelines] table of name = "expression"')
        entries = raw.get("datasets", settings.get("datasets"))
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{where}: expected datasets = [names or {{ name = ..., first = ..., options = {{...}} }}]")
        datasets = [_dataset_spec(e, where) for e in entries]
        labels = [d.label for d in datasets]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{where}: dataset labels repeat ({labels}); give each a distinct label")
        unknown = set(settings) - {"metrics", "baseline", "limit", "datasets"}
        if unknown:
            raise ConfigError(f"{where}: unknown [grid] settings {sorted(unknown)}; known: metrics, baseline, limit")
        grid = cls(datasets, {str(k): str(v) for k, v in pipelines.items()}, list(settings.get("metrics", DEFAULT_METRICS)),
                   settings.get("baseline"), settings.get("limit"), name)
        if grid.baseline is not None and grid.baseline not in grid.pipelines:
            raise ConfigError(f"{where}: baseline {grid.baseline!r} is not among the pipelines {list(grid.pipelines)}")
        return grid

    def expression(self, pipeline: str, dataset: DatasetSpec) -> str:
        return self.pipelines[pipeline].replace("{first}", dataset.first)


def _dataset_spec(entry: Any, where: str) -> DatasetSpec:
    if isinstance(entry, str):
        return DatasetSpec(entry, entry)
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        extra = set(entry) - {"name", "label", "first", "options"}
        if extra:
            raise ConfigError(f"{where}: dataset {entry['name']!r} has unknown keys {sorted(extra)}")
        return DatasetSpec(entry["name"], entry.get("label", entry["name"]), entry.get("first", "bm25"), dict(entry.get("options", {})))
    raise ConfigError(f"{where}: a dataset is a name or a table with a name, got {entry!r}")


# -- running ----------------------------------------------------------------------------------
def run_grid(grid: Grid | str | Path, out: str | Path, limit: int | None = None, progress: bool | None = None) -> BenchReport:
    """Run every cell not yet done, then evaluate all cells and write ``report.md`` and ``report.html``."""
    grid = grid if isinstance(grid, Grid) else Grid.read(grid)
    out = Path(out)
    limit = limit if limit is not None else grid.limit
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of queries, got {limit}")
    loaded: dict[str, Any] = {}
    cells = [(d, p) for d in grid.datasets for p in grid.pipelines]
    for spec, name in progress_bar(cells, "grid", progress, unit="cell"):
        config = _config(grid, spec, name, limit)
        path = cell_path(out, spec.label, name)
        if _done(path, config):
            continue
        logger.info("running %s on %s: %s", name, spec.label, config["expression"])
        record, ranking = _run_cell(spec, config["expression"], limit, loaded)
        if ranking is not None:
            ranking.write_trec(path, tag=_slug(name))
        _write_json(path.with_suffix(".json"), {**config, "pipeline": name, "label": spec.label, **record})
    report = collect(grid, out, limit, loaded)
    report.write(out)
    return report


def cell_path(out: Path, dataset: str, pipeline: str) -> Path:
    """Where a cell's run is kept; its record is the ``.json`` beside it."""
    return Path(out) / _slug(dataset) / f"{_slug(pipeline)}.trec"


def _config(grid: Grid, spec: DatasetSpec, name: str, limit: int | None) -> dict[str, Any]:
    return {"dataset": spec.name, "options": spec.options, "expression": grid.expression(name, spec), "limit": limit}


def _done(path: Path, config: dict[str, Any]) -> bool:
    meta = _read_json(path.with_suffix(".json"))
    return meta.get("status") == "ok" and path.is_file() and all(meta.get(k) == v for k, v in config.items())


def _run_cell(spec: DatasetSpec, expr: str, limit: int | None, loaded: dict[str, Any]) -> tuple[dict[str, Any], Ranking | None]:
    from rerank.expr import build

    started = time.time()
    try:
        dataset = _dataset(spec, loaded)
        topics, qids = judged_topics(dataset, limit)
        t0 = time.perf_counter()
        stage = build(expr, dataset)
        metered = _meter_llm_calls(stage)
        stage(topics.select(qids[:1]))  # warm-up: loads models, so latency is per query, not per load
        for reranker in metered:
            reranker.llm.reset()
            reranker.answer_log = ParseLog()
        t1 = time.perf_counter()
        ranking = stage(topics)
        t2 = time.perf_counter()
        if len(ranking) == 0:
            raise DataError(f"{expr!r} returned no results for the {len(qids)} queries")
        check_ids(ranking, dataset)
    except Exception as e:  # noqa: BLE001 -- a cell fails alone; the grid and the cells already done are kept
        logger.warning("cell failed: %s on %s: %s: %s", expr, spec.label, type(e).__name__, e)
        return {"status": "error", "error": f"{type(e).__name__}: {e}", "started": started, "versions": versions()}, None
    record = {"status": "ok", "queries": len(qids), "qids": qids, "build_and_warmup_s": t1 - t0, "run_s": t2 - t1,
              "ms_per_query": 1000 * (t2 - t1) / len(qids), "stage": repr(stage)[:2000], "started": started,
              "llm": _meter_totals(metered, len(qids)), "versions": versions()}
    return record, ranking


def _dataset(spec: DatasetSpec, loaded: dict[str, Any]) -> Any:
    from rerank.data import load

    if spec.label not in loaded:
        try:
            loaded[spec.label] = load(spec.name, **spec.options)
        except Exception as e:  # noqa: BLE001 -- reported by each cell of this dataset
            loaded[spec.label] = e
    found = loaded[spec.label]
    if isinstance(found, Exception):
        raise found
    return found


def check_ids(ranking: Ranking, dataset: Any) -> None:
    """Fail when no retrieved document is judged at all: the corpus and qrels ids do not match."""
    judged = {d for docs in dataset.qrels().values() for d in docs}
    retrieved = set(ranking.to_pandas()["docid"])
    if not judged & retrieved:
        raise DataError(f"{dataset.name}: none of the {len(retrieved)} retrieved docids is in the qrels "
                        f"(retrieved {sorted(retrieved)[:3]}, judged {sorted(judged)[:3]}): "
                        "the corpus and the qrels use different ids")


# -- LLM cost -------------------------------------------------------------------------------------
class TokenMeter(Backend):
    """Counts the tokens of the calls that go through a backend (cached calls included)."""

    def __init__(self, inner: Backend):
        self.inner, self.model, self.max_context = inner, inner.model, inner.max_context
        self.reset()

    def reset(self) -> None:
        self.calls = self.prompt_tokens = self.completion_tokens = 0

    @property
    def cache_id(self) -> str:
        from rerank.cache import backend_id

        return backend_id(self.inner)

    @property
    def constrains(self) -> str:  # type: ignore[override]
        return self.inner.constrains

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: Sequence[str] = (), constraint: Constraint | None = None) -> list[Generation]:
        out = self.inner.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop,
                                  constraint=constraint)
        self.calls += len(out)
        self.prompt_tokens += sum(g.prompt_tokens for g in out)
        self.completion_tokens += sum(g.completion_tokens for g in out)
        return out

    def score(self, prompts: Sequence[Prompt], options: Sequence[str]) -> np.ndarray:
        out = self.inner.score(prompts, options)
        self.calls += len(prompts)
        self.prompt_tokens += sum(self.count_tokens(_prompt_text(p)) for p in prompts)
        return out

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def _prompt_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


def _meter_llm_calls(stage: Stage) -> list[LLMReranker]:
    """Route every LLM reranker of ``stage`` through the call cache and a token meter; returns them."""
    from rerank.cache import CachedBackend, CallStore, default_path

    rerankers = [s for s in _leaves(stage) if isinstance(s, LLMReranker)]
    if rerankers:
        store = CallStore(default_path())  # opened (and checked) before any backend loads its model
        for r in rerankers:
            r.wrap_backend(lambda b: TokenMeter(b if isinstance(b, CachedBackend) else CachedBackend(b, store)))
    return rerankers


def _meter_totals(rerankers: list[LLMReranker], queries: int) -> dict[str, float] | None:
    """Calls, tokens and parsed answers (how many needed no repair) of the metered rerankers."""
    if not rerankers:
        return None
    meters: list[TokenMeter] = [r.llm for r in rerankers]  # type: ignore[misc]
    prompt, completion = sum(m.prompt_tokens for m in meters), sum(m.completion_tokens for m in meters)
    return {"calls": sum(m.calls for m in meters), "prompt_tokens": prompt, "completion_tokens": completion,
            "tokens_per_query": (prompt + completion) / queries,
            "answers": sum(r.answer_log.answers for r in rerankers), "valid": sum(r.answer_log.valid for r in rerankers)}


def _leaves(stage: Stage) -> Iterator[Stage]:
    if isinstance(stage, (Pipeline, Fuse)):
        for s in stage.stages:
            yield from _leaves(s)
    else:
        yield stage


# -- evaluation -----------------------------------------------------------------------------------
def collect(grid: Grid, out: str | Path, limit: int | None = None, loaded: dict[str, Any] | None = None) -> BenchReport:
    """Evaluate every cell recorded under ``out`` (cells never run or failed are reported as such)."""
    loaded = {} if loaded is None else loaded
    cells: dict[tuple[str, str], Cell] = {}
    for spec in grid.datasets:
        for name in grid.pipelines:
            cells[spec.label, name] = _evaluate_cell(grid, spec, name, Path(out), limit, loaded)
    return BenchReport(grid.name, [d.label for d in grid.datasets], list(grid.pipelines), grid.metrics,
                       grid.baseline or next(iter(grid.pipelines)), cells, {"limit": limit})


def _evaluate_cell(grid: Grid, spec: DatasetSpec, name: str, out: Path, limit: int | None, loaded: dict[str, Any]) -> Cell:
    path = cell_path(out, spec.label, name)
    meta = _read_json(path.with_suffix(".json"))
    expr = grid.expression(name, spec)
    if not meta or any(meta.get(k) != v for k, v in _config(grid, spec, name, limit).items()):
        return Cell(spec.label, name, expr, "missing", "not run with these settings")
    if meta.get("status") != "ok" or not path.is_file():
        return Cell(spec.label, name, expr, "error", meta.get("error", "the run file is missing"))
    try:
        dataset = _dataset(spec, loaded)
        ranking = Ranking.read_trec(path)
        frame = evaluate_per_query(ranking, dataset, grid.metrics)
        frame = frame[frame.index.isin(meta["qids"])]
    except Exception as e:  # noqa: BLE001 -- reported in the cell
        return Cell(spec.label, name, expr, "error", f"evaluation failed: {type(e).__name__}: {e}")
    llm = meta.get("llm") or {}
    valid_rate = llm["valid"] / llm["answers"] if llm.get("answers") else None
    return Cell(spec.label, name, expr, "ok", None, frame, meta["ms_per_query"], llm.get("tokens_per_query"), valid_rate)


# -- records --------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    """Versions of Python and of the packages that change results."""
    found = {"python": platform.python_version()}
    for pkg in _VERSIONED:
        try:
            found[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return found


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "x"


# -- command line ---------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("grid", type=Path, help="a grid TOML file, e.g. pipelines/grid_smoke.toml")
    p.add_argument("--out", type=Path, help="output folder (default: results/<grid name>)")
    p.add_argument("--limit", type=int, help="run on the first N judged queries of each dataset")
    p.add_argument("--report-only", action="store_true", help="do not run cells; rebuild the report from what is saved")


def run_from_args(args: argparse.Namespace) -> int:
    grid = Grid.read(args.grid)
    out = args.out or Path("results") / grid.name
    if args.report_only:
        report = collect(grid, out, args.limit if args.limit is not None else grid.limit)
        report.write(out)
    else:
        report = run_grid(grid, out, args.limit)
    print(report.to_markdown())
    print(f"\nreport: {out / 'report.html'} and {out / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from rerank.cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
