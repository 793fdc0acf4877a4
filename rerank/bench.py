"""Benchmark grids: a TOML file of pipelines x datasets, run by :class:`rerank.evaluate.Experiment`.

A grid is a TOML file (see ``pipelines/grid_*.toml``)::

    [grid]
    metrics = ["ndcg@10", "mrr@10", "recall@100"]   # optional (rerank.metrics.DEFAULT_METRICS)
    baseline = "BM25"                               # optional: the first pipeline
    limit = 50                                      # optional: first N judged queries per dataset
    test = "student"                                # optional: or "fisher"
    correction = "holm"                             # optional: or "bonferroni" or "none" (the default)

    datasets = ["scifact", { name = "trec-dl-2019", first = "run" },
                { name = "bright/biology", label = "bright/biology (long)", options = { long = true } }]

    [pipelines]
    "BM25" = "{first}"
    "BM25 >> MiniLM" = "{first} % 20 >> biencoder"

``{first}`` in an expression is the dataset's first stage: ``bm25`` unless the dataset says otherwise
(``first = "run"`` uses TREC-DL's shipped BM25 run), as a whole: ``first = "bm25 | dense"`` goes in
parentheses. ``options`` go to :func:`rerank.data.load`.

The grid runs through the same runner as ``rerank eval`` (:mod:`rerank.runner`): each cell
(dataset, pipeline) writes ``<out>/<dataset>/<pipeline>.trec`` and a ``.json`` record beside it,
cells done with the same settings are not run again, cells are locked while they run, a failing cell
is recorded with its error and the grid goes on, and shared pipeline prefixes run once per dataset.
The report is written as ``report.md``, ``report.html`` and ``report.json``.

    rerank bench pipelines/grid_smoke.toml --out results/smoke --limit 20
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank import significance
from rerank.errors import ConfigError
from rerank.evaluate import Experiment
from rerank.expr import with_first
from rerank.executors import Executor
from rerank.io import read_toml
from rerank.metrics import DEFAULT_METRICS, parse_metrics
from rerank.naming import check_distinct
from rerank.report import Report
from rerank.cellstore import CellStore
from rerank.runner import DatasetSpec, check_limit

_SETTINGS = ("metrics", "baseline", "limit", "datasets", "test", "correction")


@dataclass(frozen=True)
class Grid:
    datasets: list[DatasetSpec]
    pipelines: dict[str, str]
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    baseline: str | None = None
    limit: int | None = None
    name: str = "grid"
    test: str = "student"
    correction: str | None = None

    @classmethod
    def read(cls, path: str | Path) -> Grid:
        path = Path(path)
        if not path.is_file():
            problem = "is a folder, not a grid file" if path.is_dir() else "not found"
            raise ConfigError(f"grid file {path} {problem} (see pipelines/grid_*.toml)")
        return cls.from_dict(read_toml(path), name=path.stem, where=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], name: str = "grid", where: str = "grid") -> Grid:
        stray = sorted(set(raw) - {"grid", "pipelines", "datasets"})
        if stray:
            raise ConfigError(f"{where}: unknown top-level keys {stray} (settings belong in the [grid] table, "
                              "written before it; known tables: grid, pipelines)")
        settings = raw.get("grid", {})
        if not isinstance(settings, dict):
            raise ConfigError(f"{where}: [grid] must be a table of settings ({', '.join(_SETTINGS)})")
        if "datasets" in raw and "datasets" in settings:
            raise ConfigError(f"{where}: datasets is given twice (top level and in [grid]); keep one")
        unknown = set(settings) - set(_SETTINGS)
        if unknown:
            raise ConfigError(f"{where}: unknown [grid] settings {sorted(unknown)}; known: {', '.join(_SETTINGS)}")
        pipelines = pipeline_table(raw, where)
        entries = raw.get("datasets", settings.get("datasets"))
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{where}: expected datasets = [names or {{ name = ..., first = ..., options = {{...}} }}]")
        datasets = [_dataset_spec(e, where) for e in entries]
        labels = [d.label for d in datasets]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{where}: dataset labels repeat ({labels}); give each a distinct label")
        _within(where, check_distinct, labels, "dataset")
        limit = settings.get("limit")
        _within(where, check_limit, limit)
        metrics = _within(where, parse_metrics, settings.get("metrics"))
        baseline = settings.get("baseline")
        if baseline is not None and not isinstance(baseline, str):  # before the look-up: a list is unhashable
            raise ConfigError(f"{where}: baseline must be a pipeline name (a string), got {baseline!r}")
        if baseline is not None and baseline not in pipelines:
            raise ConfigError(f"{where}: baseline {baseline!r} is not among the pipelines {list(pipelines)}")
        test = settings.get("test", "student")
        correction = _within(where, significance.check, test, settings.get("correction"))
        return cls(datasets, pipelines, metrics, baseline, limit, name, test, correction)

    def expression(self, pipeline: str, dataset: DatasetSpec) -> str:
        return with_first(self.pipelines[pipeline], dataset.first)

    def experiment(self, out: str | Path | None, limit: int | None = None,
                   executor: str | Executor | None = None) -> Experiment:
        """The grid as an :class:`Experiment` writing into ``out`` (``limit`` overrides the grid's)."""
        return Experiment(self.pipelines, self.datasets, self.metrics, self.baseline, save_dir=out,
                          limit=limit if limit is not None else self.limit, executor=executor, test=self.test,
                          correction=self.correction, name=self.name)


def pipeline_table(raw: dict[str, Any], where: str) -> dict[str, str]:
    """The ``[pipelines]`` table of name = "expression", checked."""
    pipelines = raw.get("pipelines")
    if not isinstance(pipelines, dict) or not pipelines:
        raise ConfigError(f'{where}: expected a [pipelines] table of name = "expression"')
    bad = [k for k, v in pipelines.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ConfigError(f"{where}: pipeline {bad[0]!r} is not an expression string: {pipelines[bad[0]]!r}")
    _within(where, check_distinct, pipelines, "pipeline")
    return {str(k): v for k, v in pipelines.items()}


def _within(where: str, check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _dataset_spec(entry: Any, where: str) -> DatasetSpec:
    if isinstance(entry, str) and entry.strip():
        return DatasetSpec(entry)
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        extra = set(entry) - {"name", "label", "first", "options"}
        if extra:
            raise ConfigError(f"{where}: dataset {entry['name']!r} has unknown keys {sorted(extra)}")
        label, first, options = entry.get("label", entry["name"]), entry.get("first", "bm25"), entry.get("options", {})
        if not isinstance(label, str) or not isinstance(first, str) or not isinstance(options, dict):
            raise ConfigError(f"{where}: dataset {entry['name']!r}: label and first are strings, options a table")
        return DatasetSpec(entry["name"], label, first, dict(options))
    raise ConfigError(f"{where}: a dataset is a name or a table with a name, got {entry!r}")


def run_grid(grid: Grid | str | Path, out: str | Path, limit: int | None = None, progress: bool | None = None,
             executor: str | Executor | None = None) -> Report:
    """Run every cell not yet done, then evaluate all cells and write the report into ``out``."""
    grid = grid if isinstance(grid, Grid) else Grid.read(grid)
    return grid.experiment(out, limit, executor).run(progress)


def collect(grid: Grid, out: str | Path, limit: int | None = None) -> Report:
    """The report of the cells recorded under ``out`` (cells never run or failed are reported as such)."""
    return grid.experiment(out, limit).collect()


def cell_path(out: str | Path, dataset: str, pipeline: str) -> Path:
    """Where a cell's run is kept; its record is the ``.json`` beside it."""
    return CellStore(out).run_path(dataset, pipeline)
