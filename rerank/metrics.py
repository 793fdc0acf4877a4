"""Metric names: the one parser and the one default list that every command and API uses.

A metric is ``NAME[@K][-lN]`` with a ranx NAME, a positive cut-off K and a relevance threshold N
(``ndcg@10``, ``map@1000``, ``recall@100-l2``). Names are checked before any system runs.

>>> parse_metrics("ndcg@10, mrr@10")
['ndcg@10', 'mrr@10']
>>> parse_metrics(["ndcg@0"])
Traceback (most recent call last):
...
rerank.errors.ConfigError: metric 'ndcg@0': the cut-off after '@' must be a positive integer up to 1,000,000,000
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from rerank.errors import ConfigError

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "mrr@10", "recall@100")
"""What ``rerank eval``, ``rerank bench``, :class:`~rerank.evaluate.Experiment` and grids report by default."""

NAMES = ("ndcg", "ndcg_burges", "dcg", "dcg_burges", "map", "mrr", "recall", "precision", "r-precision",
         "hits", "hit_rate", "f1", "bpref")
BINARY = ("map", "mrr", "recall", "precision", "hit_rate", "hits", "r-precision", "bpref", "f1")
"""Measures that count a document as relevant or not (the dataset's relevance threshold applies)."""

MAX_NUMBER = 10**9
"""The largest cut-off or relevance level (ranx computes in 64-bit integers)."""
NO_CUT_OFF = ("bpref", "r-precision")
"""Measures that read the whole run (ranx ignores a cut-off on them)."""


def has_relevant(grades: Mapping[str, int]) -> bool:
    """Whether a query's judgments ``{docid: grade}`` hold a relevant document (a grade above 0): the
    queries a measure is defined for, and that are evaluated (trec_eval would count the others as 0)."""
    return any(grade > 0 for grade in grades.values())


FOREIGN = {"p": "precision", "r": "recall", "rr": "mrr", "recip_rank": "mrr", "ap": "map", "ndcg_cut": "ndcg",
           "map_cut": "map", "success": "hit_rate", "rprec": "r-precision", "r_prec": "r-precision"}
"""Other tools' names (trec_eval, ir_measures, PyTerrier) -> rerank's, for a suggestion."""
_FOREIGN_SHAPE = re.compile(r"(?P<name>[a-z_]+?)(?:[._@](?P<k>\d+))?")
_ASCII_DIGITS = re.compile(r"[0-9]+")
_SHAPE = re.compile(r"(?P<name>[a-z][a-z0-9_-]*?)(?:@(?P<k>[^-]*|-\d+))?(?:-l(?P<level>.*))?")


def parse_metric(metric: object) -> str:
    """``metric`` checked and normalized (lower case, no spaces); a ConfigError names what is wrong."""
    if not isinstance(metric, str) or not metric.strip():
        raise ConfigError(f"a metric is a name such as 'ndcg@10', got {metric!r}")
    text = metric.strip().lower()
    found = _SHAPE.fullmatch(text)
    if found is None or found["name"] not in NAMES:
        name = found["name"] if found else text
        raise ConfigError(f"unknown metric {metric!r} ({name!r}){_suggestion(text)}; known: {', '.join(NAMES)}, "
                          "as NAME@K, e.g. ndcg@10")
    if found["k"] is not None and not (_ASCII_DIGITS.fullmatch(found["k"]) and 0 < int(found["k"]) <= MAX_NUMBER):
        raise ConfigError(f"metric {metric!r}: the cut-off after '@' must be a positive integer up to {MAX_NUMBER:,}")
    if found["k"] is not None and found["name"] in NO_CUT_OFF:
        raise ConfigError(f"metric {metric!r}: {found['name']} reads the whole run and takes no cut-off; "
                          f"write {found['name']}" + (f"-l{found['level']}" if found["level"] else ""))
    if found["level"] is not None and not (_ASCII_DIGITS.fullmatch(found["level"]) and 0 < int(found["level"]) <= MAX_NUMBER):
        raise ConfigError(f"metric {metric!r}: the relevance level after '-l' must be a positive integer up to {MAX_NUMBER:,}")
    return found["name"] + (f"@{int(found['k'])}" if found["k"] else "") + (f"-l{int(found['level'])}" if found["level"] else "")


def _suggestion(text: str) -> str:
    """``; did you mean 'precision@10'?`` for another tool's name of a measure rerank has, else ``""``."""
    found = _FOREIGN_SHAPE.fullmatch(text)
    name = found and FOREIGN.get(found["name"], found["name"] if found["name"] in NAMES else None)
    if not name:
        return ""
    k = f"@{found['k']}" if found["k"] and name not in NO_CUT_OFF else ""
    return f"; did you mean {name + k!r}?"


def parse_metrics(metrics: str | Sequence[str] | None) -> list[str]:
    """A list of checked metric names; a string (or an item of a list) is split at commas and spaces;
    None gives the defaults."""
    if metrics is None:
        return list(DEFAULT_METRICS)
    if isinstance(metrics, str):
        metrics = [m for m in re.split(r"[,\s]+", metrics) if m]
    elif not isinstance(metrics, Sequence):
        raise ConfigError(f"metrics must be a list of names such as ['ndcg@10'], got {type(metrics).__name__}")
    else:  # --metrics "ndcg@10,map": an item is split too; an empty part between commas is no metric
        metrics = [part for m in metrics for part in (re.split(r"[,\s]+", m.strip()) if isinstance(m, str) and m.strip()
                                                      else [m]) if part != ""]
    names = [parse_metric(m) for m in metrics]
    if not names:
        raise ConfigError("no metric given; e.g. ndcg@10")
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        raise ConfigError(f"metrics repeat: {', '.join(repeated)}")
    return names


def ranx_name(metric: str, threshold: int) -> str:
    """The ranx name of ``metric`` under a dataset's relevance threshold (binary measures only)."""
    base = metric.split("@")[0].split("-l")[0]
    if threshold > 1 and base in BINARY and "-l" not in metric:
        return f"{metric}-l{threshold}"
    return metric
