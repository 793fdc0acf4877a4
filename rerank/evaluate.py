"""Evaluation over ranx, and :class:`Experiment`: systems compared on datasets with paired tests.

Metric names are ranx's (``ndcg@10``, ``mrr@10``, ``recall@100``, ``map@1000``), checked by
:mod:`rerank.metrics`; ``ndcg`` is the trec_eval (linear gain) form. For binary measures the dataset's relevance threshold is applied
(TREC-DL counts relevance >= 2), nDCG uses graded labels. A judged query with no results scores 0.
Queries without judgments are ignored. Inputs are never modified.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rerank.errors import ConfigError, DataError
from rerank.executors import Executor
from rerank.metrics import DEFAULT_METRICS, MAX_NUMBER, has_relevant, parse_metrics, ranx_name
from rerank.params import is_finite_number, is_integer
from rerank.report import CellResult, Report
from rerank.types import Ranking, unwritable_id

Qrels = Mapping[str, Mapping[str, int]]
logger = logging.getLogger("rerank")


def evaluate(ranking: Ranking, qrels: Qrels | Any, metrics: Sequence[str] = DEFAULT_METRICS,
             rel_threshold: int | None = None) -> dict[str, float]:
    """Mean of each metric over the judged queries (a judged query the run lacks counts as 0, as in
    ``trec_eval -c``, with a warning that counts them).

    ``qrels`` is a :class:`~rerank.data.Dataset` (whose relevance threshold and excluded ids then apply)
    or judgments in any form :func:`rerank.data.memory.as_qrels` reads: ``{qid: {docid: relevance}}``,
    ``(qid, docid, relevance)`` tuples or ``Qrel`` records, a DataFrame, a ranx ``Qrels``.

    >>> from rerank import Ranking
    >>> run = Ranking.from_records([("q1", "", "d1", 2.0), ("q1", "", "d2", 1.0)])
    >>> evaluate(run, {"q1": {"d2": 1}}, ["mrr@10"])
    {'mrr@10': 0.5}
    """
    per_query = evaluate_per_query(ranking, qrels, metrics, rel_threshold)
    absent = without_results(per_query, ranking)
    if absent:
        logger.warning("%d of %d judged queries are not in the run (e.g. %r): they count as 0 in the means; to score "
                       "only the queries you ran, give the qrels of those queries", len(absent), len(per_query), absent[0])
    judged = {d for docs in _judgments(qrels, rel_threshold)[0].values() for d in docs}
    retrieved = set(ranking.to_pandas()["docid"])
    if not judged & retrieved:  # as an Experiment's cell says (check_ids): ids of another scheme score 0
        logger.warning("none of the %d retrieved documents is judged, so every measure is 0; do the run and the qrels "
                       "use the same document ids? (retrieved %s, judged %s)", len(retrieved), sorted(retrieved)[:3], sorted(judged)[:3])
    return {m: mean_of(per_query[m], m) for m in per_query.columns}


def without_results(per_query: pd.DataFrame, ranking: Ranking) -> list[str]:
    """The judged queries of ``per_query`` that ``ranking`` has no results for (they count as 0)."""
    ran = set(ranking.queries())
    return [q for q in per_query.index if q not in ran]


def mean_of(values: pd.Series, metric: str) -> float:
    """The mean of a metric's per-query values; NaN (with a warning) when some query's value is
    undefined, never the mean of the others."""
    if values.isna().any():
        logger.warning(_undefined(values, metric))
    return float(values.mean(skipna=False))


def _undefined(values: pd.Series, metric: str) -> str:
    return f"{metric} is undefined (NaN) on {int(values.isna().sum())} of {len(values)} queries; its mean is NaN"


def evaluate_per_query(ranking: Ranking, qrels: Qrels | Any, metrics: Sequence[str] = DEFAULT_METRICS,
                       rel_threshold: int | None = None) -> pd.DataFrame:
    """One row per judged query (index ``qid``), one column per metric."""
    from ranx import Qrels as RanxQrels
    from ranx import Run
    from ranx import evaluate as ranx_evaluate

    metrics = parse_metrics(metrics)
    qrels_dict, threshold, exclusions = _judgments(qrels, rel_threshold)
    if not isinstance(ranking, Ranking):
        raise ConfigError(f"evaluate takes a Ranking (a stage's output), got {type(ranking).__name__}; make one "
                          "with Ranking.from_run (a ranx Run or {qid: {docid: score}}), from_pandas or read_trec")
    if ranking.is_query_set:
        raise DataError("the run holds queries but no ranked documents; run a pipeline on them first")
    run = _by_rank(ranking)
    qids = sorted(qrels_dict)
    if not run:
        raise DataError("the run is empty: no query has a ranked document")
    if not set(run) & set(qids):
        raise DataError(f"none of the {len(run)} ranked queries has judgments (qids like {sorted(run)[:3]} vs {qids[:3]})")
    run = {q: {d: s for d, s in run.get(q, {}).items() if d not in exclusions.get(q, ())} for q in qids}
    judged = {q: {d: r for d, r in docs.items() if r >= 0}  # a negative grade is unjudged, as in trec_eval (bpref tells)
              for q, docs in qrels_dict.items() if has_relevant(docs)}
    if not judged:
        raise DataError("the qrels hold no relevant document")
    if len(judged) < len(qrels_dict) and not _is_dataset(qrels):  # a dataset says so when it loads
        logger.warning("%d of %d judged queries have no relevant document (every grade 0 or less), so no metric is "
                       "defined for them; they are not evaluated (trec_eval would count them as 0)",
                       len(qrels_dict) - len(judged), len(qrels_dict))
    none = _unjudged_id(judged)
    scored = {q: (docs or {none: -np.inf}) for q, docs in run.items() if q in judged}
    evaluated = sorted(judged)
    columns = {m: [bpref(judged[q], scored[q], int(m.partition("-l")[2] or threshold)) for q in evaluated]
               for m in metrics if m.split("-l")[0] == "bpref"}  # bpref-l2 too: never ranx's
    ranx_names = {ranx_name(m, threshold): m for m in metrics if m not in columns}
    if ranx_names:
        with warnings.catch_warnings():  # numba's uint64->int64 notice inside ranx is harmless here
            warnings.simplefilter("ignore")
            values = ranx_evaluate(RanxQrels(judged), Run(scored), list(ranx_names), return_mean=False, make_comparable=True)
        columns |= {m: values[r] if len(ranx_names) > 1 else values for r, m in ranx_names.items()}
    return pd.DataFrame({m: np.asarray(columns[m], dtype=np.float64) for m in metrics}, index=pd.Index(evaluated, name="qid"))


def bpref(judgments: Mapping[str, int], run: Mapping[str, float], threshold: int = 1) -> float:
    """trec_eval's bpref of one query: the judged documents of ``run`` (docid -> score) from the highest
    score down; each relevant one adds 1 - min(non-relevant above it, R) / min(N, R), or 1 when none is
    above it (so 0 judged non-relevant documents gives the share of the R relevant ones retrieved).

    Not ranx's: it is undefined without a judged non-relevant document, and in ranx 0.3.21 a query with
    no relevant document at the threshold gives 0 to every query sorted after it.

    >>> bpref({"a": 1, "b": 0, "c": 1}, {"b": 3.0, "a": 2.0, "x": 1.0})
    0.0
    >>> bpref({"a": 1, "c": 1}, {"b": 3.0, "a": 2.0})
    0.5
    """
    relevant = sum(r >= threshold for r in judgments.values())
    nonrelevant = len(judgments) - relevant
    total, above = 0.0, 0
    for d in sorted((d for d in run if d in judgments), key=lambda d: -run[d]):
        if judgments[d] < threshold:
            above += 1
        else:
            total += 1.0 - min(above, relevant) / min(nonrelevant, relevant) if above else 1.0
    return total / relevant if relevant else 0.0


def _by_rank(ranking: Ranking) -> dict[str, dict[str, float]]:
    """``{qid: {docid: -rank}}``: the Ranking's order, tied scores kept in the run's order, as ranx's score
    sort (not stable for large groups of ties) would not keep them."""
    frame = ranking.to_pandas()
    for column in ("qid", "docid"):
        ids = pd.Series(frame[column].unique())
        bad = ids[ids.map(unwritable_id)]
        if len(bad):
            raise DataError(f"the run has a {column} that is empty or starts or ends with whitespace ({bad.iloc[0]!r:.40}), "
                            "which qrels and run files cannot hold (it would match no judgment as written); strip it")
    out: dict[str, dict[str, float]] = {}
    for q, d, r in zip(frame["qid"], frame["docid"], frame["rank"]):
        out.setdefault(q, {})[d] = -float(r)
    return out


def _unjudged_id(judged: Mapping[str, Mapping[str, int]]) -> str:
    """A docid that no judgment names: the stand-in ranx needs for a judged query without results."""
    named = {d for docs in judged.values() for d in docs}
    none = "__no_result__"
    while none in named:
        none += "_"
    return none


def _is_dataset(qrels: Any) -> bool:
    """A :class:`~rerank.data.Dataset` (or any object with a ``qrels()`` method), not judgments themselves
    (a ranx ``Qrels`` has a ``qrels`` attribute, a dict)."""
    return callable(getattr(qrels, "qrels", None))


def _judgments(qrels: Any, rel_threshold: int | None) -> tuple[dict[str, dict[str, int]], int, dict[str, set[str]]]:
    if _is_dataset(qrels):
        threshold = _threshold(rel_threshold if rel_threshold is not None else qrels.rel_threshold)
        asked = {q.qid for q in qrels.queries()}  # judged queries missing from the queries are not evaluated
        return {q: docs for q, docs in qrels.qrels().items() if q in asked}, threshold, qrels.exclusions()
    from rerank.data.memory import as_qrels

    return as_qrels(qrels), _threshold(rel_threshold if rel_threshold is not None else 1), {}


def _threshold(value: Any) -> int:
    """A relevance threshold: an integer >= 1 (0 would count judged non-relevant documents as relevant)."""
    if not is_integer(value) or not 1 <= value <= MAX_NUMBER:
        raise ConfigError(f"rel_threshold must be an integer from 1 to {MAX_NUMBER:,}, got {value!r}")
    return int(value)


class Experiment:
    """Run several systems on one or more datasets and compare them with paired significance tests.

    ``systems`` maps names to stages, to precomputed Rankings or to pipeline expressions; ``dataset``
    is a Dataset, a dataset name, or a list of them. The first system is the baseline unless
    ``baseline`` names another. ``test`` is ``"student"`` (paired t-test) or ``"fisher"``
    (randomization test), ``correction`` ``None``, ``"bonferroni"`` or ``"holm"``. With ``save_dir``,
    runs and records are kept there and cells already done are not run again. ``executor`` runs the
    cells (``"local"``, ``"ray"``, see :mod:`rerank.executors`). This is the runner behind
    ``rerank eval`` and ``rerank bench`` (:mod:`rerank.runner`).
    """

    def __init__(self, systems: Mapping[str, Any], dataset: Any, metrics: Sequence[str] | str | None = None,
                 baseline: str | None = None, max_p: float = 0.05, save_dir: str | Path | None = None,
                 limit: int | None = None, executor: str | Executor | None = None, test: str = "student",
                 correction: str | None = None, name: str = "experiment"):
        from rerank import significance
        from rerank.runner import DatasetSpec, Runner, Settings

        if not isinstance(systems, Mapping):
            raise ConfigError(f"an Experiment takes its systems as {{name: stage, Ranking or expression}}, got "
                              f"{type(systems).__name__}: {systems!r:.60}")
        if not systems:
            raise ConfigError("an Experiment needs at least one system")
        self.metrics = parse_metrics(metrics)
        correction = significance.check(test, correction)
        if save_dir is not None and not str(save_dir).strip():
            raise ConfigError("save_dir must name a folder (or be None), got ''")
        if not (is_finite_number(max_p) and 0 < max_p <= 1):
            raise ConfigError(f"max_p must be a number in (0, 1], got {max_p!r}")
        self.baseline = next(iter(systems)) if baseline is None else baseline
        if not isinstance(self.baseline, str):  # before the look-up: a list is unhashable
            raise ConfigError(f"baseline must be a system name (a string), got {self.baseline!r}")
        if self.baseline not in systems:
            raise ConfigError(f"baseline {self.baseline!r} is not among the systems {list(systems)}")
        datasets = dataset if isinstance(dataset, (list, tuple)) else [dataset]
        odd = [d for d in datasets if not (isinstance(d, (str, DatasetSpec)) or hasattr(d, "corpus"))]
        if odd or not datasets:
            raise ConfigError(f"an Experiment takes a Dataset, a dataset name or a list of them, got {odd[0] if odd else dataset!r:.60}")
        specs = [d if isinstance(d, DatasetSpec) else DatasetSpec(d) if isinstance(d, str) else DatasetSpec(d.name, loaded=d)
                 for d in datasets]
        self.runner = Runner(systems, specs, Settings(limit), save_dir, executor)
        self.max_p, self.test, self.correction, self.name = max_p, test, correction, name
        self.save_dir = Path(save_dir) if save_dir else None

    def run(self, progress: bool | None = None) -> Report:
        """Run every cell not done yet, evaluate all, and return the :class:`~rerank.report.Report`.

        With ``save_dir``, the report is also written there (``report.md``, ``.html``, ``.json``), with
        the cells this run left to another run's lock as that folder holds them by then: two runs of one
        grid into one folder, the report written last shows every cell either finished. The report
        returned is the one written (a cell still missing is one no run has finished).
        """
        records = self.runner.run(progress)
        report = self._report(records)
        if self.save_dir:
            report = self._as_saved(records, report)
            report.write(self.save_dir)
        return report

    def collect(self) -> Report:
        """The report of what ``save_dir`` holds, running nothing (cells not run show as missing)."""
        return self._report({(c.dataset.label, c.system): self.runner.saved(c) for c in self.runner.cells()})

    def _as_saved(self, records: Mapping[tuple[str, str], Any], report: Report) -> Report:
        """``report`` with its missing cells read again from ``save_dir`` (as :meth:`collect` does), those
        saved since by another run in place; the other cells are not evaluated again."""
        again = {(c.dataset.label, c.system): self.runner.saved(c) for c in self.runner.cells()
                 if records[c.dataset.label, c.system].status == "missing"}
        finished = {key: rec for key, rec in again.items() if rec.ok}
        if not finished:
            return report
        kept = {key: cell for key, cell in report.cells.items() if key not in finished}
        return self._report({**records, **finished}, kept)

    def _report(self, records: Mapping[tuple[str, str], Any],
                evaluated: Mapping[tuple[str, str], CellResult] | None = None) -> Report:
        """The report of ``records``, taking the cells in ``evaluated`` as they are."""
        from rerank.runner import load_dataset

        specs = {d.label: d for d in self.runner.datasets}
        known = evaluated or {}
        cells = {key: known[key] if key in known else evaluate_record(rec, specs[key[0]], self.metrics, load_dataset)
                 for key, rec in records.items()}
        info: dict[str, Any] = {"limit": self.runner.settings.limit} if self.runner.settings.limit else {}
        info["rel_threshold"] = {label: _threshold_of(spec, load_dataset) for label, spec in specs.items()}
        return Report(self.name, list(specs), list(self.runner.systems), self.metrics, self.baseline, cells,
                      test=self.test, correction=self.correction, max_p=self.max_p, info=info)


def _threshold_of(spec: Any, load: Any) -> int | None:
    """The relevance threshold the dataset's binary measures use (None when it does not load: its cells say why)."""
    try:
        return load(spec).rel_threshold
    except Exception:  # noqa: BLE001 - reported by the dataset's cells
        return None


def evaluate_record(record: Any, spec: Any, metrics: Sequence[str], load: Any) -> CellResult:
    """A runner's cell record scored on its queries (a failed or missing cell keeps its error)."""
    base = {"dataset": record.dataset, "system": record.system, "expression": record.expression}
    if not record.ok:
        return CellResult(**base, status=record.status, error=record.error)
    try:
        dataset = load(spec)
        now = getattr(dataset, "content_fingerprint", None)
        if record.ran_on is not None and now is not None and now != record.ran_on:  # edited since: other judgments
            return CellResult(**base, status="error", error=f"DataError: {spec.name!r} changed since this cell ran "
                              f"(content hash {record.ran_on[:12]} then, {now[:12]} now); run it again")
        frame = evaluate_per_query(record.ranking, dataset, metrics)
        frame = frame[frame.index.isin(record.qids)]
    except Exception as e:  # noqa: BLE001 -- reported in the cell
        return CellResult(**base, status="error", error=f"evaluation failed: {type(e).__name__}: {e}")
    absent = without_results(frame, record.ranking)
    if absent:
        logger.warning("%s on %s: %d of %d judged queries have no results (e.g. %r); they count as 0", record.system,
                       record.dataset, len(absent), len(frame), absent[0])
    for m in frame.columns:
        if frame[m].isna().any():
            logger.warning("%s on %s: %s", record.system, record.dataset, _undefined(frame[m], m))
    return CellResult(**base, status="ok", per_query=frame, ms_per_query=record.ms_per_query, load_s=record.load_s,
                      usage=record.usage, timed_queries=record.timed_queries, prefix=(record.prefix or {}).get("stages"),
                      warmed_up=record.ms_per_query is None or record.timed_queries < len(record.qids))
