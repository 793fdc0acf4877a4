"""Benchmark grids on bundled data: cells, resuming, and failures reported per cell."""

import gzip
import json

import pytest

from rerank import ConfigError
from rerank.bench import Grid, cell_path, collect, run_grid
from rerank.cli import main

# A closed loopback port: every call of this LLM reranker fails the way a dead server does.
DEAD_LLM = "listwise(backend='openai:http://127.0.0.1:9/v1#gone')"


def _mismatched_beir(folder):
    """A BEIR folder whose qrels name documents that the corpus does not have (other id scheme)."""
    folder.mkdir()
    docs = [{"_id": f"doc-{i}", "text": t} for i, t in enumerate(["cats purr and sleep", "dogs bark at cats", "fish swim"])]
    with gzip.open(folder / "corpus.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs)
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "why do cats purr"}) + "\n")
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t0\t1\n")
    return folder


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    bad = _mismatched_beir(tmp_path_factory.mktemp("data") / "mismatched")
    return Grid.from_dict({
        "grid": {"metrics": ["ndcg@10", "mrr@10", "recall@100"], "limit": 3},
        "datasets": [{"name": "trec-dl-2019", "first": "run"}, "fiqa", {"name": str(bad), "label": "mismatched"}],
        "pipelines": {"BM25": "{first}", "LLM (dead server)": "{first} % 3 >> " + DEAD_LLM, "BM25 top-5": "{first} % 5"},
    }, name="test-grid")


@pytest.fixture(scope="module")
def ran(grid, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, run_grid(grid, out, progress=False)


def test_each_cell_is_kept_as_a_trec_run_with_its_record(ran):
    out, report = ran
    meta = json.loads(cell_path(out, "trec-dl-2019", "BM25").with_suffix(".json").read_text())
    assert meta["status"] == "ok" and meta["queries"] == 3 and len(meta["qids"]) == 3
    assert meta["versions"]["rerank"] and meta["ms_per_query"] > 0
    lines = cell_path(out, "trec-dl-2019", "BM25 top-5").read_text().splitlines()
    assert len(lines) == 3 * 5 and lines[0].split()[1] == "Q0"
    table = report.table("trec-dl-2019")
    assert table.at["BM25", "queries"] == 3 and 0 < table.at["BM25", "ndcg@10"] <= 1
    assert table.at["BM25 top-5", "recall@100"] < table.at["BM25", "recall@100"]  # a real cut-off, really evaluated


def test_failures_are_reported_per_cell_and_the_rest_is_kept(ran):
    _, report = ran
    cells = report.cells
    assert cells["trec-dl-2019", "BM25"].ok and cells["trec-dl-2019", "BM25 top-5"].ok  # the cell after the failure ran
    assert "BackendError" in cells["trec-dl-2019", "LLM (dead server)"].error
    assert "corpus.jsonl" in cells["fiqa", "BM25"].error                     # no bundled corpus
    assert "different ids" in cells["mismatched", "BM25"].error              # qrels/corpus id mismatch
    md = report.to_markdown()
    assert "## Failed cells" in md and "fiqa / BM25" in md and "| error |" in md
    assert report.averages().at["BM25", "datasets"] == 1


def test_an_interrupted_grid_resumes_without_rerunning_done_cells(grid, ran):
    out, _ = ran
    done = cell_path(out, "trec-dl-2019", "BM25").with_suffix(".json")
    lost = cell_path(out, "trec-dl-2019", "BM25 top-5")
    stamp = json.loads(done.read_text())["started"]
    lost.with_suffix(".json").unlink()                                       # as if killed before this cell ended
    report = run_grid(grid, out, progress=False)
    assert json.loads(done.read_text())["started"] == stamp                   # not run again
    assert lost.with_suffix(".json").exists() and report.cells["trec-dl-2019", "BM25 top-5"].ok


def test_changed_settings_rerun_a_cell_and_report_only_shows_missing_cells(grid, ran):
    out, _ = ran
    report = collect(grid, out, limit=2)                                       # nothing saved for limit=2
    assert report.cells["trec-dl-2019", "BM25"].status == "missing"


def test_command_line_runs_a_grid_file_with_limit(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\ndatasets = [{ name = "trec-dl-2020", first = "run" }]\n'
                    '[pipelines]\n"BM25" = "{first}"\n"top 10" = "{first} % 10"\n')
    assert main(["--quiet", "bench", str(grid), "--out", str(tmp_path / "out"), "--limit", "4"]) == 0
    printed = capsys.readouterr().out
    assert "## trec-dl-2020" in printed and "| BM25 | 0." in printed
    assert (tmp_path / "out" / "report.html").exists() and (tmp_path / "out" / "report.md").exists()
    assert json.loads((tmp_path / "out" / "trec-dl-2020" / "top_10.json").read_text())["queries"] == 4


@pytest.mark.parametrize("raw, message", [
    ({"datasets": ["scifact"]}, r"\[pipelines\]"),
    ({"pipelines": {"a": "bm25"}}, "datasets"),
    ({"datasets": ["scifact"], "pipelines": {"a": "bm25"}, "grid": {"baseline": "b"}}, "baseline 'b'"),
    ({"datasets": ["scifact"], "pipelines": {"a": "bm25"}, "grid": {"baseline": ["a"]}}, r"baseline must be a pipeline name \(a string\), got \['a'\]"),
    ({"datasets": ["scifact"], "pipelines": {"a": "bm25"}, "grid": {"baseline": {"a": 1}}}, "baseline must be a pipeline name"),
    ({"datasets": ["scifact"], "pipelines": {"a": "bm25"}, "grid": {"limt": 3}}, "unknown"),
    ({"datasets": ["scifact", "scifact"], "pipelines": {"a": "bm25"}}, "labels repeat"),
    ({"limit": 5, "datasets": ["scifact"], "pipelines": {"a": "bm25"}}, r"unknown top-level keys \['limit'\]"),
    ({"datasets": ["scifact"], "pipelines": {"a": "bm25"}, "grid": {"datasets": ["nfcorpus"]}}, "given twice"),
])
def test_bad_grids_say_what_is_wrong(raw, message):
    with pytest.raises(ConfigError, match=message):
        Grid.from_dict(raw)


def test_a_first_stage_of_several_is_cut_and_fed_as_a_whole(tmp_path):
    """Review helper-66: ``{first}`` was pasted as text, so ``{first} % 2 >> x`` with ``first = "bm25 | run"``
    fused an uncut BM25 with the cut, rescored run."""
    from rerank.expr import build, with_first
    from rerank.runner import Runner, Settings

    g = Grid.from_dict({"datasets": [{"name": "trec-dl-2019", "first": "bm25 | run"}, {"name": "trec-dl-2020", "first": "run('bm25')"}],
                        "pipelines": {"A": "{first} % 2 >> bm25(k1=2)"}})
    assert [g.expression("A", d) for d in g.datasets] == ["(bm25 | run) % 2 >> bm25(k1=2)", "run('bm25') % 2 >> bm25(k1=2)"]
    assert repr(build(with_first("{first} % 2 >> dense", "bm25  # tuned"))) == "BM25() >> Cutoff(2) >> Dense()"  # helper-77: the comment ate the rest
    assert repr(build(g.expression("A", g.datasets[0]))).startswith("(BM25() | RunRetriever(name='bm25')) >> Cutoff(2)")
    cells = Runner(g.pipelines, g.datasets, Settings(), tmp_path).cells()
    assert [c.expression for c in cells] == [g.expression("A", d) for d in g.datasets]


def test_shipped_grids_parse_and_their_pipelines_build():
    from pathlib import Path

    from rerank.expr import build

    files = sorted(Path(__file__).parents[1].glob("pipelines/grid_*.toml"))
    assert {f.stem for f in files} >= {"grid_smoke", "grid_beir", "grid_bright", "grid_trec_dl"}
    for f in files:
        g = Grid.read(f)
        for d in g.datasets:
            for p in g.pipelines:
                build(g.expression(p, d))
    bright = Grid.read(Path(__file__).parents[1] / "pipelines/grid_bright.toml")
    assert len({d.name for d in bright.datasets}) == 12 and any(d.options.get("long") for d in bright.datasets)


@pytest.mark.slow
def test_llm_cells_report_tokens_and_the_valid_answer_rate(tmp_path):
    listwise = "{first} % 4 >> listwise(backend='hf:smollm2', window=4, step=2, max_words=12EXTRA)"
    grid = Grid.from_dict({
        "grid": {"metrics": ["ndcg@10"], "limit": 2},
        "datasets": [{"name": "trec-dl-2019", "first": "run"}],
        "pipelines": {"BM25": "{first}", "constrained": listwise.replace("EXTRA", ""),
                      "free": listwise.replace("EXTRA", ", constrained=False")},
    }, name="valid-answers")
    report = run_grid(grid, tmp_path / "out", progress=False)
    cells = {p: report.cells["trec-dl-2019", p] for p in ("constrained", "free")}
    assert cells["constrained"].valid_rate == 1.0 and cells["free"].valid_rate < 1.0
    assert cells["constrained"].tokens_per_query > 0 and report.cells["trec-dl-2019", "BM25"].valid_rate is None
    assert "| valid answers |" in report.to_markdown() and "| 100% |" in report.to_markdown()


@pytest.mark.parametrize("options, message", [
    (["--queries", "301"], "argument --queries: 301 is more than the 300 judged queries of scifact"),
    (["--llm-queries", "6", "--queries", "5"], "argument --llm-queries: 6 is more than the 5 queries in the slice"),
])
def test_bench_e2rank_refuses_counts_above_what_there_is(options, message):   # helper-78: it cut them to size silently
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, str(root / "pipelines" / "bench_e2rank.py"), *options],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(f"error: {message}"), proc.stderr
