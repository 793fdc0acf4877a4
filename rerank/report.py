"""The one report of an experiment: Markdown for the terminal, a self-contained HTML page, and JSON.

Per dataset: a table of the metrics (mean over the judged queries each cell ran on), a paired test
against the baseline on the queries both ran (``†`` when the p-value, corrected over the table's
comparisons when a correction is chosen, is below ``max_p``), per-query wins/losses/ties on the first
metric, latency (ms per query, after a warm-up query) and load time, and for LLM stages tokens per
query, the share of answers that needed no repair and call-cache hits in the timed queries. Then the
average of each metric over datasets. Failed and missing cells appear with their error. The HTML
page inlines its CSS and its plots (PNG as base64), so it opens anywhere offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rerank import significance
from rerank.errors import ConfigError
from rerank.io import atomic_file


@dataclass
class CellResult:
    """One (dataset, system) result: per-query scores when ``status == "ok"``, else the error."""

    dataset: str
    system: str
    expression: str
    status: str                               # "ok", "error" or "missing"
    error: str | None = None
    per_query: pd.DataFrame | None = None     # index qid, one column per metric
    ms_per_query: float | None = None
    load_s: float | None = None
    usage: dict[str, int] | None = None       # LLM usage of the timed queries (rerank.metering.Usage)
    timed_queries: int = 0
    prefix: str | None = None                 # the shared prefix this system started from
    warmed_up: bool = True                    # False: no query was left to warm up with (one query), so
                                              # ms_per_query includes loading models on first use

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def tokens_per_query(self) -> float | None:
        if not self.usage or not self.usage.get("calls") or self.per_query is None:
            return None
        return (self.usage["prompt_tokens"] + self.usage["completion_tokens"]) / max(self.timed_queries, 1)

    @property
    def valid_rate(self) -> float | None:
        """Share of parsed LLM answers that needed no repair."""
        return self.usage["valid"] / self.usage["answers"] if self.usage and self.usage.get("answers") else None

    @property
    def forced_rate(self) -> float | None:
        """Share of parsed LLM answers whose reasoning ran out of budget and was closed for them."""
        return self.usage.get("forced", 0) / self.usage["answers"] if self.usage and self.usage.get("answers") else None

    @property
    def cache_hit_rate(self) -> float | None:
        """Share of the timed queries' LLM calls answered from the call cache."""
        if not self.usage:
            return None
        looked = self.usage.get("cache_hits", 0) + self.usage.get("cache_misses", 0)
        return self.usage.get("cache_hits", 0) / looked if looked else None


@dataclass
class Comparison:
    """A cell against the baseline on the queries both ran."""

    pvalues: dict[str, float]                 # corrected when the report has a correction
    wins: int
    losses: int
    ties: int


@dataclass
class Report:
    name: str
    datasets: list[str]
    systems: list[str]
    metrics: list[str]
    baseline: str
    cells: dict[tuple[str, str], CellResult]
    test: str = "student"
    correction: str | None = None
    max_p: float = 0.05
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        significance.check(self.test, self.correction)
        self._comparisons: dict[str, dict[str, Comparison]] = {}

    # -- numbers ------------------------------------------------------------------------------
    def table(self, dataset: str | None = None) -> pd.DataFrame:
        """Systems x (metrics, ms_per_query, load_s, tokens_per_query, valid_rate, queries); NaN for failed cells."""
        dataset = self._dataset(dataset)
        rows = {}
        for p in self.systems:
            c = self.cells[dataset, p]
            means = c.per_query.mean(skipna=False) if c.ok else pd.Series(np.nan, index=self.metrics)
            rows[p] = {**{m: float(means[m]) for m in self.metrics}, "ms_per_query": c.ms_per_query,
                       "load_s": c.load_s, "tokens_per_query": c.tokens_per_query, "valid_rate": c.valid_rate,
                       "cache_hit_rate": c.cache_hit_rate, "queries": len(c.per_query) if c.ok else 0}
        return pd.DataFrame(rows).T.astype(float)

    def pvalues(self, dataset: str | None = None) -> pd.DataFrame:
        """Systems x metrics: the (corrected) p-value against the baseline; NaN for the baseline and failed cells."""
        dataset = self._dataset(dataset)
        frame = pd.DataFrame(np.nan, index=self.systems, columns=self.metrics)
        for p, cmp in self._compare_all(dataset).items():
            frame.loc[p] = [cmp.pvalues[m] for m in self.metrics]
        return frame

    def compare(self, dataset: str, system: str) -> Comparison | None:
        """The test and wins/losses/ties of ``system`` against the baseline (None if either failed)."""
        if system not in self.systems:
            raise ConfigError(f"no system {system!r} in this report; systems: {', '.join(map(repr, self.systems))}")
        return self._compare_all(self._dataset(dataset)).get(system)

    def _compare_all(self, dataset: str) -> dict[str, Comparison]:
        if dataset in self._comparisons:
            return self._comparisons[dataset]
        base = self.cells[dataset, self.baseline]
        raw: dict[str, tuple[dict[str, float], tuple[int, int, int]]] = {}
        for p in self.systems:
            cell = self.cells[dataset, p]
            if p == self.baseline or not (base.ok and cell.ok):
                continue
            common = base.per_query.index.intersection(cell.per_query.index)
            if len(common) == 0:
                continue
            a, b = cell.per_query.loc[common], base.per_query.loc[common]
            pvals = {m: significance.pvalue(a[m].to_numpy(), b[m].to_numpy(), self.test) for m in self.metrics}
            raw[p] = (pvals, significance.wins_losses_ties(a[self.metrics[0]].to_numpy(), b[self.metrics[0]].to_numpy()))
        flat = [(p, m) for p in raw for m in self.metrics]   # the family a correction covers: one table
        adjusted = dict(zip(flat, significance.correct([raw[p][0][m] for p, m in flat], self.correction)))
        out = {p: Comparison({m: adjusted[p, m] for m in self.metrics}, *wlt) for p, (_, wlt) in raw.items()}
        self._comparisons[dataset] = out
        return out

    def averages(self) -> pd.DataFrame:
        """Mean over datasets of each metric and of ms/query; ``datasets`` counts the cells that succeeded."""
        rows = {}
        for p in self.systems:
            tables = [self.table(d).loc[p] for d in self.datasets if self.cells[d, p].ok]
            frame = pd.DataFrame(tables)
            rows[p] = {**{m: frame[m].mean(skipna=False) if len(frame) else np.nan for m in [*self.metrics, "ms_per_query"]},
                       "datasets": len(frame)}
        return pd.DataFrame(rows).T.astype(float)

    def errors(self) -> list[CellResult]:
        return [c for c in self.cells.values() if not c.ok]

    def _dataset(self, dataset: str | None) -> str:
        if dataset is None and len(self.datasets) == 1:
            return self.datasets[0]
        if dataset not in self.datasets:
            raise ConfigError(f"{'no dataset ' + repr(dataset) + ' in this report; ' if dataset is not None else ''}"
                              f"name one of the datasets {', '.join(map(repr, self.datasets))}")
        return dataset

    def _legend(self) -> str:
        test = "paired t-test" if self.test == "student" else "Fisher's randomization test"
        fix = f", {self.correction}-corrected over each table's comparisons" if self.correction else ""
        failed = [d for d in self.datasets if (d, self.baseline) in self.cells and not self.cells[d, self.baseline].ok]
        fix += f" (none on {', '.join(failed)}, where the baseline has no result)" if failed else ""
        return (f"† {test} p < {self.max_p}{fix}, against {self.baseline!r} on the queries both ran; "
                f"W/L/T: per-query wins/losses/ties on {self.metrics[0]}; ms/query after one warm-up query"
                f"{'' if all(c.warmed_up for c in self.cells.values()) else ' (* none: one query, loading timed)'}; "
                "load s: building the pipeline (indexes; models that load on first use count in the warm-up)"
                f"{self._relevant()}.")

    def _relevant(self) -> str:
        """Which grades the binary measures (MAP, MRR, recall, ...) count as relevant, per dataset."""
        by_grade: dict[int, list[str]] = {}
        for d, grade in self.info.get("rel_threshold", {}).items():
            if grade is not None:
                by_grade.setdefault(grade, []).append(d)
        if not by_grade:
            return ""
        parts = [f"grade >= {g}" + (f" on {', '.join(ds)}" if len(by_grade) > 1 else "") for g, ds in sorted(by_grade.items())]
        own = "; a measure ending in -lN counts grade >= N" if any("-l" in m for m in self.metrics) else ""
        return f"; binary measures count as relevant {'; '.join(parts)} (nDCG uses the grades){own}"

    # -- Markdown ------------------------------------------------------------------------------
    def to_markdown(self, digits: int = 4) -> str:
        parts = [f"# {self.name}", ""]
        if self.info.get("limit"):
            parts += [f"First {self.info['limit']} judged queries per dataset.", ""]
        for d in self.datasets:
            parts += [f"## {d}", "", _markdown(self._dataset_rows(d, digits)), ""]
        if len(self.datasets) > 1:
            parts += [f"## Average over {len(self.datasets)} datasets", "", _markdown(self._average_rows(digits)), ""]
        parts.append(self._legend())
        if self.errors():
            parts += ["", "## Failed cells", ""] + [f"- {c.dataset} / {c.system}: {c.error}" for c in self.errors()]
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.to_markdown()

    def _dataset_rows(self, dataset: str, digits: int) -> list[list[str]]:
        table = self.table(dataset)
        llm = table["tokens_per_query"].notna().any() or table["cache_hit_rate"].notna().any()
        header = ["system", *self.metrics, f"W/L/T {self.metrics[0]}", "ms/query", "load s",
                  *(["tokens/query", "valid answers", "cache hits"] if llm else []), "queries"]
        rows = [header]
        for p in self.systems:
            cell = self.cells[dataset, p]
            if not cell.ok:
                rows.append([p, *[cell.status] * len(self.metrics), "", "", "", *(["", "", ""] if llm else []), ""])
                continue
            cmp = self.compare(dataset, p)
            values = []
            for m in self.metrics:
                mark = "†" if cmp is not None and cmp.pvalues[m] < self.max_p else ""
                values.append(f"{table.at[p, m]:.{digits}f}{mark}")
            wlt = f"{cmp.wins}/{cmp.losses}/{cmp.ties}" if cmp else ("baseline" if p == self.baseline else "")
            forced = f" ({_percent(cell.forced_rate)} forced)" if cell.forced_rate else ""
            extra = ([_num(table.at[p, "tokens_per_query"], 0), _percent(table.at[p, "valid_rate"]) + forced,
                      _percent(table.at[p, "cache_hit_rate"])] if llm else [])
            ms = _num(cell.ms_per_query, 1) + ("" if cell.warmed_up else "*")
            rows.append([p, *values, wlt, ms, _num(cell.load_s, 1), *extra,
                         str(int(table.at[p, "queries"]))])
        return rows

    def _average_rows(self, digits: int) -> list[list[str]]:
        avg = self.averages()
        rows = [["system", *self.metrics, "ms/query", "datasets"]]
        for p in self.systems:
            rows.append([p, *[_num(avg.at[p, m], digits) for m in self.metrics], _num(avg.at[p, "ms_per_query"], 1),
                         f"{int(avg.at[p, 'datasets'])}/{len(self.datasets)}"])
        return rows

    # -- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Everything in the tables as plain values (NaN as null), per dataset and system."""
        out: dict[str, Any] = {"name": self.name, "baseline": self.baseline, "metrics": self.metrics, "test": self.test,
                               "correction": self.correction, "max_p": self.max_p, "info": self.info, "datasets": {}}
        for d in self.datasets:
            table = self.table(d)
            systems = {}
            for p in self.systems:
                cell, cmp = self.cells[d, p], self.compare(d, p)
                systems[p] = {"status": cell.status, "error": cell.error, "expression": cell.expression,
                              "means": {m: _plain(table.at[p, m]) for m in self.metrics},
                              "pvalues": cmp.pvalues if cmp else None,
                              "wins_losses_ties": [cmp.wins, cmp.losses, cmp.ties] if cmp else None,
                              "ms_per_query": cell.ms_per_query, "warmed_up": cell.warmed_up, "load_s": cell.load_s, "usage": cell.usage,
                              "prefix": cell.prefix, "queries": int(table.at[p, "queries"]),
                              "per_query": cell.per_query.to_dict() if cell.ok else None}
            out["datasets"][d] = systems
        avg = self.averages()
        out["averages"] = {p: {k: _plain(avg.at[p, k]) for k in avg.columns} for p in self.systems}
        return _json_safe(out)

    # -- HTML ----------------------------------------------------------------------------------
    def to_html(self) -> str:
        esc = html.escape
        body = [f"<h1>{esc(self.name)}</h1>",
                f"<p class=note>Baseline: <b>{esc(self.baseline)}</b>. {esc(self._legend())}"
                + (f" First {self.info['limit']} judged queries per dataset." if self.info.get("limit") else "") + "</p>"]
        body.append(f"<h2>Average over {len(self.datasets)} datasets</h2>" + _html_table(self._average_rows(4), "averages"))
        body.append(_figure(self._plot_per_dataset(), f"{self.metrics[0]} per dataset"))
        body.append(_figure(self._plot_tradeoff(), f"average {self.metrics[0]} against latency"))
        for d in self.datasets:
            body.append(f"<h2>{esc(d)}</h2>" + _html_table(self._dataset_rows(d, 4), "dataset"))
            exprs = "".join(f"<li><b>{esc(p)}</b>: <code>{esc(self.cells[d, p].expression)}</code></li>" for p in self.systems)
            body.append(f"<details><summary>systems</summary><ul>{exprs}</ul></details>")
        if self.errors():
            items = "".join(f"<li><b>{esc(c.dataset)} / {esc(c.system)}</b> ({c.status}): {esc(c.error or '')}</li>"
                            for c in self.errors())
            body.append(f"<h2>Failed cells</h2><ul class=errors>{items}</ul>")
        return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{esc(self.name)}</title>"
                f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")

    def _plot_per_dataset(self) -> str | None:
        first = self.metrics[0]
        values = np.array([[self.table(d).at[p, first] for d in self.datasets] for p in self.systems], dtype=float)
        if np.isnan(values).all():
            return None
        fig, ax = _subplots(max(6, 1.4 * len(self.datasets) + 2), 3.6)
        width = 0.8 / len(self.systems)
        x = np.arange(len(self.datasets))
        for i, p in enumerate(self.systems):
            ax.bar(x + i * width - 0.4 + width / 2, np.nan_to_num(values[i]), width, label=_literal(p))
        ax.set_xticks(x, [_literal(d) for d in self.datasets], rotation=20, ha="right")
        ax.set_ylabel(first)
        ax.legend(fontsize=8)
        return _png(fig)

    def _plot_tradeoff(self) -> str | None:
        avg = self.averages().dropna(subset=[self.metrics[0], "ms_per_query"])
        if avg.empty:
            return None
        fig, ax = _subplots(6, 3.6)
        for p, row in avg.iterrows():
            partial = f" ({int(row['datasets'])}/{len(self.datasets)})" if row["datasets"] < len(self.datasets) else ""
            ax.scatter(max(row["ms_per_query"], 1e-3), row[self.metrics[0]], s=40, marker="o" if not partial else "x")
            ax.annotate(_literal(str(p)) + partial, (max(row["ms_per_query"], 1e-3), row[self.metrics[0]]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")  # an average over fewer datasets says so
        ax.set_xscale("log")
        ax.margins(x=0.35, y=0.15)  # room for the labels
        ax.set_xlabel("ms per query (log scale)")
        ax.set_ylabel(f"average {self.metrics[0]}")
        return _png(fig)

    # -- files -----------------------------------------------------------------------------------
    def write(self, folder: str | Path) -> None:
        """Write ``report.md``, ``report.html`` and ``report.json`` into ``folder``, each whole or not at
        all (two runs writing one folder never interleave a file)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        texts = {"report.md": self.to_markdown() + "\n", "report.html": self.to_html(),
                 "report.json": json.dumps(self.to_json(), indent=1, default=_plain, allow_nan=False)}
        for name, text in texts.items():
            with atomic_file(folder / name) as tmp:
                tmp.write_text(text, encoding="utf-8")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:72rem;color:#1d1d1f;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}th{background:#f0f2f5}
td:first-child,th:first-child{text-align:left}td.failed{color:#a40000;background:#fff0f0;text-align:center}
tr:nth-child(even) td{background:#fafafa}.note{color:#555}figure{margin:1rem 0}figcaption{color:#555;font-size:.9rem}
img{max-width:100%}ul.errors li{color:#a40000}code{background:#f4f4f4;padding:0 .2rem}
"""


def _literal(name: str, width: int = 40) -> str:
    """``name`` as matplotlib should print it: ``$`` is not math, a leading ``_`` does not hide a
    legend entry, and a long name is cut to ``width`` characters (the tables keep it whole)."""
    name = (name if len(name) <= width else name[: width - 1] + "…").replace("$", r"\$")
    return " " + name if name.startswith("_") else name


def _markdown(rows: list[list[str]]) -> str:
    rows = [[_md_cell(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def _md_cell(text: str) -> str:
    """A table cell's text: a ``|`` or a line break in a system name would start a new cell or row."""
    return " ".join(str(text).replace("\\", "\\\\").replace("|", "\\|").split())


def _html_table(rows: list[list[str]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in rows[0])
    body = []
    for r in rows[1:]:
        cells = "".join(f"<td class=failed>{html.escape(v)}</td>" if v in ("error", "missing") else f"<td>{html.escape(v)}</td>"
                        for v in r)
        body.append(f"<tr>{cells}</tr>")
    return f"<table class={cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(png: str | None, caption: str) -> str:
    if png is None:
        return f"<p class=note>No plot of {html.escape(caption)}: no cell succeeded.</p>"
    return f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{png}'><figcaption>{html.escape(caption)}</figcaption></figure>"


def _subplots(width: float, height: float) -> tuple[Any, Any]:
    """A figure outside pyplot's global state (no GUI backend, nothing to close)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _json_safe(value: Any) -> Any:
    """``value`` with every number in it made JSON-safe (:func:`_plain`), through dicts and lists."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return _plain(value)


def _plain(value: Any) -> Any:
    """A JSON-safe number: NaN and infinities become None (JSON has none), numpy scalars become Python ones."""
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _num(value: float | None, digits: int) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.0%}"
