"""The report of a benchmark grid: Markdown for the terminal, one self-contained HTML page.

Per dataset: a table of the metrics (mean over the judged queries each cell ran on), a paired t-test
against the baseline on the queries both ran (``†`` when p < 0.05), per-query wins/losses/ties on
the first metric, latency (ms per query) and LLM tokens per query when a stage called an LLM. Then
the average of each metric over datasets. Failed and missing cells appear in the tables with their
error. The HTML page inlines its CSS and its plots (PNG as base64), so it opens anywhere offline.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rerank.evaluate import paired_pvalue

MAX_P = 0.05


@dataclass
class Cell:
    """One (dataset, pipeline) result: per-query scores when ``status == "ok"``, else the error."""

    dataset: str
    pipeline: str
    expression: str
    status: str                               # "ok", "error" or "missing"
    error: str | None = None
    per_query: pd.DataFrame | None = None     # index qid, one column per metric
    ms_per_query: float | None = None
    tokens_per_query: float | None = None
    valid_rate: float | None = None           # share of parsed LLM answers that needed no repair
    forced_rate: float | None = None          # share whose reasoning ran out of budget and was closed for them

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Comparison:
    """A cell against the baseline on the queries both ran."""

    pvalues: dict[str, float]
    wins: int
    losses: int
    ties: int


@dataclass
class BenchReport:
    name: str
    datasets: list[str]
    pipelines: list[str]
    metrics: list[str]
    baseline: str
    cells: dict[tuple[str, str], Cell]
    info: dict[str, Any] = field(default_factory=dict)

    # -- numbers ------------------------------------------------------------------------------
    def table(self, dataset: str) -> pd.DataFrame:
        """Pipelines x (metrics, ms_per_query, tokens_per_query, valid_rate, queries); NaN for failed cells."""
        rows = {}
        for p in self.pipelines:
            c = self.cells[dataset, p]
            means = c.per_query.mean() if c.ok else pd.Series(np.nan, index=self.metrics)
            rows[p] = {**{m: float(means[m]) for m in self.metrics}, "ms_per_query": c.ms_per_query,
                       "tokens_per_query": c.tokens_per_query, "valid_rate": c.valid_rate,
                       "queries": len(c.per_query) if c.ok else 0}
        return pd.DataFrame(rows).T.astype(float)

    def compare(self, dataset: str, pipeline: str) -> Comparison | None:
        """Paired t-test and wins/losses of ``pipeline`` against the baseline (None if either failed)."""
        base, cell = self.cells[dataset, self.baseline], self.cells[dataset, pipeline]
        if not (base.ok and cell.ok) or pipeline == self.baseline:
            return None
        common = base.per_query.index.intersection(cell.per_query.index)
        if len(common) == 0:
            return None
        a, b = cell.per_query.loc[common], base.per_query.loc[common]
        pvalues = {m: paired_pvalue(a[m].to_numpy(), b[m].to_numpy()) for m in self.metrics}
        first = self.metrics[0]
        diff = a[first].to_numpy() - b[first].to_numpy()
        return Comparison(pvalues, int((diff > 1e-12).sum()), int((diff < -1e-12).sum()), int((abs(diff) <= 1e-12).sum()))

    def averages(self) -> pd.DataFrame:
        """Mean over datasets of each metric and of ms/query; ``datasets`` counts the cells that succeeded."""
        rows = {}
        for p in self.pipelines:
            tables = [self.table(d).loc[p] for d in self.datasets if self.cells[d, p].ok]
            frame = pd.DataFrame(tables)
            rows[p] = {**{m: frame[m].mean() if len(frame) else np.nan for m in [*self.metrics, "ms_per_query"]},
                       "datasets": len(frame)}
        return pd.DataFrame(rows).T.astype(float)

    def errors(self) -> list[Cell]:
        return [c for c in self.cells.values() if not c.ok]

    # -- Markdown ------------------------------------------------------------------------------
    def to_markdown(self, digits: int = 4) -> str:
        parts = [f"# {self.name}", ""]
        if self.info.get("limit"):
            parts += [f"First {self.info['limit']} judged queries per dataset.", ""]
        for d in self.datasets:
            parts += [f"## {d}", "", _markdown(self._dataset_rows(d, digits)), ""]
        parts += [f"## Average over {len(self.datasets)} datasets", "", _markdown(self._average_rows(digits)), ""]
        parts.append(f"† paired t-test p < {MAX_P} against {self.baseline!r} on the queries both ran; "
                     f"W/L/T: per-query wins/losses/ties on {self.metrics[0]}.")
        if self.errors():
            parts += ["", "## Failed cells", ""] + [f"- {c.dataset} / {c.pipeline}: {c.error}" for c in self.errors()]
        return "\n".join(parts)

    def _dataset_rows(self, dataset: str, digits: int) -> list[list[str]]:
        table = self.table(dataset)
        llm = table["tokens_per_query"].notna().any()
        header = ["pipeline", *self.metrics, f"W/L/T {self.metrics[0]}", "ms/query",
                  *(["tokens/query", "valid answers"] if llm else []), "queries"]
        rows = [header]
        for p in self.pipelines:
            cell = self.cells[dataset, p]
            if not cell.ok:
                rows.append([p, *[cell.status] * len(self.metrics), "", "", *(["", ""] if llm else []), ""])
                continue
            cmp = self.compare(dataset, p)
            values = []
            for m in self.metrics:
                mark = "†" if cmp is not None and cmp.pvalues[m] < MAX_P else ""
                values.append(f"{table.at[p, m]:.{digits}f}{mark}")
            wlt = f"{cmp.wins}/{cmp.losses}/{cmp.ties}" if cmp else ("baseline" if p == self.baseline else "")
            forced = f" ({_percent(cell.forced_rate)} forced)" if cell.forced_rate else ""
            tokens = [_num(table.at[p, "tokens_per_query"], 0), _percent(table.at[p, "valid_rate"]) + forced] if llm else []
            rows.append([p, *values, wlt, _num(cell.ms_per_query, 1), *tokens, str(int(table.at[p, "queries"]))])
        return rows

    def _average_rows(self, digits: int) -> list[list[str]]:
        avg = self.averages()
        rows = [["pipeline", *self.metrics, "ms/query", "datasets"]]
        for p in self.pipelines:
            rows.append([p, *[_num(avg.at[p, m], digits) for m in self.metrics], _num(avg.at[p, "ms_per_query"], 1),
                         f"{int(avg.at[p, 'datasets'])}/{len(self.datasets)}"])
        return rows

    # -- HTML ----------------------------------------------------------------------------------
    def to_html(self) -> str:
        esc = html.escape
        body = [f"<h1>{esc(self.name)}</h1>",
                f"<p class=note>Baseline: <b>{esc(self.baseline)}</b>. † paired t-test p &lt; {MAX_P} on the queries both "
                f"ran; W/L/T: per-query wins/losses/ties on {esc(self.metrics[0])}."
                + (f" First {self.info['limit']} judged queries per dataset." if self.info.get("limit") else "") + "</p>"]
        body.append(f"<h2>Average over {len(self.datasets)} datasets</h2>" + _html_table(self._average_rows(4), "averages"))
        body.append(_figure(self._plot_per_dataset(), f"{self.metrics[0]} per dataset"))
        body.append(_figure(self._plot_tradeoff(), f"average {self.metrics[0]} against latency"))
        for d in self.datasets:
            body.append(f"<h2>{esc(d)}</h2>" + _html_table(self._dataset_rows(d, 4), "dataset"))
            exprs = "".join(f"<li><b>{esc(p)}</b>: <code>{esc(self.cells[d, p].expression)}</code></li>" for p in self.pipelines)
            body.append(f"<details><summary>pipelines</summary><ul>{exprs}</ul></details>")
        if self.errors():
            items = "".join(f"<li><b>{esc(c.dataset)} / {esc(c.pipeline)}</b> ({c.status}): {esc(c.error or '')}</li>"
                            for c in self.errors())
            body.append(f"<h2>Failed cells</h2><ul class=errors>{items}</ul>")
        return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{esc(self.name)}</title>"
                f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")

    def _plot_per_dataset(self) -> str | None:
        first = self.metrics[0]
        values = np.array([[self.table(d).at[p, first] for d in self.datasets] for p in self.pipelines], dtype=float)
        if np.isnan(values).all():
            return None
        fig, ax = _subplots(max(6, 1.4 * len(self.datasets) + 2), 3.6)
        width = 0.8 / len(self.pipelines)
        x = np.arange(len(self.datasets))
        for i, p in enumerate(self.pipelines):
            ax.bar(x + i * width - 0.4 + width / 2, np.nan_to_num(values[i]), width, label=p)
        ax.set_xticks(x, self.datasets, rotation=20, ha="right")
        ax.set_ylabel(first)
        ax.legend(fontsize=8)
        return _png(fig)

    def _plot_tradeoff(self) -> str | None:
        avg = self.averages().dropna(subset=[self.metrics[0], "ms_per_query"])
        if avg.empty:
            return None
        fig, ax = _subplots(6, 3.6)
        for p, row in avg.iterrows():
            ax.scatter(max(row["ms_per_query"], 1e-3), row[self.metrics[0]], s=40)
            ax.annotate(str(p), (max(row["ms_per_query"], 1e-3), row[self.metrics[0]]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        ax.set_xscale("log")
        ax.margins(x=0.35, y=0.15)  # room for the labels
        ax.set_xlabel("ms per query (log scale)")
        ax.set_ylabel(f"average {self.metrics[0]}")
        return _png(fig)

    # -- files -----------------------------------------------------------------------------------
    def write(self, folder: str | Path) -> None:
        """Write ``report.md`` and ``report.html`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(self.to_markdown() + "\n", encoding="utf-8")
        (folder / "report.html").write_text(self.to_html(), encoding="utf-8")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:72rem;color:#1d1d1f;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}th{background:#f0f2f5}
td:first-child,th:first-child{text-align:left}td.failed{color:#a40000;background:#fff0f0;text-align:center}
tr:nth-child(even) td{background:#fafafa}.note{color:#555}figure{margin:1rem 0}figcaption{color:#555;font-size:.9rem}
img{max-width:100%}ul.errors li{color:#a40000}code{background:#f4f4f4;padding:0 .2rem}
"""


def _markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


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


def _num(value: float | None, digits: int) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.0%}"
