"""Dataset registry and loaders on the bundled collections."""

import gzip
import json
import logging

import pytest

from rerank import DataError
from rerank.data import load, names
from rerank.data.bright import BrightDataset
from rerank.io import read_qrels, read_trec_run

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
    with pytest.raises(DataError, match=message):
        load(f"irds:{name}").qrels()


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
