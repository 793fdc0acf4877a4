"""Pipeline expressions and the command line, on real bundled data."""

import subprocess
import sys

import pytest

from rerank import ConfigError, Cutoff, Fuse, Pipeline
from rerank.cli import main
from rerank.expr import build
from rerank.retrievers.run import RunRetriever


def test_expressions_build_the_same_stages_as_python():
    p = build("bm25(k1=1.2, b=0.75) % 100 >> dense")
    assert isinstance(p, Pipeline) and p.stages[1] == Cutoff(100)
    assert repr(p.stages[0]) == "BM25(k1=1.2, b=0.75)"
    assert isinstance(build("bm25 | dense"), Fuse)
    assert repr(build("(bm25 | dense) % 10")) == "(BM25() | Dense()) >> Cutoff(10)"


@pytest.mark.parametrize("expr, message", [
    ("bm25 >>", "cannot parse"),
    ("bm26", "unknown stage 'bm26'"),
    ("bm25 % 'x'", "integer"),
    ("bm25(k1=open('x'))", "literal"),
    ("bm25(nope=1)", "bad arguments"),
    ("", "empty"),
])
def test_bad_expressions_say_what_is_wrong(expr, message):
    with pytest.raises(ConfigError, match=message):
        build(expr)


def test_run_stage_binds_to_the_dataset():
    from rerank.data import load

    stage = build("run('bm25') % 5", load("trec-dl-2019"))
    assert isinstance(stage.stages[0], RunRetriever)
    assert len(stage(load("trec-dl-2019").topics())) == 43 * 5


def test_cli_eval_prints_a_table(capsys, tmp_path):
    assert main(["--quiet", "eval", "--dataset", "trec-dl-2019", "--pipeline", "BM25=run", "--pipeline", "run % 10",
                 "--metrics", "ndcg@10", "--save-runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| BM25 | 0.5058 |" in out and "run % 10" in out
    assert (tmp_path / "trec-dl-2019" / "BM25.trec").exists() and (tmp_path / "report.json").exists()


def test_cli_search_and_list(capsys):
    assert main(["--quiet", "search", "--dataset", "scifact", "--pipeline", "bm25 % 3", "-k", "2", "cells"]) == 0
    assert main(["list", "datasets"]) == 0
    out = capsys.readouterr().out
    assert "scifact" in out and "trec-dl-2019" in out
    assert main(["list", "backends"]) == 0
    assert "backends: fake (for tests), hf, " in capsys.readouterr().out  # a test stand-in, not a model (helper-87)
    assert main(["--quiet", "search", "--dataset", "scifact", "--pipeline", "bm25 % 3 >> yes-no(backend='fake')", "cells"]) == 2
    assert "FakeBackend (a stand-in for tests) was built without a score function" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["eval", "--dataset", "nosuch", "--pipeline", "bm25"], "unknown dataset 'nosuch'"),
    (["eval", "--dataset", "scifact", "--pipeline", "bm25 >> nosuch"], "unknown stage"),
    (["eval", "--dataset", "fiqa", "--pipeline", "bm25"], "corpus.jsonl"),
    (["eval", "--dataset", "scifact"], "at least one --pipeline"),
])
def test_cli_errors_are_one_line_and_exit_2(args, message):
    proc = subprocess.run([sys.executable, "-m", "rerank.cli", "--quiet", *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_quiet_cli_shows_no_progress_bars_of_the_model_libraries_either():
    proc = subprocess.run([sys.executable, "-m", "rerank.cli", "--quiet", "search", "--dataset", "cranfield", "--pipeline",
                           "bm25 % 3 >> biencoder", "boundary layer"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Loading weights" not in proc.stderr and "%|" not in proc.stderr, proc.stderr


def test_cli_index_saves_a_loadable_index(tmp_path, capsys):
    assert main(["--quiet", "index", "--dataset", "cranfield", "--retriever", "bm25", "--out", str(tmp_path / "ix")]) == 0
    from rerank.retrievers.bm25 import BM25

    assert len(BM25.load(tmp_path / "ix").search("boundary layer", k=3)) == 3
