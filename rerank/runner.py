"""The experiment runner: systems x datasets, behind ``rerank eval``, ``rerank bench`` and ``Experiment``.

Each (dataset, system) is a :class:`Cell`, a frozen dataclass of plain values that
:func:`run_cell` (module level, picklable) turns into a :class:`CellRecord`. Cells go through an
executor (:mod:`rerank.executors`), so they may run in this process or on Ray workers; resuming,
locking, writing files and evaluating happen here, on the driver.

What a cell measures:

* ``load_s``: building the pipeline (indexing, or loading an index from the cache, models a stage loads when built);
* ``warmup_s``: the first query alone, run before the clock starts, so lazy loading is not timed;
* ``run_s`` / ``ms_per_query``: the other queries (all of them when there is only one). The warm-up
  query is not run again, so its LLM calls cannot come back as cache hits in the timed figure;
* ``usage`` / ``warmup_usage``: LLM calls, tokens, call-cache hits and misses, parsed answers, per
  phase (pipelines built from expressions; a Python stage object is run as given, unmetered).

Shared prefixes: when two systems of one dataset start with the same stages (after compiling, so
``bm25 % 100`` is one retriever asked for 100), that prefix runs once, as its own cell, and each
system runs its remaining stages on the prefix's output (PyTerrier's ``precompute_prefix``). A
system's ``ms_per_query`` then adds the prefix's per-query time, so figures stay comparable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from rerank.cellstore import CellStore
from rerank.errors import ConfigError, DataError, RerankError
from rerank.executors import Executor, executor_from_spec
from rerank.metering import Meter, Usage
from rerank.metrics import has_relevant
from rerank.models import code_stamps, files_stamp, local_models, resolved_stamps
from rerank.naming import check_distinct
from rerank.retrievers.base import check_indexed_on
from rerank.stage import Cutoff, Pipeline, Stage
from rerank.types import Ranking

logger = logging.getLogger("rerank")
_VERSIONED = ("rerank", "torch", "transformers", "sentence-transformers", "ranx", "vllm", "llama-cpp-python", "openai")
_RUN_COLUMNS = ["qid", "query", "docid", "score", "rank"]


def check_limit(limit: Any) -> None:
    """Refuse a query limit that is not a positive integer (None means all queries)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive number of queries, got {limit!r}")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset to load by ``name`` (with ``options``), shown as ``label``; ``first`` fills ``{first}``.

    ``loaded`` carries an already loaded Dataset (the Python API); it is not part of the identity.
    """

    name: str
    label: str = ""
    first: str = "bm25"
    options: dict[str, Any] = field(default_factory=dict)
    loaded: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)


@dataclass(frozen=True)
class Settings:
    """What a cell's result depends on besides its dataset and system."""

    limit: int | None = None
    call_cache: bool = True

    def __post_init__(self) -> None:
        check_limit(self.limit)


@dataclass(frozen=True)
class Prefix:
    """A computed shared prefix: how many compiled stages it covers, its output and its cost."""

    key: str
    stages: int
    output: Ranking = field(repr=False)
    ms_per_query: float
    load_s: float
    saved: bool = False                # read back from an earlier run's output folder
    usage: dict[str, int] | None = None          # LLM usage of its timed queries and of its warm-up,
    warmup_usage: dict[str, int] | None = None   # counted again in every system that starts with it


@dataclass(frozen=True)
class Cell:
    """One dataset x one system. ``stage`` is a Stage or Ranking given from Python, else ``expression`` is built."""

    dataset: DatasetSpec
    system: str
    expression: str
    settings: Settings = Settings()
    stage: Any = field(default=None, compare=False, repr=False)
    prefix: Prefix | None = None       # run from this prefix's output, skipping its stages
    stop_after: int | None = None      # run only the first n compiled stages (a prefix cell)


@dataclass
class CellRecord:
    """What running a cell gave: the run (or the error), the query ids, timings and LLM usage."""

    dataset: str
    system: str
    expression: str
    status: str                                  # "ok", "error" or "missing"
    error: str | None = None
    ranking: Ranking | None = field(default=None, repr=False)
    qids: list[str] = field(default_factory=list)
    load_s: float = 0.0
    warmup_s: float = 0.0
    run_s: float = 0.0
    timed_queries: int = 0
    ms_per_query: float | None = None
    prefix: dict[str, Any] | None = None
    usage: dict[str, int] | None = None
    warmup_usage: dict[str, int] | None = None
    stage: str = ""
    started: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    ran_on: str | None = None                    # content hash of the dataset where the cell ran
    ran_with: list[dict[str, Any]] | None = None  # what its stages resolved to where it ran (resolved_stamps)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        """The record as saved beside the run (everything but the ranking)."""
        return {**{k: v for k, v in self.__dict__.items() if k != "ranking"}, "queries": len(self.qids)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], ranking: Ranking | None = None) -> CellRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "ranking"}
        return cls(**known, ranking=ranking)


# -- one cell, anywhere -----------------------------------------------------------------------------
def run_cell(cell: Cell) -> CellRecord:
    """Run one cell; a failure is returned as a record with the error, never raised."""
    started = time.time()
    record = CellRecord(cell.dataset.label, cell.system, cell.expression, "error", started=started, versions=versions())
    try:
        if cell.stage is None:  # an expression: what it resolved to here (a worker may differ from the driver)
            record.ran_with = resolved_stamps(cell_stages(cell.expression, cell.stop_after)) or None
        dataset = load_dataset(cell.dataset)
        record.ran_on = getattr(dataset, "content_fingerprint", None)
        topics, qids = judged_topics(dataset, cell.settings.limit)
        record.qids = qids
        if isinstance(cell.stage, Ranking):
            record.ranking = cell.stage.select(qids)
        else:
            _run_stages(cell, dataset, topics, qids, record)
        if len(record.ranking) == 0:
            if isinstance(cell.stage, Ranking):
                held = sorted(cell.stage.queries())
                raise DataError(f"the run {cell.system!r} has none of the {len(qids)} judged queries (run qids like "
                                f"{held[:3]}, query ids like {qids[:3]})")
            raise DataError(f"{cell.expression!r} returned no results for the {len(qids)} queries")
        if cell.stop_after is None:
            check_ids(record.ranking, dataset)
            record.ranking = Ranking(record.ranking.to_pandas()[_RUN_COLUMNS])
    except Exception as e:  # noqa: BLE001 -- a cell fails alone; the other cells go on
        logger.info("cell failed: %s on %s: %s: %s", cell.system, cell.dataset.label, type(e).__name__, e)
        record.error, record.ranking = f"{type(e).__name__}: {e}", None
        return record
    record.status = "ok"
    logger.info("done: %s on %s, %d queries in %.1f s", cell.system, cell.dataset.label, len(record.qids),
                time.time() - started)
    return record


def _run_stages(cell: Cell, dataset: Any, topics: Ranking, qids: list[str], record: CellRecord) -> None:
    t0 = time.perf_counter()
    if cell.stage is not None:
        built = cell.stage
    else:
        from rerank.expr import build

        built = build(cell.expression, dataset)
    stages = compiled(built)
    skip = cell.prefix.stages if cell.prefix else 0
    todo = stages[skip:cell.stop_after or len(stages)]
    if cell.stage is not None:  # a Python object may hold an index of other documents (an expression is built here)
        for stage in todo:
            check_indexed_on(stage, dataset)
    # the call cache goes only around pipelines built here; a Python stage keeps the backend it was given
    meter = Meter().attach(Pipeline(todo) if todo else built, call_cache=cell.settings.call_cache and cell.stage is None)
    record.stage = repr(built)[:2000]
    try:
        _run_timed(cell, todo, topics, qids, meter, t0, record)
    finally:
        meter.detach()


def _run_timed(cell: Cell, todo: list[Any], topics: Ranking, qids: list[str], meter: Meter, t0: float,
               record: CellRecord) -> None:
    record.load_s = time.perf_counter() - t0
    inp = cell.prefix.output.select(qids) if cell.prefix else topics
    if cell.prefix:
        record.prefix = {"stages": cell.prefix.key, "ms_per_query": cell.prefix.ms_per_query, "load_s": cell.prefix.load_s,
                         "reused_from_disk": cell.prefix.saved}
    if not todo:  # the whole system is the shared prefix
        record.ranking = inp
        record.ms_per_query = cell.prefix.ms_per_query if cell.prefix else 0.0
        if cell.prefix:
            record.usage, record.warmup_usage = cell.prefix.usage, cell.prefix.warmup_usage
        return
    runnable = todo[0] if len(todo) == 1 else Pipeline(todo)
    before = meter.usage()
    t1 = time.perf_counter()
    parts: list[Ranking] = []
    for q in qids[:-1]:  # warm up until a query gives results: one with no candidates loads no model
        parts.append(runnable(inp.select([q])))
        if len(parts[-1]):
            break
    t2 = time.perf_counter()
    timed = qids[len(parts):]
    after_warmup = meter.usage()
    parts.append(runnable(inp.select(timed)))
    t3 = time.perf_counter()
    record.ranking = Ranking.concat(parts)
    record.warmup_s, record.run_s, record.timed_queries = t2 - t1, t3 - t2, len(timed)
    record.ms_per_query = 1000 * record.run_s / len(timed) + (cell.prefix.ms_per_query if cell.prefix else 0.0)
    if meter.active:
        record.warmup_usage = (after_warmup - before).to_dict()
        record.usage = (meter.usage() - after_warmup).to_dict()
    if cell.prefix:  # the prefix's calls are part of this system's cost, as its time is
        record.usage = _added(record.usage, cell.prefix.usage)
        record.warmup_usage = _added(record.warmup_usage, cell.prefix.warmup_usage)


def _added(a: dict[str, int] | None, b: dict[str, int] | None) -> dict[str, int] | None:
    """The sum of two usage dicts (:class:`~rerank.metering.Usage`); None when neither exists."""
    if a is None or b is None:
        return a if b is None else b
    return (Usage(**a) + Usage(**b)).to_dict()


def cell_stages(expression: str, stop_after: int | None = None) -> list[Any]:
    """The stages of ``expression``, or its first ``stop_after`` compiled ones (a prefix); none when it
    does not build (its cell fails on its own)."""
    from rerank.expr import build

    try:
        stage = build(expression)
    except RerankError:
        return []
    return compiled(stage)[:stop_after] if stop_after is not None else [stage]


def compiled(stage: Any) -> list[Any]:
    """The stages a pipeline runs, after cut-offs are absorbed by the retrievers before them."""
    return list(stage.compile().stages) if isinstance(stage, Pipeline) else [stage]


@lru_cache(maxsize=8)
def _load(name: str, options: tuple[tuple[str, Any], ...], stamp: tuple[str, ...] = ()) -> Any:
    from rerank.data import load

    return load(name, **dict(options))


def _stamp(spec: DatasetSpec) -> tuple[str, ...]:
    """The :func:`~rerank.models.files_stamp` of each local folder or file the dataset is read from, so
    that an edited dataset is loaded again rather than answered from the per-process cache, and the
    folder of the dataset's name in the working directory, if any (loading warns that a catalog name
    wins over it)."""
    from rerank.data import local_sources

    here = Path(spec.name).expanduser()
    return (*(files_stamp(path) for path in local_sources(spec.name, spec.options)), str(here.resolve()) if here.is_dir() else "")


def load_dataset(spec: DatasetSpec) -> Any:
    """The spec's dataset (loaded once per process)."""
    if spec.loaded is not None:
        return spec.loaded
    try:
        return _load(spec.name, tuple(sorted(spec.options.items())), _stamp(spec))
    except TypeError as e:  # unhashable options
        if "unhashable" not in str(e):
            raise
        from rerank.data import load

        return load(spec.name, **spec.options)


def _describe_run(name: str, system: Any) -> str:
    """The expression recorded for a precomputed run given from Python: a content hash of its query
    ids, document ids and scores."""
    if not isinstance(system, Ranking):
        raise ConfigError(f"system {name!r} is neither a stage, a Ranking nor an expression string")
    if system.is_query_set:
        raise ConfigError(f"system {name!r} is a Ranking of queries without documents; give a run (a stage's output)")
    frame = system.to_pandas()[["qid", "docid", "score"]]
    return f"precomputed run {hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()[:16]}"


def data_fingerprint(spec: DatasetSpec) -> str | None:
    """The content hash of the spec's dataset (None when it cannot be loaded: its cells fail on their own)."""
    try:
        return load_dataset(spec).content_fingerprint
    except Exception:  # noqa: BLE001 - a dataset that fails to load is reported by its cells
        return None


def judged_topics(dataset: Any, limit: int | None) -> tuple[Ranking, list[str]]:
    """The dataset's judged queries with a relevant document (the first ``limit`` of them: the queries
    evaluation counts) and their ids."""
    judged = dataset.qrels()
    topics = dataset.topics()
    qids = [q for q in topics.queries() if has_relevant(judged.get(q, {}))][:limit]
    if not qids:
        why = ("no judged query has a relevant document (every grade 0 or less)" if any(q in judged for q in topics.queries())
               else f"no query has judgments (qrels ids like {sorted(judged)[:3]})")
        raise DataError(f"{dataset.name}: {why}")
    return topics.select(qids), qids


def check_ids(ranking: Ranking, dataset: Any) -> None:
    """Fail when no retrieved document is judged and the retrieved ids are not the corpus's (or there is
    no corpus to tell): the run and the qrels use different ids. Judged ids are checked against the
    corpus when the qrels load, so retrieved corpus ids that miss every judged one are a real score of 0."""
    judged = {d for docs in dataset.qrels().values() for d in docs}
    retrieved = set(ranking.to_pandas()["docid"])
    if judged & retrieved:
        return
    if dataset.known_docids(retrieved):
        logger.warning("%s: none of the %d retrieved documents is judged, so every measure is 0",
                       dataset.name, len(retrieved))
        return
    raise DataError(f"{dataset.name}: none of the {len(retrieved)} retrieved docids is in the qrels "
                    f"(retrieved {sorted(retrieved)[:3]}, judged {sorted(judged)[:3]}): "
                    "the run and the qrels use different ids")


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that change results."""
    found = {"python": platform.python_version()}
    for pkg in _VERSIONED:
        try:
            found[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return found


# -- many cells, from the driver --------------------------------------------------------------------
class Runner:
    """Run ``systems`` (name -> expression, Stage or Ranking) on ``datasets``; keep the records.

    With ``out``, each cell's run and record are saved there, cells done with the same settings are
    not run again and cells are locked while they run. ``{first}`` in an expression is replaced by
    the dataset's first stage.
    """

    def __init__(self, systems: Mapping[str, Any], datasets: Sequence[DatasetSpec], settings: Settings = Settings(),
                 out: str | Path | None = None, executor: str | Executor | None = None):
        if not systems:
            raise ConfigError("an experiment needs at least one system")
        if not datasets:
            raise ConfigError("an experiment needs at least one dataset")
        check_distinct(systems, "system")
        check_distinct([d.label for d in datasets], "dataset")
        self.systems, self.datasets, self.settings = dict(systems), list(datasets), settings
        # a Ranking's hash, taken once (a Ranking never changes); a stage's repr is read as its cells are built
        self._runs = {name: _describe_run(name, s) for name, s in self.systems.items() if not isinstance(s, str | Stage)}
        self._check_expressions()
        self.store = CellStore(out) if out is not None else None
        self.executor = executor
        self._session = uuid.uuid4().hex  # what saved cells of Python stage objects must match: this runner
        self._stamps: dict[tuple[str, int | None], dict[str, Any]] = {}  # see _stamps_of
        self._pinned: dict[str, str | None] | None = None  # data hashes as a run first saw them (see _data)

    def _check_expressions(self) -> None:
        """Refuse an expression that does not parse or names no stage, before anything runs."""
        from rerank.expr import build

        for cell in self.cells():
            if cell.stage is None:
                try:
                    build(cell.expression)
                except ConfigError as e:  # from a file of many pipelines: say which
                    if cell.system == cell.expression:
                        raise
                    raise ConfigError(f"pipeline {cell.system!r}: {e}") from None

    def cells(self) -> list[Cell]:
        """Every cell, datasets outer, systems inner."""
        from rerank.expr import with_first

        out = []
        for spec in self.datasets:
            for name, system in self.systems.items():
                if isinstance(system, str):
                    out.append(Cell(spec, name, with_first(system, spec.first), self.settings))
                else:
                    described = repr(system) if isinstance(system, Stage) else self._runs[name]  # read now: a stage changed since is another cell
                    out.append(Cell(spec, name, described, self.settings, stage=system))
        return out

    def saved_settings(self, cell: Cell) -> dict[str, Any]:
        """What a saved record must match to stand for this cell. A Python stage object's repr cannot
        show what it was built or indexed on, so its saved cells (and prefixes) stand only for the
        runner that wrote them: another process runs it again."""
        settings = {"dataset_name": cell.dataset.name, "options": cell.dataset.options, "expression": cell.expression,
                    "limit": cell.settings.limit, "data": self._data(cell.dataset)}
        models = local_models(cell.expression)  # a model folder trained again gives new numbers
        if models:
            settings["models"] = models
        if isinstance(cell.stage, Stage):
            return {**settings, "session": self._session}
        return {**settings, **self._stamps_of(cell.expression)}

    def prefix_settings(self, cell: Cell) -> dict[str, Any]:
        """What a saved prefix output must match: its stages are in its key (the job's ``system``),
        and so are the local models among them, their code and what they resolve to here."""
        settings = {k: v for k, v in self.saved_settings(cell).items() if k not in ("expression", "models", "code", "resolved")}
        models = local_models(cell.system)
        return {**settings, **({"models": models} if models else {}), **self._stamps_of(cell.expression, cell.stop_after)}

    def _stamps_of(self, expression: str, stages: int | None = None) -> dict[str, Any]:
        """The code stamps (a plugin's code edited since) and resolved stamps (default weights, the
        runtime or server this machine resolves to) of the expression's stages (its first ``stages``
        compiled ones), each only when there are any; read once per runner."""
        key = (expression, stages)
        if key not in self._stamps:
            target = cell_stages(expression, stages)
            code, resolved = code_stamps(target), resolved_stamps(target)
            self._stamps[key] = {**({"code": code} if code else {}), **({"resolved": resolved} if resolved else {})}
        return self._stamps[key]

    def run(self, progress: bool | None = None) -> dict[tuple[str, str], CellRecord]:
        """Run every cell not done yet; return the records of all cells (saved ones included)."""
        from rerank._progress import progress_bar

        cells = self.cells()
        records: dict[tuple[str, str], CellRecord] = {}
        pending: list[Cell] = []
        locked: list[Cell] = []
        executor: Executor | None = None
        self._pinned = {d.label: data_fingerprint(d) for d in self.datasets}  # what resume decides on
        try:
            for cell in cells:
                key = (cell.dataset.label, cell.system)
                if self.store is None:
                    pending.append(cell)
                    continue
                if self.store.done(cell.dataset.label, cell.system, self.saved_settings(cell)):
                    self.store.unlock(cell.dataset.label, cell.system)  # one a killed run left behind
                    continue
                holder = self.store.lock(cell.dataset.label, cell.system)
                if holder is not None:
                    lock = self.store.lock_path(cell.dataset.label, cell.system)
                    records[key] = CellRecord(*key, cell.expression, "missing", f"being run by {holder} (its lock is "
                                              f"{lock}; delete it if that run has stopped)")
                    continue
                locked.append(cell)
                if self.store.done(cell.dataset.label, cell.system, self.saved_settings(cell)):
                    continue  # another run finished it between the check and the lock
                pending.append(cell)
            executor = executor_from_spec(self.executor)
            for record in progress_bar(self._execute(pending, executor), "cells", progress, total=len(pending), unit="cell"):
                record = self._same_data(record)
                records[record.dataset, record.system] = record
                self._save(record)
            return {(c.dataset.label, c.system): records.get((c.dataset.label, c.system)) or self.saved(c) for c in cells}
        finally:
            if executor is not None and (self.executor is None or isinstance(self.executor, str)):
                executor.close()
            for cell in locked:  # also when the executor failed to start: no lock outlives this run
                self.store.unlock(cell.dataset.label, cell.system)  # type: ignore[union-attr]
            self._pinned = None

    def _execute(self, cells: list[Cell], executor: Executor) -> Iterator[CellRecord]:
        every = self.cells()  # done cells count too: a new system may share a prefix saved by an earlier run
        pending = {(c.dataset.label, c.system) for c in cells}
        plans = [plan for c, plan in zip(every, plan_prefixes(every))
                 if (c.dataset.label, c.system) in pending]
        jobs: dict[str, Cell] = {}
        for cell, plan in zip(cells, plans):
            if plan is not None and plan[0] not in jobs:
                jobs[plan[0]] = replace(cell, system=f"prefix {plan[0]}", stop_after=plan[1])
        prefixes: dict[str, Prefix | str] = {}
        for key, job in list(jobs.items()):
            saved = self.store.read_prefix(job.dataset.label, key, self.prefix_settings(job)) if self.store else None
            if saved is not None:
                frame, meta = saved
                try:
                    prefixes[key] = Prefix(key, job.stop_after, Ranking(frame), meta["ms_per_query"], meta["load_s"], True,  # type: ignore[arg-type]
                                           meta.get("usage"), meta.get("warmup_usage"))
                    del jobs[key]
                except (DataError, ValueError, KeyError, TypeError):
                    logger.warning("the saved prefix %s on %s cannot be read; computing it again", key, job.dataset.label)
        for key, rec in zip(jobs, executor.map(run_cell, list(jobs.values()))):
            error = self._other_data(jobs[key].dataset, rec)
            if error:
                prefixes[key] = error
            elif rec.ok:
                prefixes[key] = Prefix(key, jobs[key].stop_after, rec.ranking, rec.ms_per_query or 0.0, rec.load_s,  # type: ignore[arg-type]
                                       usage=rec.usage, warmup_usage=rec.warmup_usage)
                logger.info("shared prefix on %s, %d queries: %s", rec.dataset, len(rec.qids), key)
                if self.store is not None:
                    self.store.write_prefix(rec.dataset, key, self.prefix_settings(jobs[key]), rec.ranking.to_pandas(),
                                            {"ms_per_query": rec.ms_per_query or 0.0, "load_s": rec.load_s, "qids": rec.qids,
                                             "usage": rec.usage, "warmup_usage": rec.warmup_usage})
            else:
                prefixes[key] = rec.error or "failed"
        todo = []
        for cell, plan in zip(cells, plans):
            found = prefixes.get(plan[0]) if plan is not None else None
            if isinstance(found, str):
                yield CellRecord(cell.dataset.label, cell.system, cell.expression, "error",
                                 f"the shared prefix failed: {found}", started=time.time(), versions=versions())
                continue
            todo.append(replace(cell, prefix=found) if found is not None else cell)
        yield from executor.map(run_cell, todo)

    def _data(self, spec: DatasetSpec) -> str | None:
        """The dataset's content hash; during :meth:`run`, as the run saw it at its start (what resume
        decided on). One run at a time per Runner."""
        return self._pinned[spec.label] if self._pinned is not None else data_fingerprint(spec)

    def _other_data(self, spec: DatasetSpec, record: CellRecord) -> str | None:
        """Why ``record`` cannot stand: it ran on other data than this machine sees (a worker node with
        other files); None when it ran on the same data, or when either side has no hash to compare."""
        here = self._data(spec)
        if not record.ok or record.ran_on is None or here is None or record.ran_on == here:
            return None
        return (f"DataError: the cell ran on a copy of {spec.name!r} that differs from this machine's "
                f"(content hash {record.ran_on[:12]} there, {here[:12]} here); give every node the same files")

    def _same_data(self, record: CellRecord) -> CellRecord:
        cell = next(c for c in self.cells() if (c.dataset.label, c.system) == (record.dataset, record.system))
        error = self._other_data(cell.dataset, record)
        if error:
            record.status, record.ranking, record.error = "error", None, error
        here = self._stamps_of(cell.expression).get("resolved") if cell.stage is None else None
        if record.ok and record.ran_with and _but_weights(record.ran_with) != _but_weights(here or []):
            logger.warning("%s on %s ran where its stages resolve otherwise than here (its record's ran_with: %s); it is "
                           "saved under this machine's settings", record.system, record.dataset,
                           json.dumps(_but_weights(record.ran_with))[:200])
        return record

    def _save(self, record: CellRecord) -> None:
        if self.store is None:
            return
        cell = next(c for c in self.cells() if (c.dataset.label, c.system) == (record.dataset, record.system))
        if record.ranking is not None:
            try:
                record.ranking.write_trec(self.store.run_path(record.dataset, record.system), tag=record.system)
            except DataError as e:  # ids a run file cannot hold: the results stand, but nothing is kept to resume from
                logger.warning("%s on %s is not saved, and will run again: %s", record.system, record.dataset, e)
                return
        self.store.write(record.dataset, record.system, {**self.saved_settings(cell), **record.to_json()})

    def saved(self, cell: Cell) -> CellRecord:
        """The saved record of ``cell`` (status "missing" when nothing matches these settings)."""
        key = (cell.dataset.label, cell.system)
        if self.store is None:
            return CellRecord(*key, cell.expression, "missing", "not run")
        data = self.store.read(*key)
        if not data or any(data.get(k) != v for k, v in self.saved_settings(cell).items()):
            return CellRecord(*key, cell.expression, "missing", "not run with these settings")
        path = self.store.run_path(*key)
        if data.get("status") != "ok":
            return CellRecord.from_json(data)
        if not path.is_file():
            return CellRecord(*key, cell.expression, "error", "the run file is missing")
        if not self.store.intact(*key, data):
            return CellRecord(*key, cell.expression, "error", "the run file is not the one recorded (edited, cut or "
                              "damaged since); run the experiment again to recompute it")
        try:
            ranking = Ranking.read_trec(path)
        except DataError as e:
            return CellRecord(*key, cell.expression, "error", f"the saved run cannot be read: {e}")
        if not self.store.intact(*key, data):  # replaced while it was read (another run of this cell)
            return CellRecord(*key, cell.expression, "missing", "its run file was replaced while it was read")
        return CellRecord.from_json(data, ranking)


def _but_weights(stamps: Any) -> Any:
    """Resolved stamps without the weights stamps, which differ between installs of the same files."""
    if isinstance(stamps, dict):
        return {k: _but_weights(v) for k, v in stamps.items() if k != "weights"}
    return [_but_weights(v) for v in stamps] if isinstance(stamps, list) else stamps


def plan_prefixes(cells: Sequence[Cell]) -> list[tuple[str, int] | None]:
    """Per cell: (key, number of stages) of the longest prefix it shares with another cell of its dataset, or None.

    A cell takes the longest prefix it shares; systems given as Rankings share nothing.
    """
    from rerank.expr import build

    chains: list[list[str]] = []
    for cell in cells:
        try:
            stage = cell.stage if cell.stage is not None else build(cell.expression)
        except Exception:  # noqa: BLE001 -- reported when the cell runs
            stage = None
        chains.append([] if stage is None or isinstance(stage, Ranking) else _chain(stage, identity=cell.stage is not None))
    counts: dict[tuple[str, ...], int] = {}
    for cell, chain in zip(cells, chains):
        for n in range(1, len(chain) + 1):
            key = (cell.dataset.label, *chain[:n])
            counts[key] = counts.get(key, 0) + 1
    plans: list[tuple[str, int] | None] = []
    for cell, chain in zip(cells, chains):
        shared = [n for n in range(1, len(chain) + 1) if counts[(cell.dataset.label, *chain[:n])] > 1]
        text = " >> ".join(chain[:max(shared)]) if shared else ""
        digest = hashlib.sha1(f"{cell.dataset.label}|{text}".encode()).hexdigest()[:8]
        plans.append((f"{text} [{digest}]", max(shared)) if shared else None)
    return plans


def _chain(stage: Any, identity: bool) -> list[str]:
    """What identifies each compiled stage: its repr, and for Python objects also which objects it came from.

    Two objects with one repr may hold different state (two BM25 indexes of different corpora), so
    Python stages share a prefix only when they are the same objects. Built expressions are rebuilt
    identically wherever they run, so their repr is enough.
    """
    names = [repr(s) for s in compiled(stage)]
    if not identity:
        return names
    stages = stage.stages if isinstance(stage, Pipeline) else [stage]
    origins = ["cut-off" if isinstance(s, Cutoff) else str(id(s)) for s in stages]  # a cut-off holds no state
    return [f"{name}@{origin}" for name, origin in zip(names, origins, strict=True)]
