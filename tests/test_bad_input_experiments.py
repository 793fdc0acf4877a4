"""Bad input to datasets, experiments, grids and encoders, found by new-user reviews: each gets one clear
line (exit status 2), a ConfigError or DataError, or a counted repair; a saved cell, prefix or loaded
dataset never answers for other data.
"""

from __future__ import annotations

import gzip
import json
import logging
import os

import pytest
from test_bad_input import beir, cli, qrel_lines, refused, scores

from rerank import ConfigError, DataError, Ranking
from rerank.bench import Grid, run_grid
from rerank.cli import main
from rerank.data import load
from rerank.encoders import Encoder
from rerank.evaluate import Experiment, evaluate
from rerank.io import relevance_grade


@pytest.fixture(autouse=True)
def index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_CACHE", str(tmp_path / "cache"))


def _drown(corpus: str) -> str:
    """The corpus with d1's words about coffee replaced by as many characters about rivers."""
    return corpus.replace("Caffeine in coffee", "Nile rivers flow!!", 1).replace("Coffee contains caffeine", "Rivers run to the seas!!", 1)


# -- datasets ---------------------------------------------------------------------------------------
def test_an_edited_dataset_is_read_again_in_one_process_even_with_its_size_and_mtime_kept(tmp_path):
    data = beir(tmp_path / "c")
    first = Experiment({"b": "bm25"}, str(data), ["mrr@10"]).run().table(str(data)).at["b", "mrr@10"]
    corpus = data / "corpus.jsonl"
    before = os.stat(corpus)
    text = corpus.read_text()
    edited = _drown(text)
    assert len(edited) == len(text)
    corpus.write_text(edited)
    os.utime(corpus, ns=(before.st_atime_ns, before.st_mtime_ns))
    second = Experiment({"b": "bm25"}, str(data), ["mrr@10"]).run().table(str(data)).at["b", "mrr@10"]
    assert second < first


def test_a_catalog_name_from_rerank_datasets_is_read_again_when_edited(tmp_path, monkeypatch):
    beir(tmp_path / "dirs" / "scifact")
    monkeypatch.setenv("RERANK_DATASETS", str(tmp_path / "dirs"))
    assert load("scifact").name == "scifact" and len(load("scifact").corpus()) == 8
    first = Experiment({"b": "bm25"}, "scifact", ["mrr@10"]).run().table("scifact").at["b", "mrr@10"]
    corpus = tmp_path / "dirs" / "scifact" / "corpus.jsonl"
    corpus.write_text(_drown(corpus.read_text()))
    second = Experiment({"b": "bm25"}, "scifact", ["mrr@10"]).run().table("scifact").at["b", "mrr@10"]
    assert second < first


@pytest.mark.parametrize("line, message", [
    ('{"_id": " d9", "text": "x"}\n', "starts or ends with whitespace"),
    ('{"_id": "d9", "text": "half \\ud800 a pair"}\n', "half of a surrogate pair"),
])
def test_corpus_records_that_could_never_match_or_print_are_refused(tmp_path, capsys, line, message):
    data = beir(tmp_path / "c")
    with open(data / "corpus.jsonl", "a") as f:
        f.write(line)
    assert message in refused(capsys, "eval", "--dataset", str(data), "--pipeline", "bm25")


def test_a_surrogate_pair_escape_is_a_character(tmp_path, capsys):
    data = beir(tmp_path / "c")
    with open(data / "corpus.jsonl", "a") as f:
        f.write('{"_id": "d9", "text": "a smile \\ud83d\\ude00"}\n')
    assert cli(capsys, "eval", "--dataset", str(data), "--pipeline", "bm25")[0] == 0


@pytest.mark.parametrize("value, message", [(10**19, "out of range"), ("1e19", "out of range"), (True, "not a number")])
def test_relevance_grades_out_of_range_or_boolean_are_refused(value, message):
    with pytest.raises(DataError, match=message):
        relevance_grade(value, "here")
    run = Ranking.from_records([("q1", "", "d1", 2.0)])
    with pytest.raises(DataError, match=message):
        evaluate(run, {"q1": {"d1": value}}, ["mrr@10"])


def test_a_huge_grade_in_a_qrels_file_is_one_line(tmp_path, capsys):
    data = beir(tmp_path / "c", qrels=[*qrel_lines(), "q4\td7\t10000000000000000000\n"])
    assert "test.tsv:9" in refused(capsys, "eval", "--dataset", str(data), "--pipeline", "bm25")


def test_judged_queries_without_a_relevant_document_are_left_out_with_a_count_and_limit_skips_them(tmp_path, capsys, caplog):
    qrels = [line for line in qrel_lines() if not line.startswith("q1\t")] + ["q1\td1\t0\n"]  # q1: judged, none relevant
    data = beir(tmp_path / "c", qrels=qrels)
    with caplog.at_level(logging.WARNING, logger="rerank"):
        code, out, _ = cli(capsys, "eval", "--dataset", str(data), "--pipeline", "bm25", "--limit", "2")
    assert code == 0 and scores(out)["bm25"]["queries"] == "2"  # q2 and q3: the first two that can be scored
    assert "1 judged queries have no relevant document" in caplog.text


def test_a_system_that_retrieves_no_judged_document_scores_0_with_a_warning_not_an_id_error(tmp_path, capsys, caplog):
    data = beir(tmp_path / "c", qrels=["query-id\tcorpus-id\tscore\n", "q4\td1\t1\n"])  # one query, one judgment
    with caplog.at_level(logging.WARNING, logger="rerank"):
        code, out, _ = cli(capsys, "eval", "--dataset", str(data), "--pipeline", "bm25 % 1")  # d8, not d1
    assert code == 0 and scores(out)["bm25 % 1"]["ndcg@10"] == "0.0000"  # the corpus's ids: a real 0
    assert "none of the 1 retrieved documents is judged, so every measure is 0" in caplog.text
    foreign = Ranking.from_records([("q4", "long river", "x9", 1.0)])  # ids of another collection
    error = Experiment({"run": foreign}, str(data), ["ndcg@10"]).run().cells[str(data), "run"].error
    assert "none of the 1 retrieved docids is in the qrels" in error and "the run and the qrels use different ids" in error


def test_bpref_on_judgments_of_relevant_documents_only_is_defined_through_experiments(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="rerank"):
        data = str(beir(tmp_path / "c"))
        table = Experiment({"b": "bm25"}, data, ["bpref", "mrr@10"]).run().table(data)
    assert "undefined" not in caplog.text and table[["bpref", "mrr@10"]].notna().all().all()


@pytest.mark.parametrize("name, options, message", [
    ("", {}, "a dataset is a catalog name"),
    (5, {}, "a dataset is a catalog name"),
    ("scifact", {"foo": 1}, "unexpected keyword argument 'foo'"),
    ("scifact", {"rel_threshold": "x"}, "rel_threshold must be an integer"),
])
def test_load_refuses_bad_names_and_options_with_config_errors(name, options, message):
    with pytest.raises(ConfigError, match=message):
        load(name, **options)


def test_a_file_given_as_a_dataset_and_a_bundled_set_without_a_corpus_say_so(tmp_path):
    data = beir(tmp_path / "c")
    with pytest.raises(DataError, match=f"dataset '{data / 'corpus.jsonl'}' is a file; a dataset is a folder in BEIR layout"):
        load(str(data / "corpus.jsonl"))
    with pytest.raises(DataError, match="the folder holds no corpus .* give a BEIR folder with its corpus by path, or an irds: id"):
        load("arguana").corpus()


def test_a_folder_where_a_file_belongs_is_a_data_error(tmp_path):
    data = beir(tmp_path / "c")
    (data / "queries.jsonl").unlink()
    (data / "queries.jsonl").mkdir()
    with pytest.raises(DataError, match="is a folder, not a file"):
        load(str(data)).queries()


@pytest.mark.parametrize("record, message", [
    ({"id": None, "content": "x"}, "needs a non-empty string 'id'"),
    ({"content": "x"}, "needs a non-empty string 'id'"),
    ({"id": 2.0, "content": "x"}, "needs a non-empty string 'id'"),
    ({"id": "d1", "content": None}, "'content' must be a string"),
    ({"id": "d1", "content": ["a list"]}, "'content' must be a string"),
])
def test_bright_documents_of_the_wrong_type_are_refused(tmp_path, record, message):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError, match=message):
        load("bright/biology", documents=str(docs)).corpus()


def test_run_names_are_not_patterns_and_a_run_answers_only_its_queries(tmp_path, capsys):
    with pytest.raises(DataError, match="no run named"):
        load("trec-dl-2019").run("*")
    message = refused(capsys, "search", "--dataset", "trec-dl-2019", "--pipeline", "run", "how long do fleas live")
    assert "ranks only trec-dl-2019's own queries" in message
    from rerank.retrievers.run import RunRetriever

    with pytest.raises(DataError, match="answers trec-dl-2019's query '264014' \\('how long is life cycle of flea'\\), but "
                                        "the text asked under that id is 'how to bake sourdough bread'"):
        RunRetriever("bm25", load("trec-dl-2019"))({"264014": "how to bake sourdough bread"})
    assert len(RunRetriever("bm25", load("trec-dl-2019"))({"264014": "how long is life cycle of flea "})) == 100  # whitespace aside


def test_empty_paths_are_refused_on_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["eval", "--dataset", "scifact", "--pipeline", "bm25", "--save-runs", ""], ["bench", "g.toml", "--out", ""]):
        with pytest.raises(SystemExit) as stop:
            main(args)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and "empty path" in err
    assert "a dataset is a catalog name" in refused(capsys, "eval", "--dataset", "", "--pipeline", "bm25")
    assert list(tmp_path.iterdir()) == []


# -- experiments and grids --------------------------------------------------------------------------
def test_experiment_settings_are_checked(tmp_path):
    data = str(beir(tmp_path / "c"))
    for bad in (float("nan"), 0, 5, "0.05"):
        with pytest.raises(ConfigError, match="max_p"):
            Experiment({"b": "bm25"}, data, max_p=bad)
    with pytest.raises(ConfigError, match="save_dir"):
        Experiment({"b": "bm25"}, data, save_dir="")
    with pytest.raises(ConfigError, match="non-empty"):
        Experiment({"": "bm25"}, data)
    assert Experiment({"b": "bm25", "c": "bm25(k1=1.0)"}, data, correction="none").correction is None
    assert Grid.from_dict({"grid": {"correction": "none"}, "datasets": [data], "pipelines": {"b": "bm25"}}).correction is None


def _grid(data, out):
    grid = out.parent / "g.toml"
    grid.write_text(f'[grid]\ndatasets = ["{data}"]\n[pipelines]\n"top 5" = "bm25 % 5"\n"top 3" = "bm25 % 3"\n')
    return grid


def test_report_only_with_no_matching_cell_leaves_the_report_alone(tmp_path, capsys):
    data, out = beir(tmp_path / "c"), tmp_path / "out"
    grid = _grid(data, out)
    assert cli(capsys, "bench", str(grid), "--out", str(out), "--limit", "2")[0] == 0
    report = (out / "report.md").read_text()
    assert "no cell saved under" in refused(capsys, "bench", str(grid), "--out", str(out), "--report-only")
    assert (out / "report.md").read_text() == report
    assert "no cell saved under" in refused(capsys, "bench", str(grid), "--out", str(tmp_path / "elsewhere"), "--report-only")
    assert cli(capsys, "bench", str(grid), "--out", str(out), "--limit", "2", "--report-only")[0] == 0


def test_a_grid_baseline_that_is_not_a_name_is_one_line(tmp_path, capsys):
    """``baseline = ["top 5"]`` died with 'unexpected TypeError: unhashable type' (exit 1; review helper-81)."""
    grid = _grid(beir(tmp_path / "c"), tmp_path / "out")
    for bad in ('["top 5"]', '{ name = "top 5" }'):
        grid.write_text(grid.read_text().replace("[grid]\n", f"[grid]\nbaseline = {bad}\n"))
        err = refused(capsys, "bench", str(grid), "--out", str(tmp_path / "out"))
        assert f"{grid}: baseline must be a pipeline name (a string), got" in err
        grid.write_text(grid.read_text().replace(f"baseline = {bad}\n", ""))


SHARED = {"grid": {"limit": 3, "metrics": ["mrr@10"]}, "datasets": [{"name": "trec-dl-2019", "first": "run"}],
          "pipelines": {"top 10": "{first} % 10", "top 5": "{first} % 5"}}  # the shipped run is a shared prefix


def _scores(report):
    return report.table("trec-dl-2019")[["mrr@10", "queries"]]


def test_an_edited_record_or_prefix_is_not_trusted(tmp_path, caplog):
    grid, out = Grid.from_dict(SHARED, name="g"), tmp_path / "out"
    clean = _scores(run_grid(grid, out, progress=False))
    record = out / "trec-dl-2019" / "top_10.json"
    saved = json.loads(record.read_text())
    record.write_text(json.dumps({**saved, "qids": saved["qids"][:1]}, indent=1))  # a hand edit
    [prefix] = out.glob("trec-dl-2019/prefixes/*.json.gz")
    with gzip.open(prefix, "rt") as f:
        kept = json.load(f)
    kept["columns"]["score"] = kept["columns"]["score"][::-1]  # scores edited: another order
    with gzip.open(prefix, "wt") as f:
        json.dump(kept, f)
    (out / "trec-dl-2019" / "top_5.json").unlink()
    with caplog.at_level(logging.WARNING, logger="rerank"):
        again = _scores(run_grid(grid, out, progress=False))
    assert again.equals(clean)
    assert caplog.text.count("edited or damaged since it was saved") == 2


def test_a_damaged_prefix_is_computed_again(tmp_path):
    grid, out = Grid.from_dict(SHARED, name="g"), tmp_path / "out"
    clean = _scores(run_grid(grid, out, progress=False))
    [prefix] = out.glob("trec-dl-2019/prefixes/*.json.gz")
    raw = bytearray(prefix.read_bytes())
    for i in range(20, len(raw) - 8, 7):
        raw[i] ^= 0xFF  # a damaged deflate stream (zlib.error, not an OSError)
    prefix.write_bytes(bytes(raw))
    for record in (out / "trec-dl-2019").glob("*.json"):
        record.unlink()
    assert _scores(run_grid(grid, out, progress=False)).equals(clean)


def test_a_record_or_lock_that_is_not_utf8_is_damaged_not_a_crash(tmp_path, capsys, caplog):
    """Every later run died with 'unexpected UnicodeDecodeError' (exit 1; review helper-81)."""
    data, out = beir(tmp_path / "c"), tmp_path / "out"
    grid = _grid(data, out)
    assert cli(capsys, "bench", str(grid), "--out", str(out), "--limit", "2")[0] == 0
    [record] = out.glob("*/top_5.json")
    record.write_bytes(b"\xff\xfe garbage")
    with caplog.at_level(logging.WARNING, logger="rerank"):
        code, _, err = cli(capsys, "bench", str(grid), "--out", str(out), "--limit", "2")
    assert code == 0 and "Traceback" not in err and json.loads(record.read_text())["status"] == "ok"  # run again
    assert caplog.text.count("edited or damaged since it was saved") == 1
    record.unlink()
    lock = record.with_suffix(".lock")
    lock.write_bytes(b"\xff\xfe garbage")  # as any other damaged lock: held, and named so that it can be deleted
    assert f"its lock is {lock}; delete it" in refused(capsys, "bench", str(grid), "--out", str(out), "--limit", "2")


# -- encoders ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"max_length": float("nan")}, "max_length must be an integer"),
    ({"max_length": "64"}, "max_length must be an integer"),
])
def test_encoder_arguments_are_checked_in_python(options, message):
    with pytest.raises(ConfigError, match=message):
        Encoder(**options)


@pytest.mark.parametrize("texts", ["one string", ["a", 3], None])
def test_encode_takes_a_list_of_strings(texts):
    with pytest.raises(ConfigError, match="list of strings"):
        Encoder(runtime="torch").encode(texts, kind="doc")


def test_a_saved_dense_index_names_the_settings_it_was_built_with(tmp_path):
    from rerank.retrievers.dense import Dense

    Dense(runtime="torch").index(load(str(beir(tmp_path / "c"))).corpus()).save(tmp_path / "idx")
    params = tmp_path / "idx" / "params.json"
    meta = json.loads(params.read_text())
    with pytest.raises(DataError, match=r"was built with encoder=\{.*'max_length': None.*\}, max_length at its default, not "
                                        r"encoder=\{.*'max_length': 32.*\}, max_length=32; construct Dense with the settings"):
        Dense(runtime="torch", max_length=32).read_index(tmp_path / "idx")
    meta["params"]["max_length"] = 32
    params.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="params.json was edited since the index was saved"):
        Dense.load(tmp_path / "idx")


def test_a_dense_index_saved_before_encoders_recorded_their_weights_says_rebuild_it(tmp_path):
    from conftest import resealed

    from rerank.retrievers.dense import Dense

    Dense(runtime="torch").index(load(str(beir(tmp_path / "c"))).corpus()).save(tmp_path / "idx")
    params = tmp_path / "idx" / "params.json"
    meta = json.loads(params.read_text())
    del meta["identity"]["encoder"]["weights"]                              # as an index saved before 2026-12-05
    params.write_text(json.dumps(meta))
    resealed(tmp_path / "idx")
    with pytest.raises(DataError, match="was saved by an earlier rerank, which did not record the encoder's weights stamp; rebuild"):
        Dense(runtime="torch").read_index(tmp_path / "idx")
