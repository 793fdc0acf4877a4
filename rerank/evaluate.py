"""Evaluation over ranx: measures per dataset conventions, system comparison with paired tests.

Metric names are ranx's (``ndcg@10``, ``mrr@10``, ``recall@100``, ``map@1000``); ``ndcg`` is the
trec_eval (linear gain) form. For binary measures the dataset's relevance threshold is applied
(TREC-DL counts relevance >= 2), nDCG uses graded labels. A judged query with no results scores 0.
Queries without judgments are ignored. Inputs are never modified.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rerank.errors import ConfigError, DataError
from rerank.types import Ranking

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "map@1000")
BINARY = ("map", "mrr", "recall", "precision", "hit_rate", "hits", "r-precision", "bpref", "f1")
Qrels = Mapping[str, Mapping[str, int]]


def evaluate(ranking: Ranking, qrels: Qrels | Any, metrics: Sequence[str] = DEFAULT_METRICS,
             rel_threshold: int | None = None) -> dict[str, float]:
    """Mean of each metric over the judged queries.

    ``qrels`` is ``{qid: {docid: relevance}}`` or a :class:`~rerank.data.Dataset` (whose relevance
    threshold and excluded ids then apply).

    >>> from rerank import Ranking
    >>> run = Ranking.from_records([("q1", "", "d1", 2.0), ("q1", "", "d2", 1.0)])
    >>> evaluate(run, {"q1": {"d2": 1}}, ["mrr@10"])
    {'mrr@10': 0.5}
    """
    per_query = evaluate_per_query(ranking, qrels, metrics, rel_threshold)
    return {m: float(per_query[m].mean()) for m in metrics}


def evaluate_per_query(ranking: Ranking, qrels: Qrels | Any, metrics: Sequence[str] = DEFAULT_METRICS,
                       rel_threshold: int | None = None) -> pd.DataFrame:
    """One row per judged query (index ``qid``), one column per metric."""
    from ranx import Qrels as RanxQrels
    from ranx import Run
    from ranx import evaluate as ranx_evaluate

    qrels_dict, threshold, exclusions = _judgments(qrels, rel_threshold)
    run = ranking.to_dict() if not ranking.is_query_set else {}
    qids = sorted(qrels_dict)
    if not set(run) & set(qids) and run:
        raise DataError(f"none of the {len(run)} ranked queries has judgments (qids like {sorted(run)[:3]} vs {qids[:3]})")
    run = {q: {d: s for d, s in run.get(q, {}).items() if d not in exclusions.get(q, ())} for q in qids}
    judged = {q: docs for q, docs in qrels_dict.items() if any(r > 0 for r in docs.values())}
    if not judged:
        raise DataError("the qrels hold no relevant document")
    scored = {q: (docs or {"__no_result__": -np.inf}) for q, docs in run.items() if q in judged}
    ranx_names = [_ranx_name(m, threshold) for m in metrics]
    with warnings.catch_warnings():  # numba's uint64->int64 notice inside ranx is harmless here
        warnings.simplefilter("ignore")
        values = ranx_evaluate(RanxQrels(judged), Run(scored), ranx_names, return_mean=False, make_comparable=True)
    if len(metrics) == 1:
        values = {ranx_names[0]: values}
    frame = pd.DataFrame({m: np.asarray(values[r], dtype=np.float64) for m, r in zip(metrics, ranx_names)},
                         index=pd.Index(sorted(judged), name="qid"))
    return frame


def _ranx_name(metric: str, threshold: int) -> str:
    base = metric.split("@")[0].split("-l")[0]
    if threshold > 1 and base in BINARY and "-l" not in metric:
        return f"{metric}-l{threshold}"
    return metric


def _judgments(qrels: Any, rel_threshold: int | None) -> tuple[dict[str, dict[str, int]], int, dict[str, set[str]]]:
    if hasattr(qrels, "qrels") and callable(qrels.qrels):
        threshold = rel_threshold if rel_threshold is not None else qrels.rel_threshold
        return qrels.qrels(), threshold, qrels.exclusions()
    if not isinstance(qrels, Mapping):
        raise ConfigError(f"qrels must be a {{qid: {{docid: relevance}}}} mapping or a Dataset, got {type(qrels).__name__}")
    from rerank.io import relevance_grade

    graded = {str(q): {str(d): relevance_grade(r, f"qrels[{q!r}][{d!r}]") for d, r in docs.items()} for q, docs in qrels.items()}
    return graded, rel_threshold or 1, {}


def judged_topics(dataset: Any, limit: int | None = None) -> tuple[Ranking, list[str]]:
    """The dataset's judged queries (the first ``limit`` of them) and their ids."""
    judged = dataset.qrels()
    topics = dataset.topics()
    qids = [q for q in topics.queries() if q in judged][:limit]
    if not qids:
        raise DataError(f"{dataset.name}: no query has judgments (qrels ids like {sorted(judged)[:3]})")
    return topics.select(qids), qids


def paired_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired t-test over per-query scores; 1.0 when the systems agree on every query.

    >>> paired_pvalue(np.array([0.1, 0.5, 0.9]), np.array([0.1, 0.5, 0.9]))
    1.0
    """
    if len(a) < 2 or np.allclose(a, b):
        return 1.0
    from scipy.stats import ttest_rel

    return float(ttest_rel(a, b).pvalue)


@dataclass
class Report:
    """Results of an :class:`Experiment`: the table, per-query scores, significance and latency."""

    dataset: str
    metrics: list[str]
    baseline: str
    table: pd.DataFrame                      # systems x (metrics + latency), means
    per_query: dict[str, pd.DataFrame]       # system -> per-query metric frame
    pvalues: pd.DataFrame                    # systems x metrics, paired test against the baseline
    wins_losses: pd.DataFrame                # systems x metrics, "W/L" counts against the baseline
    max_p: float = 0.05
    info: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self, digits: int = 4) -> str:
        """The table as Markdown; a † marks a significant difference from the baseline."""
        header = ["system", *self.metrics, "ms/query"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for system, row in self.table.iterrows():
            cells = [str(system).replace("|", "\\|")]
            for m in self.metrics:
                mark = "†" if system != self.baseline and self.pvalues.at[system, m] < self.max_p else ""
                cells.append(f"{row[m]:.{digits}f}{mark}")
            cells.append(f"{row['ms_per_query']:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append(f"\n{self.dataset}; † = paired t-test p < {self.max_p} against {self.baseline!r}.")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


class Experiment:
    """Run several systems on one dataset and compare them with paired significance tests.

    ``systems`` maps names to stages (run on the dataset's topics) or to precomputed Rankings.
    The first system is the baseline unless ``baseline`` names another.
    """

    def __init__(self, systems: Mapping[str, Any], dataset: Any, metrics: Sequence[str] = DEFAULT_METRICS,
                 baseline: str | None = None, max_p: float = 0.05, save_dir: str | Path | None = None,
                 limit: int | None = None):
        if not systems:
            raise ConfigError("an Experiment needs at least one system")
        self.systems, self.dataset, self.metrics = dict(systems), dataset, list(metrics)
        self.baseline = baseline or next(iter(self.systems))
        if self.baseline not in self.systems:
            raise ConfigError(f"baseline {self.baseline!r} is not among the systems {list(self.systems)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"limit must be a positive number of queries, got {limit!r}")
        self.max_p, self.save_dir, self.limit = max_p, Path(save_dir) if save_dir else None, limit

    def run(self) -> Report:
        topics, qids = judged_topics(self.dataset, self.limit)
        per_query, latency = {}, {}
        for name, system in self.systems.items():
            start = time.perf_counter()
            ranking = system.select(qids) if isinstance(system, Ranking) else system(topics)
            latency[name] = 1000 * (time.perf_counter() - start) / max(len(qids), 1)
            if self.save_dir:
                ranking.write_trec(self.save_dir / f"{_slug(name)}.trec", tag=_slug(name))
            per_query[name] = evaluate_per_query(ranking, self.dataset, self.metrics).loc[lambda f: f.index.isin(qids)]
        base = per_query[self.baseline]
        pvalues = pd.DataFrame(index=list(self.systems), columns=self.metrics, dtype=float)
        wins = pd.DataFrame(index=list(self.systems), columns=self.metrics, dtype=object)
        for name, frame in per_query.items():
            for m in self.metrics:
                a, b = frame[m].to_numpy(), base[m].to_numpy()
                pvalues.at[name, m] = paired_pvalue(a, b)
                wins.at[name, m] = f"{int((a > b).sum())}/{int((a < b).sum())}"
        table = pd.DataFrame({name: frame.mean() for name, frame in per_query.items()}).T
        table["ms_per_query"] = pd.Series(latency)
        return Report(self.dataset.name, self.metrics, self.baseline, table, per_query, pvalues, wins, self.max_p,
                      {"queries": len(qids)})


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "system"
