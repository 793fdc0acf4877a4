"""One experiment stack: eval and bench agree, shared prefixes run once, phases and cache hits are recorded,
cells are locked, and bad grids, metrics and pipeline names are refused in one line before anything runs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rerank import ConfigError, Experiment, get
from rerank.backends.fake import FakeBackend
from rerank.bench import Grid, run_grid
from rerank.cache import CachedBackend
from rerank.cellstore import CellStore
from rerank.cli import main
from rerank.data import load
from rerank.metrics import parse_metrics
from rerank.rerankers.base import PointwiseReranker
from rerank.retrievers.bm25 import BM25
from rerank.types import Ranking
from rerank.retrievers.run import RunRetriever
from rerank.significance import correct, pvalue, wins_losses_ties

ROOT = Path(__file__).parents[1]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_CACHE", str(tmp_path / "cache"))


def _cli(*args, cwd=None):
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "rerank.cli", "--quiet", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


# -- one runner -------------------------------------------------------------------------------------
def test_eval_and_bench_give_identical_runs_and_numbers(tmp_path):
    systems = {"BM25": "bm25", "BM25 >> MiniLM": "bm25 % 10 >> biencoder"}
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nlimit = 3\ndatasets = ["scifact"]\n[pipelines]\n'
                    + "".join(f'"{k}" = "{v}"\n' for k, v in systems.items()), encoding="utf-8")
    pipelines = [a for k, v in systems.items() for a in ("--pipeline", f"{k}={v}")]
    assert main(["--quiet", "eval", "--dataset", "scifact", *pipelines, "--limit", "3",
                 "--save-runs", str(tmp_path / "eval")]) == 0
    assert main(["--quiet", "bench", str(grid), "--out", str(tmp_path / "bench")]) == 0
    for name in ("BM25", "BM25_MiniLM"):
        a = (tmp_path / "eval" / "scifact" / f"{name}.trec").read_text()
        b = (tmp_path / "bench" / "scifact" / f"{name}.trec").read_text()
        assert a == b and len(a.splitlines()) >= 3 * 10
    numbers = [json.loads((tmp_path / d / "report.json").read_text())["datasets"]["scifact"] for d in ("eval", "bench")]
    for name in systems:
        assert numbers[0][name]["means"] == numbers[1][name]["means"]
        assert numbers[0][name]["per_query"] == numbers[1][name]["per_query"]
    assert numbers[0]["BM25 >> MiniLM"]["pvalues"] == numbers[1]["BM25 >> MiniLM"]["pvalues"]


def test_a_meter_wraps_any_stage_with_the_public_hook_and_gives_its_backend_back():
    from rerank.metering import Meter

    class OwnReranker:  # a third-party stage: only the hook, no rerank internals
        def __init__(self, backend):
            self.llm = backend

        def wrap_backend(self, wrap):
            self.llm = wrap(self.llm)
            return self.llm

    own = FakeBackend(generate=str.upper)
    stage = OwnReranker(own)
    meter = Meter().attach(stage, call_cache=False)
    assert stage.llm is not own and stage.llm.generate(["a", "b"], max_new_tokens=4)
    assert meter.usage().calls == 2  # one per prompt
    meter.detach()
    assert stage.llm is own


def test_the_experiment_stack_does_not_import_the_cli():
    probe = "import sys, rerank.bench, rerank.runner, rerank.report; print('rerank.cli' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_significance_options_reach_the_report_from_both_commands(tmp_path):
    systems = {"BM25": "run", "top 3": "run % 3", "top 5": "run % 5"}
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\ntest = "fisher"\ncorrection = "bonferroni"\nmetrics = ["ndcg@10", "recall@100"]\n'
                    'datasets = ["trec-dl-2019"]\n[pipelines]\n' + "".join(f'"{k}" = "{v}"\n' for k, v in systems.items()),
                    encoding="utf-8")
    pipelines = [a for k, v in systems.items() for a in ("--pipeline", f"{k}={v}")]
    assert main(["--quiet", "eval", "--dataset", "trec-dl-2019", *pipelines, "--metrics", "ndcg@10", "recall@100",
                 "--test", "fisher", "--correction", "holm", "--save-runs", str(tmp_path / "eval")]) == 0
    assert main(["--quiet", "bench", str(grid), "--out", str(tmp_path / "grid")]) == 0
    assert main(["--quiet", "bench", str(grid), "--out", str(tmp_path / "flag"), "--correction", "holm"]) == 0
    eval_, grid_, flag = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("eval", "grid", "flag"))
    assert (eval_["test"], eval_["correction"]) == (flag["test"], flag["correction"]) == ("fisher", "holm")
    assert (grid_["test"], grid_["correction"]) == ("fisher", "bonferroni")
    for name in ("top 3", "top 5"):
        pvalues = [r["datasets"]["trec-dl-2019"][name]["pvalues"] for r in (eval_, grid_, flag)]
        assert pvalues[0] == pvalues[2] and all(pvalues[1][m] >= pvalues[2][m] for m in pvalues[1])
    assert "holm-corrected" in (tmp_path / "flag" / "report.md").read_text()


def test_a_shared_first_stage_runs_once_per_dataset(tmp_path, monkeypatch):
    retrieved: list[tuple[int, int, str]] = []
    original = BM25.transform

    def counting(self, inp):
        retrieved.extend((len(self.docs), self.num_results, q) for q in inp.queries())  # (corpus, depth, query)
        return original(self, inp)

    monkeypatch.setattr(BM25, "transform", counting)
    grid = Grid.from_dict({"grid": {"limit": 3, "metrics": ["ndcg@10"]}, "datasets": ["scifact", "cranfield"],
                           "pipelines": {"MiniLM": "bm25 % 20 >> biencoder",
                                         "MiniLM short": "bm25 % 20 >> biencoder(batch_size=8)"}}, name="prefix")
    report = run_grid(grid, tmp_path / "out", progress=False)
    assert all(c.ok for c in report.cells.values()), report.errors()
    # 2 datasets x 3 queries, each retrieved once (the warm-up query, then the other two), not once per reranker
    assert len(retrieved) == 6 and len(set(retrieved)) == 6
    record = json.loads((tmp_path / "out" / "scifact" / "MiniLM_short.json").read_text())
    assert "BM25(num_results=20)" in record["prefix"]["stages"] and record["ms_per_query"] >= record["prefix"]["ms_per_query"]
    retrieved.clear()
    alone = Experiment({"MiniLM short": "bm25 % 20 >> biencoder(batch_size=8)"}, "scifact", ["ndcg@10"], limit=3).run()
    assert alone.table("scifact").at["MiniLM short", "ndcg@10"] == report.table("scifact").at["MiniLM short", "ndcg@10"]


def test_python_stages_with_one_repr_but_different_indexes_are_not_shared_and_a_partial_one_is_refused():
    ds = load("cranfield")
    docs = list(ds.corpus())
    full, half = BM25().index(docs), BM25().index(docs[: len(docs) // 2])
    assert repr(full % 10) == repr(half % 10)
    report = Experiment({"full": full % 10, "half": half % 10}, ds, ["recall@100"], limit=5).run()
    assert report.table().at["full", "recall@100"] > 0  # "half" is not answered by "full"'s shared run: it is refused
    assert "holds an index of 700 documents that are not cranfield's corpus" in report.cells["cranfield", "half"].error


def test_one_python_first_stage_object_is_shared(monkeypatch):
    asked: list[str] = []
    original = RunRetriever.transform
    monkeypatch.setattr(RunRetriever, "transform", lambda self, inp: asked.extend(inp.queries()) or original(self, inp))
    ds = load("trec-dl-2019")
    run = RunRetriever("bm25", ds)
    Experiment({"top 5": run % 5, "top 3": run % 3}, ds, ["ndcg@10"], limit=3).run()
    assert sorted(asked) == sorted(set(asked)) and len(asked) == 3


def test_a_saved_prefix_is_reused_by_a_later_run_with_the_same_settings(tmp_path, monkeypatch):
    asked: list[str] = []
    original = RunRetriever.transform

    def counting(self, inp):
        asked.extend(inp.queries())
        return original(self, inp)

    monkeypatch.setattr(RunRetriever, "transform", counting)
    pipelines = {"top 10": "{first} % 10", "top 5": "{first} % 5"}
    grid = {"grid": {"limit": 3}, "datasets": [{"name": "trec-dl-2019", "first": "run"}], "pipelines": pipelines}
    first = run_grid(Grid.from_dict(grid, name="g"), tmp_path, progress=False)
    assert len(asked) == 3                                            # one shared run for both systems
    asked.clear()
    grid["pipelines"] = {**pipelines, "top 3": "{first} % 3"}
    later = run_grid(Grid.from_dict(grid, name="g"), tmp_path, progress=False)
    assert asked == [] and later.cells["trec-dl-2019", "top 3"].ok  # the prefix came from disk
    record = json.loads((tmp_path / "trec-dl-2019" / "top_3.json").read_text())
    assert record["prefix"]["reused_from_disk"] is True
    assert later.table("trec-dl-2019").at["top 10", "ndcg@10"] == first.table("trec-dl-2019").at["top 10", "ndcg@10"]
    grid["grid"]["limit"] = 2                                         # other settings: not reused
    grid["pipelines"]["top 2"] = "{first} % 2"
    run_grid(Grid.from_dict(grid, name="g"), tmp_path, progress=False)
    assert len(asked) == 2


def two_one_three(prompt: str) -> str:
    """A listwise answer (a module-level function: the call cache knows it again in a new backend)."""
    return "[2] > [1] > [3]"


def test_records_keep_load_warmup_and_timed_phases_and_the_timed_run_is_not_a_cache_replay(tmp_path):
    ds = load("trec-dl-2019")
    calls = tmp_path / "calls.sqlite"

    def system():
        fake = FakeBackend(generate=two_one_three)
        return RunRetriever("bm25", ds) % 3 >> get("reranker", "listwise", backend=CachedBackend(fake, calls), window=3, step=2)

    first = Experiment({"listwise": system()}, ds, ["ndcg@10"], limit=4, save_dir=tmp_path / "a").run()
    record = json.loads((tmp_path / "a" / "trec-dl-2019" / "listwise.json").read_text())
    assert record["timed_queries"] == 3 and record["load_s"] >= 0 and record["warmup_s"] > 0 and record["run_s"] > 0
    assert record["warmup_usage"]["cache_misses"] == record["warmup_usage"]["calls"] == 1
    assert record["usage"]["calls"] == 3 and record["usage"]["cache_hits"] == 0 and record["usage"]["cache_misses"] == 3
    assert record["usage"]["answers"] == 3 and first.cells["trec-dl-2019", "listwise"].cache_hit_rate == 0
    again = Experiment({"listwise": system()}, ds, ["ndcg@10"], limit=4, save_dir=tmp_path / "b").run()
    cell = again.cells["trec-dl-2019", "listwise"]
    assert cell.cache_hit_rate == 1.0 and "| 100% | 4 |" in again.to_markdown()  # a replay, and the table says so


def test_a_warm_up_query_that_gives_no_results_is_followed_by_one_that_does(tmp_path):
    """A first query the first stage found nothing for warmed nothing up: the model loaded during the
    timed queries, inflating ms/query 6x (review helper-63)."""
    from rerank.stage import Stage

    ds = load("trec-dl-2019")
    run = RunRetriever("bm25", ds)
    first = ds.topics().queries()  # the first judged query the grid takes
    skipped = next(q for q in first if q in {c.qid for c in run(ds.topics()).per_query()})

    class FindsNothingFirst(Stage):
        def transform(self, inp):
            out = run(inp)
            return out.select([q for q in out.queries() if q != skipped])

        def __repr__(self):
            return "FindsNothingFirst()"

    reranker = get("reranker", "listwise", backend=FakeBackend(generate=two_one_three), window=3, step=2)
    Experiment({"listwise": FindsNothingFirst() % 3 >> reranker}, ds, ["ndcg@10"], limit=4, save_dir=tmp_path).run()
    record = json.loads((tmp_path / "trec-dl-2019" / "listwise.json").read_text())
    assert record["warmup_usage"]["calls"] == 1 and record["timed_queries"] == 2 and record["usage"]["calls"] == 2


def test_concurrent_runs_never_run_a_locked_cell_and_a_dead_owner_lock_is_taken_over(tmp_path):
    grid = Grid.from_dict({"grid": {"limit": 2}, "datasets": [{"name": "trec-dl-2019", "first": "run"}],
                           "pipelines": {"BM25": "{first}", "top 5": "{first} % 5"}}, name="locks")
    store = CellStore(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        store.lock_path("trec-dl-2019", "top 5").parent.mkdir(parents=True)
        store.lock_path("trec-dl-2019", "top 5").write_text(f"{__import__('socket').gethostname()}:{other.pid}")
        report = run_grid(grid, tmp_path, progress=False)
        held = report.cells["trec-dl-2019", "top 5"]
        assert held.status == "missing" and f":{other.pid}" in held.error and report.cells["trec-dl-2019", "BM25"].ok
        assert not store.record_path("trec-dl-2019", "top 5").exists()
    finally:
        other.kill()
        other.wait()
    report = run_grid(grid, tmp_path, progress=False)                # its owner died: the lock is taken over
    assert report.cells["trec-dl-2019", "top 5"].ok and not store.lock_path("trec-dl-2019", "top 5").exists()
    assert store.lock("trec-dl-2019", "BM25") is None and store.lock("trec-dl-2019", "BM25") is None  # own lock: re-entrant
    store.unlock("trec-dl-2019", "BM25")
    store.lock_path("trec-dl-2019", "BM25").write_text(f"{__import__('socket').gethostname()}:{other.pid}")
    assert run_grid(grid, tmp_path, progress=False).cells["trec-dl-2019", "BM25"].ok  # done: a dead run's lock goes
    assert not store.lock_path("trec-dl-2019", "BM25").exists()


def test_bench_that_leaves_a_cell_to_another_runs_lock_exits_2_and_names_the_lock(tmp_path, capsys):
    """It exited 0 after writing an incomplete report, with no word on how to clear the lock (review helper-63)."""
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nlimit = 2\ndatasets = [{ name = "trec-dl-2019", first = "run" }]\n'
                    '[pipelines]\n"BM25" = "{first}"\n"top 5" = "{first} % 5"\n')
    lock = CellStore(tmp_path / "out").lock_path("trec-dl-2019", "top 5")
    lock.parent.mkdir(parents=True)
    lock.write_text("otherhost:4242")  # a run on another machine, perhaps long gone
    assert main(["--quiet", "bench", str(grid), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 cells failed or were not run" in err and f"its lock is {lock}; delete it if that run has stopped" in err
    lock.unlink()
    assert main(["--quiet", "bench", str(grid), "--out", str(tmp_path / "out")]) == 0


def test_the_report_written_shows_a_cell_another_run_finished_after_this_one_left_it(tmp_path):
    """Two runs into one folder: the run that left a cell to the other's lock wrote its report last, showing the
    finished cell as missing (review helper-81). The other run finishes the cell while this one runs its own."""
    import shutil

    from rerank.executors import LocalExecutor

    grid = Grid.from_dict({"grid": {"limit": 2}, "datasets": [{"name": "trec-dl-2019", "first": "run"}],
                           "pipelines": {"BM25": "{first}", "top 5": "{first} % 5"}}, name="two runs")
    run_grid(grid, tmp_path / "other", progress=False)  # what the other run saves for "top 5"
    out, store = tmp_path / "out", CellStore(tmp_path / "out")
    lock = store.lock_path("trec-dl-2019", "top 5")
    lock.parent.mkdir(parents=True)
    lock.write_text("otherhost:4242")

    class OtherRunFinishes(LocalExecutor):
        def map(self, fn, items):
            yield from super().map(fn, items)
            for done in ("top_5.trec", "top_5.json"):  # the run before its record, as the runner saves them
                shutil.copy(tmp_path / "other" / "trec-dl-2019" / done, lock.parent / done)

    report = run_grid(grid, out, progress=False, executor=OtherRunFinishes())
    assert report.cells["trec-dl-2019", "top 5"].status == "ok"  # what is printed is what is written (stop 38's list)
    written = json.loads((out / "report.json").read_text())["datasets"]["trec-dl-2019"]
    assert written["top 5"]["status"] == "ok" and written["BM25"]["status"] == "ok"
    assert written["top 5"]["means"] == json.loads((tmp_path / "other" / "report.json").read_text())["datasets"]["trec-dl-2019"]["top 5"]["means"]
    assert "| top 5 | " in (out / "report.md").read_text() and "being run by" not in (out / "report.md").read_text()


class _OtherProcess:
    """An executor that runs each cell in a spawned process: what Ray needs (picklable cells and records)."""

    def __init__(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def map(self, fn, items):
        return self.pool.map(fn, items)

    def close(self):
        self.pool.shutdown()


def test_cells_run_in_another_process_give_the_same_report(tmp_path):
    grid = Grid.from_dict({"grid": {"limit": 4}, "datasets": [{"name": "trec-dl-2019", "first": "run"}],
                           "pipelines": {"BM25": "{first}", "top 5": "{first} % 5"}}, name="remote")
    executor = _OtherProcess()
    try:
        remote = run_grid(grid, tmp_path / "remote", progress=False, executor=executor)
    finally:
        executor.close()
    local = run_grid(grid, tmp_path / "local", progress=False)
    assert remote.table("trec-dl-2019").drop(columns=["ms_per_query", "load_s"]).equals(
        local.table("trec-dl-2019").drop(columns=["ms_per_query", "load_s"]))
    assert (tmp_path / "remote/trec-dl-2019/top_5.trec").read_text() == (tmp_path / "local/trec-dl-2019/top_5.trec").read_text()


class _WorkerWithOtherFiles:
    """An executor whose worker sees other files than the driver: here the queries change on disk
    after the driver looked at them, as on a node with a stale copy of the dataset."""

    def __init__(self, queries: Path):
        self.queries = queries

    def map(self, fn, items):
        self.queries.write_text(self.queries.read_text().replace('"cats"', '"cats purr"'), encoding="utf-8")
        return (fn(item) for item in items)

    def close(self):
        pass


@pytest.mark.parametrize("systems", [{"BM25": "bm25"},
                                     {"MiniLM": "bm25 % 2 >> biencoder", "MiniLM 8": "bm25 % 2 >> biencoder(batch_size=8)"}])
def test_a_cell_run_on_other_data_than_the_driver_sees_fails(tmp_path, systems):
    data = tmp_path / "c"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text('{"_id": "d1", "text": "cats purr"}\n{"_id": "d2", "text": "dogs bark"}\n')
    (data / "queries.jsonl").write_text('{"_id": "q1", "text": "cats"}\n')
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    experiment = Experiment(systems, str(data), ["ndcg@10"], save_dir=tmp_path / "out",
                            executor=_WorkerWithOtherFiles(data / "queries.jsonl"))
    report = experiment.run()  # a shared prefix (second case) is checked as it comes back, too
    for name in systems:
        assert not report.cells[str(data), name].ok and "differs from this machine's" in report.cells[str(data), name].error
    assert not any((tmp_path / "out").rglob("*.trec")) and not any((tmp_path / "out").rglob("prefixes/*"))
    again = Experiment(systems, str(data), ["ndcg@10"], save_dir=tmp_path / "out").run()  # the same files now
    assert all(again.cells[str(data), name].ok for name in systems) and any((tmp_path / "out").rglob("*.trec"))


def test_judgments_edited_after_a_cell_ran_make_it_an_error_not_a_score_on_other_data(tmp_path, monkeypatch):
    """The report reloaded the dataset: a qrels edit during a long grid scored the cells on judgments
    they did not run with, and the record said otherwise (review helper-63)."""
    from rerank.runner import Runner

    data = tmp_path / "c"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text('{"_id": "d1", "text": "cats purr"}\n{"_id": "d2", "text": "dogs bark"}\n')
    (data / "queries.jsonl").write_text('{"_id": "q1", "text": "cats"}\n{"_id": "q2", "text": "dogs"}\n')
    qrels = data / "qrels" / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    ran = Runner.run

    def run_then_edit(self, progress=None):
        records = ran(self, progress)
        qrels.write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td2\t1\n")
        return records

    monkeypatch.setattr(Runner, "run", run_then_edit)
    cell = Experiment({"BM25": "bm25"}, str(data), ["ndcg@10"], save_dir=tmp_path / "out").run().cells[str(data), "BM25"]
    assert not cell.ok and f"{str(data)!r} changed since this cell ran" in cell.error


# -- significance ------------------------------------------------------------------------------------
def test_corrections_and_tests_and_ties():
    assert correct([0.01, 0.02, 0.04], "bonferroni") == [0.03, 0.06, 0.12]
    assert correct([0.01, 0.04, 0.03], "holm") == pytest.approx([0.03, 0.06, 0.06], rel=1e-12)
    assert correct([6.78e-15, 0.5], "holm") == pytest.approx([1.356e-14, 0.5], rel=1e-12)  # never rounded to 0
    assert correct([0.5, 0.01], None) == [0.5, 0.01]
    rng = np.random.default_rng(0)
    a = rng.random(30)
    b = a - 0.2
    assert pvalue(a, b, "student") < 0.001 and pvalue(a, b, "fisher") < 0.01
    assert pvalue(a, a) == pvalue(a, a, "fisher") == 1.0
    noisy = a + rng.normal(0.02, 0.1, 30)
    assert pvalue(a, noisy, "fisher") == pvalue(a, noisy, "fisher")  # seeded: the same on every run
    assert 0 < pvalue(a, b, "fisher", permutations=200) <= 2 / 201  # never 0: the observed split counts
    assert pvalue(a[:5], b[:5], "fisher") == 2 / 32  # exact over the 2^5 swap patterns
    assert wins_losses_ties(np.array([0.5, 0.2, 0.3]), np.array([0.5 + 1e-12, 0.1, 0.4])) == (1, 1, 1)
    with pytest.raises(ConfigError, match="correction"):
        correct([0.1], "sidak")


def test_report_applies_the_chosen_test_and_correction(tmp_path):
    ds = load("trec-dl-2019")
    run = RunRetriever("bm25", ds)
    systems = {"BM25": run, "top 3": run % 3, "top 5": run % 5}
    plain = Experiment(systems, ds, ["ndcg@10", "recall@100"]).run()
    holm = Experiment(systems, ds, ["ndcg@10", "recall@100"], test="fisher", correction="holm").run()
    assert (holm.pvalues().fillna(0) >= plain.pvalues().fillna(0) - 0.05).all().all()
    assert "Fisher's randomization test" in holm.to_markdown() and "holm-corrected" in holm.to_markdown()
    cmp = holm.compare("trec-dl-2019", "top 3")
    assert cmp.wins + cmp.losses + cmp.ties == 43
    with pytest.raises(ConfigError, match="significance test"):
        Experiment(systems, ds, test="wilcoxon")


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric, message", [
    ("foo@10", "unknown metric"), ("ndcg@x", "positive integer"), ("ndcg@-3", "positive integer"),
    ("ndcg@0", "positive integer"), ("ndcg@10-lx", "relevance level"), ("", "metric"),
])
def test_bad_metric_names_are_refused(metric, message):
    with pytest.raises(ConfigError, match=message):
        parse_metrics([metric])


def test_metrics_given_as_one_string_are_split_not_spelled_out():
    assert parse_metrics("ndcg@10") == ["ndcg@10"] and parse_metrics("ndcg@10, MRR@10") == ["ndcg@10", "mrr@10"]
    grid = Grid.from_dict({"grid": {"metrics": "ndcg@10"}, "datasets": ["scifact"], "pipelines": {"a": "bm25"}})
    assert grid.metrics == ["ndcg@10"]
    with pytest.raises(ConfigError, match="repeat"):
        parse_metrics(["ndcg@10", "NDCG@10"])


@pytest.mark.parametrize("raw, message", [
    ({"pipelines": {"A/B": "bm25", "A B": "bm25 % 10"}}, "both give the file name 'A_B'"),
    ({"pipelines": {"a": "bm25"}, "grid": {"limit": "abc"}}, "limit must be a positive number"),
    ({"pipelines": {"a": "bm25"}, "grid": {"limit": 0}}, "limit must be a positive number"),
    ({"pipelines": {"a": "bm25"}, "grid": {"limit": True}}, "limit must be a positive number"),
    ({"pipelines": {"a": "bm25"}, "grid": {"metrics": ["ndcg@0"]}}, "positive integer"),
    ({"pipelines": {"a": "bm25"}, "grid": {"metrics": 10}}, "metrics must be a list"),
    ({"pipelines": {"a": 3}}, "not an expression string"),
    ({"pipelines": {"a": "bm25"}, "grid": {"correction": "sidak"}}, "correction"),
    ({"pipelines": {"a": "bm25"}, "grid": "x"}, r"\[grid\] must be a table"),
])
def test_bad_grids_are_refused(raw, message):
    with pytest.raises(ConfigError, match=message):
        Grid.from_dict({"datasets": ["scifact"], **raw})


@pytest.mark.parametrize("content, message", [
    (b'[pipelines\n"a" = "bm25"\n', "not valid TOML"),
    (b'[pipelines]\n"a" = "bm25 \xff"\n', "not UTF-8"),
    (b'', "[pipelines] table"),
])
def test_malformed_grid_files_give_one_line_and_exit_2(tmp_path, content, message):
    grid = tmp_path / "g.toml"
    grid.write_bytes(content)
    proc = _cli("bench", str(grid), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--metrics", "foo@10"], "unknown metric 'foo@10'"),
    (["--metrics", "ndcg@x"], "positive integer"),
    (["--metrics", "ndcg@-3"], "positive integer"),
    (["--metrics", "ndcg@0"], "positive integer"),
    (["--pipeline", "bm25"], "given twice"),
    (["--pipeline", "A/B=bm25", "--pipeline", "A B=bm25 % 5"], "both give the file name"),
    (["--limit", "0"], "argument --limit: must be a positive integer in digits 0-9, got 0"),
])
def test_eval_refuses_bad_metrics_and_names_before_any_system_runs(tmp_path, args, message):
    proc = _cli("eval", "--dataset", "scifact", "--pipeline", "bm25", *args, "--save-runs", str(tmp_path / "out"))
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "out").exists()                            # nothing ran


def test_eval_pipelines_file_that_is_not_toml_is_one_line(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text('[pipelines]\n"a" = bm25\n', encoding="utf-8")
    proc = _cli("eval", "--dataset", "scifact", "--pipelines", str(bad))
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_a_saved_cell_is_not_reused_after_its_data_changed(tmp_path):
    folder = tmp_path / "c"
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": "d1", "title": "", "text": "caffeine in coffee"}, {"_id": "d2", "title": "", "text": "bone fractures"},
            {"_id": "d3", "title": "", "text": "coffee beans"}]
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "coffee"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td3\t1\n")

    def run(texts):
        for doc, text in zip(docs, texts):
            doc["text"] = text
        (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
        grid = {"datasets": [{"name": str(folder), "label": "c"}], "pipelines": {"BM25": "bm25"}}
        return run_grid(Grid.from_dict(grid, name="g"), tmp_path / "out", progress=False).table("c").at["BM25", "ndcg@10"]

    assert run(["caffeine in coffee", "bone fractures", "coffee beans"]) < 1.0   # d1 and d3 tie on "coffee"
    assert run(["caffeine", "bone fractures", "coffee beans"]) == 1.0            # edited: run again, not reused


def test_saved_runs_keep_full_precision_and_a_changed_one_is_never_reused(tmp_path, caplog):
    ds = load("trec-dl-2019")
    frame = ds.run("bm25").to_pandas()
    frame["score"] = frame["score"] + 1e-9 * np.arange(len(frame))  # differences a 6-decimal file would lose
    experiment = Experiment({"exact": Ranking(frame)}, ds, ["ndcg@10"], limit=3, save_dir=tmp_path)
    assert experiment.run().cells["trec-dl-2019", "exact"].ok
    saved = Ranking.read_trec(tmp_path / "trec-dl-2019" / "exact.trec").to_pandas()
    first = frame[frame["qid"].isin(set(saved["qid"]))].sort_values(["qid", "docid"])["score"].to_numpy()
    assert np.array_equal(saved.sort_values(["qid", "docid"])["score"].to_numpy(), first)
    run = tmp_path / "trec-dl-2019" / "exact.trec"
    whole = run.read_text()
    for changed in ("264014 Q0 96852 1 nan exact\n", "".join(whole.splitlines(keepends=True)[:50])):  # damaged; cut at a line
        run.write_text(changed)
        assert "not the one recorded" in experiment.collect().cells["trec-dl-2019", "exact"].error
        with caplog.at_level("WARNING", logger="rerank"):
            again = experiment.run().cells["trec-dl-2019", "exact"]                 # run again, with a warning
        assert again.ok and run.read_text() == whole and "running the cell again" in caplog.text
        caplog.clear()


def test_an_executor_that_cannot_start_leaves_no_cell_locked(tmp_path):
    experiment = Experiment({"BM25": "run"}, "trec-dl-2019", ["ndcg@10"], limit=2, save_dir=tmp_path, executor="nope")
    with pytest.raises(ConfigError, match="nope"):
        experiment.run()
    assert not list(tmp_path.rglob("*.lock"))


def test_a_saved_cell_never_stands_for_another_run_or_another_python_object_with_its_repr(tmp_path):
    ds = load("trec-dl-2019")
    run = ds.run("bm25")
    frame = run.to_pandas()
    flipped = Ranking(frame.assign(score=-frame["score"]))  # the same ids, the opposite order
    first = Experiment({"A": run}, ds, ["ndcg@10"], limit=5, save_dir=tmp_path).run().table()
    second = Experiment({"A": flipped}, ds, ["ndcg@10"], limit=5, save_dir=tmp_path).run().table()
    assert first.at["A", "ndcg@10"] != second.at["A", "ndcg@10"]
    docs = list(load("cranfield").corpus())
    full, half = BM25().index(docs), BM25().index(docs[: len(docs) // 2])
    one = Experiment({"B": full % 10}, "cranfield", ["recall@100"], limit=5, save_dir=tmp_path).run().table()
    other = Experiment({"B": half % 10}, "cranfield", ["recall@100"], limit=5, save_dir=tmp_path).run()
    assert one.at["B", "recall@100"] > 0 and "holds an index of 700 documents" in other.cells["cranfield", "B"].error  # the same repr,
    # not the same index: the saved cell does not stand for it, and it is refused as indexed on part of the corpus


class _Overlap(PointwiseReranker):
    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def score_pairs(self, queries, texts):
        return self.weight * np.array([len(set(q.split()) & set(t.split())) for q, t in zip(queries, texts)], float)


def test_a_python_stage_changed_after_a_run_runs_again_not_read_from_its_saved_cell(tmp_path):
    ds, rr = load("trec-dl-2019"), _Overlap()
    first = RunRetriever("bm25", ds)
    experiment = Experiment({"BM25": first, "RR": first % 5 >> rr}, ds, ["mrr@3"], limit=4, save_dir=tmp_path)
    before = experiment.run().cells["trec-dl-2019", "RR"]
    rr.weight = -1.0
    after = experiment.run().cells["trec-dl-2019", "RR"]
    assert after.expression.endswith("_Overlap(weight=-1.0)") and before.expression.endswith("_Overlap()")
    assert after.per_query["mrr@3"].tolist() != before.per_query["mrr@3"].tolist(), before.per_query


def test_llm_calls_inside_a_shared_prefix_count_in_every_system_that_starts_with_it(tmp_path):
    ds = load("trec-dl-2019")
    listwise = get("reranker", "listwise", backend=FakeBackend(generate=lambda prompt: "[2] > [1] > [3]"), window=3, step=2)
    first = RunRetriever("bm25", ds) % 3 >> listwise
    report = Experiment({"all": first, "top 2": first % 2}, ds, ["ndcg@10"], limit=4, save_dir=tmp_path).run()
    for system in ("all", "top 2"):
        usage = report.cells["trec-dl-2019", system].usage
        assert usage["calls"] == 3 and usage["answers"] == 3, (system, usage)
