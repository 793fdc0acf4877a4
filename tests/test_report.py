"""The benchmark report: Markdown tables, and a self-contained HTML page rendered by headless Chromium."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from rerank.bench import Grid, run_grid

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    grid = Grid.from_dict({
        "grid": {"limit": 6, "baseline": "BM25"},
        "datasets": [{"name": "trec-dl-2019", "first": "run"}, {"name": "trec-dl-2020", "first": "run"}, "fiqa"],
        "pipelines": {"BM25": "{first}", "BM25 top-10": "{first} % 10", "BM25 top-3": "{first} % 3"},
    }, name="report-test")
    out = tmp_path_factory.mktemp("report")
    return out, run_grid(grid, out, progress=False)


def test_markdown_has_per_dataset_tables_averages_significance_and_wins(report):
    _, rep = report
    md = rep.to_markdown()
    for heading in ("## trec-dl-2019", "## trec-dl-2020", "## fiqa", "## Average over 3 datasets", "## Failed cells"):
        assert heading in md
    assert "| system | ndcg@10 | mrr@10 | recall@100 | W/L/T ndcg@10 | ms/query | load s | queries |" in md
    assert re.search(r"\| BM25 top-3 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+† \|", md)   # recall@100 of a top-3 cut: significant
    assert "| BM25 | " in md and "baseline" in md and "| 2/3 |" in md                   # averaged over 2 of 3 datasets
    assert "(none on fiqa, where the baseline has no result)" in md                  # no † there, and the legend says why
    cmp = rep.compare("trec-dl-2019", "BM25 top-10")
    assert cmp.wins == cmp.losses == 0 and cmp.ties == 6                             # same top 10: nDCG@10 unchanged
    assert rep.averages().at["BM25", "ndcg@10"] == pytest.approx(
        np.mean([rep.table(d).at["BM25", "ndcg@10"] for d in ("trec-dl-2019", "trec-dl-2020")]))


def test_a_dataset_or_system_not_in_the_report_is_named(report):
    """review helper-90: compare() of an unknown system returned None, as for a failed cell, and table()
    of an unknown dataset was a raw KeyError."""
    from rerank.errors import ConfigError

    _, rep = report
    with pytest.raises(ConfigError, match=r"no system 'BM25 top-5' in this report; systems: 'BM25', 'BM25 top-10'"):
        rep.compare("trec-dl-2019", "BM25 top-5")
    for call in (lambda: rep.table("trec-dl-2021"), lambda: rep.compare("trec-dl-2021", "BM25 top-3")):
        with pytest.raises(ConfigError, match=r"no dataset 'trec-dl-2021' in this report; name one of the datasets 'trec-dl-2019'"):
            call()
    with pytest.raises(ConfigError, match="name one of the datasets"):
        rep.pvalues()
    assert rep.compare("fiqa", "BM25 top-3") is None   # a known system without a baseline result


def test_html_is_self_contained(report):
    out, _ = report
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert page.count("data:image/png;base64,") == 2
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", page)             # nothing fetched from outside
    assert (out / "report.md").read_text().startswith("# report-test")


def _browser():
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("no headless Chromium in CI: run .ci/install_browser.sh before the tests")
        pytest.skip("chromium is not installed (bash .ci/install_browser.sh); CI fails instead of skipping")
    return found


def _chromium(browser, tmp_path, *args):
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def test_page_renders_in_headless_chromium(report, tmp_path):
    from matplotlib.image import imread

    browser = _browser()
    out, _ = report
    url = (out / "report.html").resolve().as_uri()
    dom = _chromium(browser, tmp_path, "--dump-dom", url).stdout
    assert dom.count("<table") == 4 and 'class="averages"' in dom and "trec-dl-2020" in dom
    assert dom.count("data:image/png;base64,") == 2 and "fiqa / BM25" in dom
    shot = tmp_path / "page.png"
    _chromium(browser, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars", url)
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 0.05 and (pixels < 0.5).mean() > 0.005                 # text, tables and plots, not blank


def test_system_names_with_table_and_math_characters_stay_literal(tmp_path):
    """A '|' in a name shifted every Markdown column; '$\\x$' crashed matplotlib; a long name overflowed file names."""
    from rerank import Experiment
    from rerank.data import load

    long_name = "A" * 300
    names = {"a|b": "bm25", "price $\\x$": "bm25(k1=1.2)", "_hidden": "bm25(b=0.5)", long_name: "bm25(k1=0.8)"}
    report = Experiment(names, load("scifact"), ["ndcg@10"], limit=3, save_dir=tmp_path / "runs").run()
    md = report.to_markdown()
    cells = [len(re.findall(r"(?<!\\)\|", line)) for line in md.splitlines() if line.startswith("| ")]
    assert "| a\\|b | " in md and len(set(cells)) == 1   # every row has as many cells as the header
    report.write(tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text()
    assert "price $\\x$" in page and page.count("data:image/png;base64,") >= 1
    assert max(len(p.name) for p in (tmp_path / "runs").rglob("*")) < 200


def test_ms_per_query_of_a_one_query_run_is_marked_as_timing_the_loading_too():
    """With one query there is none to warm up with: its ms/query includes loading, and the table said
    'after one warm-up query' (review helper-87)."""
    from rerank import Experiment
    from rerank.data import load

    systems, scifact = {"BM25": "bm25", "BM25 top 5": "bm25 % 5"}, load("scifact")
    one, two = (Experiment(systems, scifact, ["ndcg@10"], limit=n).run() for n in (1, 2))
    assert not any(c.warmed_up for c in one.cells.values()) and all(c.warmed_up for c in two.cells.values())
    assert re.search(r"\| BM25 \| [0-9.]+ \| baseline \| [0-9.]+\* \|", one.to_markdown())
    assert "(* none: one query, loading timed)" in one.to_markdown() and "*" not in two.to_markdown()
    assert one.to_json()["datasets"]["scifact"]["BM25"]["warmed_up"] is False
