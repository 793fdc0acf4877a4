"""Dataset registry and loaders on the bundled collections."""

import gzip
import json
import logging
import re

import pytest
from test_bad_input import DOCS, QRELS, QUERIES, beir, cli, corpus_lines, qrel_lines, query_lines, refused, table

from rerank import ConfigError, DataError, Ranking
from rerank.bench import Grid
from rerank.data import dataset_dirs, load, names
from rerank.data.bright import BrightDataset
from rerank.evaluate import evaluate
from rerank.io import read_qrels, read_trec_run
from rerank.serve.config import ServeConfig

COUNTS = {  # queries, judged pairs, documents (from each folder's SOURCE.md)
    "scifact": (300, 339, 5183),
    "nfcorpus": (323, 12334, 3162),
    "cranfield": (225, 1837, 1400),
    "trec-dl-2019": (43, 9260, 4297),
    "trec-dl-2020": (54, 11386, 5396),
}


@pytest.mark.parametrize("name", list(COUNTS))
def test_bundled_datasets_have_the_documented_counts(name):
    ds = load(name)
    nq, nqrels, ndocs = COUNTS[name]
    assert len(ds.queries()) == nq
    assert sum(len(v) for v in ds.qrels().values()) == nqrels
    assert len(ds.corpus()) == ndocs
    assert ds.rel_threshold == (2 if name.startswith("trec-dl") else 1)


def test_aliases_and_unknown_names():
    assert load("beir/scifact").name == "scifact" and load("dl19").name == "trec-dl-2019"
    with pytest.raises(DataError, match="did you mean 'scifact'"):
        load("scifakt")
    assert "bright/biology" in names()


def test_beir_folder_by_path_and_missing_corpus(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "hello"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n")
    ds = load(str(tmp_path))
    assert ds.queries()[0].text == "hello"
    with pytest.raises(DataError, match="corpus.jsonl"):
        ds.corpus()
    (tmp_path / "corpus.jsonl").write_text("")
    with pytest.raises(DataError, match="empty"):
        ds.corpus()


def test_partial_beir_sets_load_queries_but_say_the_corpus_is_missing():
    ds = load("fiqa")
    assert len(ds.queries()) == 648
    with pytest.raises(DataError, match="not found"):
        ds.corpus()


def test_malformed_files_raise_clear_errors(tmp_path):
    bad = tmp_path / "q.tsv"
    bad.write_text("1 0 d1 1\n1 0 d2 x y\n")
    with pytest.raises(DataError, match="q.tsv:2"):
        read_qrels(bad)
    bad.write_text("1 Q0 d1 1 notanumber tag\n")
    with pytest.raises(DataError, match="not a number"):
        read_trec_run(bad)
    (tmp_path / "empty.trec").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_trec_run(tmp_path / "empty.trec")
    (tmp_path / "c.jsonl").write_text('{"_id": 1}\n{oops\n')
    from rerank.io import read_jsonl

    with pytest.raises(DataError, match="c.jsonl:2"):
        list(read_jsonl(tmp_path / "c.jsonl"))


def test_trec_dl_run_has_text_and_matches_the_corpus():
    ds = load("trec-dl-2019")
    assert ds.run_names() == ["bm25"]
    run = ds.run("bm25")
    assert len(run) == 4300 and run.to_pandas()["text"].str.len().min() > 0
    with pytest.raises(DataError, match="shipped runs: bm25"):
        ds.run("splade")


def test_bright_bundled_queries_with_a_document_fixture(tmp_path):
    ds = load("bright/biology")
    assert len(ds.queries()) == 103
    with pytest.raises(DataError, match="documents=<local copy of BRIGHT>"):
        ds.corpus()
    gold = sorted({d for docs in ds.qrels().values() for d in docs})[:20]
    docs_dir = tmp_path / "documents"
    docs_dir.mkdir()
    with open(docs_dir / "biology-00000-of-00001.jsonl", "w") as f:
        for i, d in enumerate(gold + ["biology/noise_1.txt"]):
            f.write(json.dumps({"id": d, "content": f"document {i}"}) + "\n")
    ds = load("bright/biology", documents=tmp_path)
    assert len(ds.corpus()) == 21 and ds.docstore[gold[0]].text == "document 0"
    long = load("bright/biology", long=True)
    assert len(long.qrels()) == 103


def test_bright_excluded_ids_and_published_layout(tmp_path):
    ds = load("bright/leetcode")
    excl = ds.exclusions()
    assert len(excl) > 0 and all(isinstance(v, set) for v in excl.values())
    # BRIGHT's published layout: examples/ and documents/ per task (here as jsonl)
    (tmp_path / "examples").mkdir()
    (tmp_path / "documents").mkdir()
    with open(tmp_path / "examples" / "pony.jsonl", "w") as f:
        f.write(json.dumps({"id": "7", "query": "How do I loop in Pony?", "gold_ids": ["pony/loops.txt"],
                            "gold_ids_long": ["N/A"], "excluded_ids": ["pony/x.txt"]}) + "\n")
    with gzip.open(tmp_path / "documents" / "pony.jsonl.gz", "wt") as f:
        for d in ("pony/loops.txt", "pony/x.txt", "pony/y.txt"):
            f.write(json.dumps({"id": d, "content": d}) + "\n")
    pub = BrightDataset.from_published(tmp_path, "pony")
    assert pub.qrels() == {"7": {"pony/loops.txt": 1}} and pub.exclusions() == {"7": {"pony/x.txt"}}
    assert len(pub.corpus()) == 3
    with pytest.raises(DataError, match="long-document"):
        BrightDataset.from_published(tmp_path, "pony", long=True).qrels()
    with gzip.open(tmp_path / "documents" / "pony.jsonl.gz", "wt") as f:  # documents of another release
        f.write(json.dumps({"id": "pony/other.txt", "content": "x"}) + "\n")
    with pytest.raises(DataError, match="none of the 1 judged documents is in the corpus"):
        BrightDataset.from_published(tmp_path, "pony").qrels()


def published(tmp_path, examples: list[dict], fmt: str = "jsonl"):
    """BRIGHT's published layout for task pony with ``examples`` and three documents."""
    import pandas as pd

    (tmp_path / "examples").mkdir(exist_ok=True)
    (tmp_path / "documents").mkdir(exist_ok=True)
    if fmt == "parquet":
        pd.DataFrame(examples).to_parquet(tmp_path / "examples" / "pony.parquet")
    else:
        (tmp_path / "examples" / "pony.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    (tmp_path / "documents" / "pony.jsonl").write_text("".join(json.dumps({"id": d, "content": d}) + "\n" for d in "abc"))
    return BrightDataset.from_published(tmp_path, "pony")


def example(qid="1", query="cats", gold=("a",), excluded=("N/A",)) -> dict:
    return {"id": qid, "query": query, "gold_ids": list(gold), "gold_ids_long": ["N/A"], "excluded_ids": list(excluded)}


def test_bright_examples_from_parquet_keep_every_excluded_id(tmp_path):
    """Review helper-65: parquet gives lists as NumPy arrays, and two or more excluded ids crashed."""
    ds = published(tmp_path, [example(excluded=("b", "c")), example("2", "dogs", ("b",))], "parquet")
    assert ds.qrels() == {"1": {"a": 1}, "2": {"b": 1}} and ds.exclusions() == {"1": {"b", "c"}}


@pytest.mark.parametrize("examples, message", [
    ([example(), example(gold=("b",))], "two different example records have the id '1'"),  # review helper-65: the last one won
    ([{**example(), "gold_ids": '["a",'}], "example 1: '\\[\"a\",' is not a list of ids"),
    ([{**example(), "gold_ids": 5}], "example 1: ids must be a list of strings, got 5"),
    ([{k: v for k, v in example().items() if k != "id"}], "example 1: a record needs a non-empty string 'id'"),
    ([{k: v for k, v in example().items() if k != "query"}], "example 1: 'query' must be a string, got nothing"),
    ([example(excluded=("a",))], "1 queries exclude a document judged relevant to them"),
])
def test_bright_examples_that_would_be_misread_are_refused(tmp_path, examples, message):
    with pytest.raises(DataError, match=message):
        ds = published(tmp_path, examples)
        ds.qrels(), ds.exclusions()


def test_bright_repeats_are_dropped_with_a_count_and_conflicts_refused(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="rerank"):
        assert published(tmp_path, [example(), example()]).qrels() == {"1": {"a": 1}}
    assert "bright/pony: 1 repeated example records dropped" in caplog.text
    folder = tmp_path / "bundled" / "pony"
    (folder / "qrels").mkdir(parents=True)
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "1", "text": "cats"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\ta\t1\n")
    (folder / "excluded_ids.jsonl").write_text(json.dumps({"_id": "1", "excluded_ids": ["b"]}) + "\n"
                                               + json.dumps({"_id": "1", "excluded_ids": []}) + "\n")
    with pytest.raises(DataError, match="excluded_ids.jsonl: two different excluded_ids records have the id '1'"):
        BrightDataset(folder, "bright/pony").exclusions()  # review helper-65: the last one won, dropping b's exclusion


def test_a_corrupt_parquet_file_is_named(tmp_path):
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "pony.parquet").write_bytes(b"PAR1 cut short")
    with pytest.raises(DataError, match="pony.parquet: not a readable parquet file"):
        BrightDataset.from_published(tmp_path, "pony")


def test_ir_datasets_ids_load_from_local_files(tmp_path):
    import ir_datasets

    (tmp_path / "docs.tsv").write_text("d1\tthe cat sat\nd2\tdogs bark\n")
    (tmp_path / "queries.tsv").write_text("q1\tcat\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\n")
    local = ir_datasets.create_dataset(docs_tsv=str(tmp_path / "docs.tsv"), queries_tsv=str(tmp_path / "queries.tsv"),
                                       qrels_trec=str(tmp_path / "qrels.txt"))
    if "rerank-test/local" not in ir_datasets.registry:
        ir_datasets.registry.register("rerank-test/local", local)
    ds = load("irds:rerank-test/local")
    assert [d.docid for d in ds.corpus()] == ["d1", "d2"] and ds.qrels() == {"q1": {"d1": 1}}
    with pytest.raises(DataError, match="no dataset"):
        load("irds:no/such/thing")


@pytest.mark.parametrize("qrels, message", [
    ("q1 0 d1 0.5\n", "could not read qrels .*'0.5'"),  # ir_datasets' own reader refuses it
    ("q1 0 x7 1\n", "none of the 1 judged documents is in the corpus"),
    ("q9 0 d1 1\n", "none of the 1 judged queries is among the 1 queries"),
])
def test_ir_datasets_qrels_go_through_the_same_checks(tmp_path, qrels, message):
    import ir_datasets

    (tmp_path / "docs.tsv").write_text("d1\tthe cat sat\nd2\tdogs bark\n")
    (tmp_path / "queries.tsv").write_text("q1\tcat\n")
    (tmp_path / "qrels.txt").write_text(qrels)
    name = f"rerank-test/bad-{abs(hash(qrels))}"
    if name not in ir_datasets.registry:
        ir_datasets.registry.register(name, ir_datasets.create_dataset(
            docs_tsv=str(tmp_path / "docs.tsv"), queries_tsv=str(tmp_path / "queries.tsv"), qrels_trec=str(tmp_path / "qrels.txt")))
    with pytest.raises(DataError, match=message) as refused:
        load(f"irds:{name}").qrels()
    assert "Offline" not in str(refused.value)  # review helper-65: a bad record is not a missing download


@pytest.mark.parametrize("docs, queries, message", [
    ("d1\tthe cat sat\nd2 \tdogs bark\n", "q1\tcat\n", "docs: docid 'd2 ' is empty or starts or ends with whitespace"),
    ("d1\tthe cat sat\nd2\tdogs bark\n", "q1\tcat\n q2\tdog\n", "1 query ids are not strings, are empty or start or end with whitespace"),
])
def test_ir_datasets_ids_are_checked_as_files_are(tmp_path, docs, queries, message):
    """Review helper-65: a docid with whitespace around it loaded from ir_datasets (BEIR files refuse it)."""
    import ir_datasets

    (tmp_path / "docs.tsv").write_text(docs)
    (tmp_path / "queries.tsv").write_text(queries)
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\n")
    name = f"rerank-test/ids-{abs(hash(docs + queries))}"
    if name not in ir_datasets.registry:
        ir_datasets.registry.register(name, ir_datasets.create_dataset(
            docs_tsv=str(tmp_path / "docs.tsv"), queries_tsv=str(tmp_path / "queries.tsv"), qrels_trec=str(tmp_path / "qrels.txt")))
    with pytest.raises(DataError, match=message):
        ds = load(f"irds:{name}")
        ds.queries(), ds.corpus()


def test_ir_datasets_pairs_judged_twice_keep_their_highest_grade(tmp_path, caplog):
    import ir_datasets

    (tmp_path / "docs.tsv").write_text("d1\tthe cat sat\nd2\tdogs bark\n")
    (tmp_path / "queries.tsv").write_text("q1\tcat\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\nq1 1 d1 2\nq1 0 d2 0\n")  # two rounds judge d1
    if "rerank-test/rounds" not in ir_datasets.registry:
        ir_datasets.registry.register("rerank-test/rounds", ir_datasets.create_dataset(
            docs_tsv=str(tmp_path / "docs.tsv"), queries_tsv=str(tmp_path / "queries.tsv"), qrels_trec=str(tmp_path / "qrels.txt")))
    with caplog.at_level(logging.WARNING):
        assert load("irds:rerank-test/rounds").qrels() == {"q1": {"d1": 2, "d2": 0}}
    assert "1 repeated judgments of a (query, document) pair; each pair keeps its highest grade" in caplog.text


# -- ids with spaces, ambiguous files, numbers, shadowed names, TOML byte-order marks ------------------
def spaced(folder, docid="d 9", qid="q4"):
    """The test collection with d8 renamed ``docid`` and q4 renamed ``qid`` (in the corpus, queries and qrels)."""
    docs = [(docid if d == "d8" else d, t, x) for d, t, x in DOCS]
    queries = [(qid if q == "q4" else q, t) for q, t in QUERIES]
    qrels = [(qid if q == "q4" else q, docid if d == "d8" else d, r) for q, d, r in QRELS]
    return beir(folder, corpus=corpus_lines(docs), queries=query_lines(queries), qrels=qrel_lines(qrels))


def test_beir_qrels_are_split_at_tabs_so_ids_may_hold_spaces(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RERANK_CACHE", str(tmp_path / "cache"))
    qrels = tmp_path / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq 5\td 9\t1\r\nq1\td1\t2\n")
    assert read_qrels(qrels) == {"q 5": {"d 9": 1}, "q1": {"d1": 2}}
    qrels.write_text("q 5\t0\td 9\t1\r\nq1\t0\td1\t2\n")  # TREC's four fields, at tabs
    assert read_qrels(qrels) == {"q 5": {"d 9": 1}, "q1": {"d1": 2}}
    qrels.write_text("q1 0 d1 1\nq1  0\td2 2\nq1 0 d3\t1\n")   # TREC lines, and lines mixing tabs and spaces, split at whitespace
    assert read_qrels(qrels) == {"q1": {"d1": 1, "d2": 2, "d3": 1}}
    qrels.write_text("q1\t\td1\t1\nq1\td2 \t2\nq 2\t\td 2\t\t1\n")   # runs of tabs are one; spaces around a field go
    assert read_qrels(qrels) == {"q1": {"d1": 1, "d2": 2}, "q 2": {"d 2": 1}}
    args = ("eval", "--pipeline", "bm25", "--metrics", "ndcg@10", "recall@100", "--dataset")
    code, want, _ = cli(capsys, *args, str(spaced(tmp_path / "plain", docid="d9", qid="q5")))
    code_spaced, got, _ = cli(capsys, *args, str(spaced(tmp_path / "spaced", docid="d 9", qid="q 5")))
    assert code == code_spaced == 0 and table(got) == table(want)


def test_run_files_are_not_written_with_ids_that_hold_whitespace(tmp_path, capsys, monkeypatch, caplog):
    monkeypatch.setenv("RERANK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    args = ("eval", "--dataset", str(spaced(tmp_path / "c")), "--pipeline", "bm25", "--metrics", "ndcg@10")
    with caplog.at_level(logging.WARNING, logger="rerank"):
        code, saved, _ = cli(capsys, *args, "--save-runs", str(out))
    assert code == 0 and table(saved) == table(cli(capsys, *args)[1])     # the results stand; only the run file is not kept
    assert "c is not saved, and will run again: " in caplog.text and "(e.g. 'd 9')" in caplog.text
    assert not list(out.rglob("*.trec")) and [p.name for p in out.rglob("*.json")] == ["report.json"]  # no cell record
    with pytest.raises(DataError, match="a query id that is empty or holds whitespace \\(e.g. 'q 1'\\)"):
        Ranking.from_records([("q 1", "x", "d1", 1.0)]).write_trec(tmp_path / "r.trec")
    (tmp_path / "r.trec").write_text("q1\tQ0\td 9\t1\t2.5\tt\n")   # such a line does not read as 6 fields either
    with pytest.raises(DataError, match="r.trec:1: expected 6 fields"):
        read_trec_run(tmp_path / "r.trec")


@pytest.mark.parametrize("stem", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_a_plain_and_a_gzip_copy_of_one_file_are_refused(tmp_path, capsys, stem):
    folder = beir(tmp_path / "c")
    (folder / f"{stem}.gz").write_bytes(gzip.compress((folder / stem).read_bytes()))
    line = refused(capsys, "eval", "--dataset", str(folder), "--pipeline", "bm25")
    assert f"both {folder / stem} and {folder / stem}.gz exist; remove one" in line


def test_a_shipped_run_in_two_files_is_refused(tmp_path):
    folder = beir(tmp_path / "c")
    for name in ("run.bm25.trec", "run.bm25.top10.trec"):
        (folder / name).write_text("q1 Q0 d1 1 2.5 t\n")
    with pytest.raises(DataError, match="run 'bm25' has 2 files \\(run.bm25.top10.trec, run.bm25.trec\\); remove all but one"):
        load(str(folder)).run("bm25")
    (folder / "run.bm25.top10.trec").rename(folder / "run.bm25.trec.bak")  # review helper-65: a backup was a second file
    assert load(str(folder)).run_names() == ["bm25"] and len(load(str(folder)).run("bm25")) == 1


@pytest.mark.parametrize("text", ["1_000", "١٢", "１２", "0x10", "1e", ".", "--1", "1.5.2"])
def test_run_scores_and_grades_are_plain_decimal_numbers(tmp_path, text):
    (tmp_path / "r.trec").write_text(f"q1 Q0 d1 1 2.5 t\nq1 Q0 d2 2 {text} t\n")
    with pytest.raises(DataError, match=f"r.trec:2: score '{re.escape(text)}' is not a number; write plain decimal digits"):
        read_trec_run(tmp_path / "r.trec")
    (tmp_path / "q.txt").write_text(f"q1\t0\td1\t1\nq1\t0\td2\t{text}\n")
    with pytest.raises(DataError, match=f"q.txt:2: relevance '{re.escape(text)}' is not a number; write whole numbers"):
        read_qrels(tmp_path / "q.txt")
    with pytest.raises(DataError, match=f"relevance '{re.escape(text)}' is not a number"):   # qrels given in Python, as text
        evaluate(Ranking.from_records([("q1", "", "d1", 1.0)]), {"q1": {"d1": text}}, ["mrr@10"])


def test_plain_decimal_numbers_pass_and_nan_and_infinity_keep_their_messages(tmp_path):
    (tmp_path / "r.trec").write_text("q1 Q0 d1 1 +2.5 t\nq1 Q0 d2 2 -1e-3 t\nq1 Q0 d3 3 .5 t\nq1 Q0 d4 4 7. t\n")
    assert read_trec_run(tmp_path / "r.trec") == {"q1": {"d1": 2.5, "d2": -0.001, "d3": 0.5, "d4": 7.0}}
    (tmp_path / "q.txt").write_text("q1 0 d1 +1\nq1 0 d2 2.0\nq1 0 d3 1e1\n")
    assert read_qrels(tmp_path / "q.txt") == {"q1": {"d1": 1, "d2": 2, "d3": 10}}
    for text in ("NaN", "infinity", "-Infinity", "+inf", "1e999"):
        (tmp_path / "r.trec").write_text(f"q1 Q0 d1 1 {text} t\n")
        with pytest.raises(DataError, match=f"r.trec:1: score '{re.escape(text)}' is not a finite number"):
            read_trec_run(tmp_path / "r.trec")
        (tmp_path / "q.txt").write_text(f"q1 0 d1 {text}\n")
        with pytest.raises(DataError, match=f"q.txt:1: relevance '{re.escape(text)}' is not an integer grade"):
            read_qrels(tmp_path / "q.txt")


def test_a_folder_named_like_a_bundled_dataset_is_named_in_one_warning(tmp_path, capsys, monkeypatch, caplog):
    monkeypatch.setenv("RERANK_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    beir(tmp_path / "scifact")
    with caplog.at_level(logging.WARNING, logger="rerank"):
        code, out, _ = cli(capsys, "eval", "--dataset", "scifact", "--pipeline", "bm25", "--limit", "1", "--metrics", "recall@100")
    assert code == 0 and "## scifact" in out  # the bundled SciFact: the name wins
    warnings = [r.getMessage() for r in caplog.records if "bundled dataset" in r.getMessage()]
    assert warnings == [f"'scifact' is the bundled dataset 'scifact'; the folder {tmp_path / 'scifact'} of that name "
                        "is not read (to read it, give its path: --dataset ./scifact)"]
    assert len(load("./scifact").corpus()) == len(DOCS)
    caplog.clear()
    monkeypatch.chdir(next(d for d in dataset_dirs() if (d / "scifact").is_dir()))   # the bundled folder itself
    with caplog.at_level(logging.WARNING, logger="rerank"):
        load("scifact")
    assert "bundled dataset" not in caplog.text


BOM = "\ufeff"


def test_toml_files_may_start_with_a_byte_order_mark(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RERANK_CACHE", str(tmp_path / "cache"))
    folder = beir(tmp_path / "c")
    pipelines = tmp_path / "p.toml"
    pipelines.write_text(f'{BOM}[pipelines]\n"BM 25" = "bm25"\n', encoding="utf-8")
    code, out, err = cli(capsys, "eval", "--dataset", str(folder), "--pipelines", str(pipelines), "--metrics", "recall@100")
    assert code == 0 and table(out)[1][0] == "BM 25", err
    grid = tmp_path / "g.toml"
    grid.write_text(f'{BOM}[grid]\nlimit = 2\ndatasets = ["{folder}"]\n[pipelines]\nb = "bm25"\n', encoding="utf-8")
    assert Grid.read(grid).pipelines == {"b": "bm25"} and Grid.read(grid).limit == 2
    serve = tmp_path / "s.toml"
    serve.write_text(f"{BOM}[serve]\nport = 8123\n", encoding="utf-8")
    assert ServeConfig.from_toml(serve).port == 8123
    serve.write_text(f"{BOM}[serve]\nbogus = 1\n", encoding="utf-8")   # read past the mark, through the CLI
    assert "unknown serve setting(s) ['bogus']" in refused(capsys, "serve", "--config", str(serve))
    serve.write_bytes(b"[serve]\nport = 1\xff\n")
    with pytest.raises(ConfigError, match="s.toml: not UTF-8 text"):
        ServeConfig.from_toml(serve)
    with pytest.raises(ConfigError, match="cannot read it"):
        ServeConfig.from_toml(tmp_path / "missing.toml")


def test_a_dataset_reads_its_files_once_and_is_freed_when_dropped(tmp_path):
    """Its memo lives on the object (functools.cache on a method kept every dataset alive) and is not
    pickled: a copy sent to a worker reads the files again."""
    import gc
    import pickle
    import weakref

    ds = load(str(beir(tmp_path / "c")))
    assert ds.corpus() is ds.corpus() and ds.qrels() is ds.qrels()
    copy = pickle.loads(pickle.dumps(ds))
    assert "_memo" not in copy.__dict__ and copy.corpus() == ds.corpus()
    alive = weakref.ref(ds)
    del ds, copy
    gc.collect()
    assert alive() is None
