"""Bad input to the Python API on one's own documents, found by a new-user review: each is a
ConfigError or DataError naming the problem, or a counted repair; never a silent wrong answer or an
error from deep inside pandas, pyarrow or a tokenizer.
"""

from __future__ import annotations

import logging

import pandas as pd
import pytest

import rerank
from rerank import ConfigError, Cutoff, DataError, Doc, Ranking
from rerank.rerankers.biencoder import BiEncoderReranker
from rerank.rerankers.cross_encoder import CrossEncoderReranker
from rerank.rerankers.e2rank import E2Rank
from rerank.retrievers.bm25 import BM25
from rerank.retrievers.dense import Dense
from rerank.types import RankedResults, Result

DOCS = [Doc("d1", "The cat sat on the mat"), Doc("d2", "A kitten is a young cat"), Doc("d3", "Stocks fell sharply")]
HALF = "\ud800"  # half of a surrogate pair: no character, no UTF-8


@pytest.fixture(autouse=True)
def index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bm25():
    return BM25().index(DOCS)


# -- queries ----------------------------------------------------------------------------------------
def test_a_query_without_text_is_refused_by_every_stage_that_reads_it(bm25, tmp_path):
    with pytest.raises(DataError, match=r"^BM25\(\): query 'q1' has no text \(queries without text: 1 of 2\); give each "
                                         r"query a text, or leave it out$"):  # not a run file's hint (review helper-80)
        (bm25 >> BiEncoderReranker())({"q1": "", "q2": "cat"})  # q1 used to vanish from the output
    (tmp_path / "run.trec").write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 d3 2 1.0 x\n")
    run = Ranking.read_trec(tmp_path / "run.trec").assign(text=["cat", "stocks"])  # no queries given: no query text
    with pytest.raises(DataError, match=r"needs its queries: Ranking.read_trec\(path, queries=...\)"):
        BiEncoderReranker()(run)
    assert len(Cutoff(1)(Ranking.read_trec(tmp_path / "run.trec"))) == 1  # a cut-off does not read the query
    reranked = BiEncoderReranker()(Ranking.read_trec(tmp_path / "run.trec", queries={"q1": "stocks"}).assign(text=["cat", "stocks"]))
    assert reranked.to_pandas()["docid"].tolist() == ["d3", "d1"]


@pytest.mark.parametrize("call", [
    lambda s: s.search(f"cat {HALF}"),
    lambda s: s({"q1": f"cat {HALF}"}),
    lambda s: BiEncoderReranker().rerank(f"cat {HALF}", ["a cat"]),
])
def test_a_query_with_half_a_surrogate_pair_is_refused(bm25, call):
    with pytest.raises(DataError, match="half of a surrogate pair, which is no character"):
        call(bm25)


# -- documents ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("doc, message", [
    (Doc("", "cat"), "docid '' is empty or starts or ends with whitespace"),
    (Doc(" a b ", "cat"), "docid ' a b ' is empty or starts or ends with whitespace"),
    (Doc("a", f"caf\u00e9 {HALF} x"), "the text of document 'a' holds half of a surrogate pair"),
    (Doc("a", "cat", f"T{HALF}"), "the title of document 'a' holds half of a surrogate pair"),
    (Doc(f"a{HALF}", "cat"), "the docid of document"),
])
def test_documents_that_run_files_or_utf_8_cannot_hold_are_refused_when_indexed_or_reranked(doc, message):
    with pytest.raises(DataError, match=message):
        BM25().index([doc, Doc("z", "dogs")])
    with pytest.raises(DataError, match=message):
        BiEncoderReranker().rerank("cat", [doc])


def test_dense_counts_the_documents_it_embeds_from_their_start_only(caplog):
    with caplog.at_level(logging.WARNING, logger="rerank"):
        Dense().index([Doc("long", "cat " * 2000), Doc("short", "dog")])
    assert "1 of 2 documents exceed 256 tokens; each is embedded from its first 256" in caplog.text


# -- calling stages ---------------------------------------------------------------------------------
def test_transform_takes_what_a_call_takes(bm25):
    """PyTerrier's name for running a stage: a DataFrame, {qid: text} or an empty query set, as a call."""
    frame = pd.DataFrame({"qid": ["q1"], "query": ["cat"]})
    assert bm25.transform(frame).to_pandas()["docid"].tolist() == bm25(frame).to_pandas()["docid"].tolist()
    assert len(bm25.transform({"q1": "cat"})) == 2 and len(bm25.transform(Ranking.from_queries({}))) == 0
    assert len((bm25 % 1).transform({"q1": "cat"})) == 1 and len((bm25 | bm25).transform({"q1": "cat"})) == 2
    with pytest.raises(DataError, match="needs columns"):
        BiEncoderReranker().transform(frame.assign(docid="d1", score=1.0))


@pytest.mark.parametrize("call", [
    lambda: BiEncoderReranker().search("cat"), lambda: (BiEncoderReranker() % 2).search("cat"),
    lambda: BiEncoderReranker().transform(pd.DataFrame({"qid": ["q1"], "query": ["cat"]})),
])
def test_a_reranker_given_queries_only_asks_for_a_retriever_in_front(call):
    """It reported missing docid and text columns (review helper-80)."""
    with pytest.raises(DataError, match=r"^BiEncoderReranker\(\) reranks candidates and was given queries only; put a "
                                        r"retriever in front \(bm25 >> reranker\) or call reranker.rerank\(query, docs\)$"):
        call()


def test_asking_a_retriever_for_more_than_its_num_results(caplog, monkeypatch):
    import rerank.stage

    monkeypatch.setattr(rerank.stage, "_WARNED", set())  # warned once per process
    many = BM25().index([Doc(f"d{i}", f"cat number {i}") for i in range(30)])
    assert len(BM25(num_results=10).index(many.docs).search("cat", k=20)) == 20  # search(k) retrieves k
    with caplog.at_level(logging.WARNING, logger="rerank"):
        assert len((BM25(num_results=10).index(many.docs) % 20)({"q": "cat"})) == 10
        assert len((BM25(num_results=10).index(many.docs) % 20)({"q": "number"})) == 10
    assert caplog.text.count("retrieves at most its num_results=10 per query, fewer than the cut-off 20 keeps") == 1  # helper-74: once a run
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rerank"):  # a later retriever rescores all it is given: no limit applies
        assert len((many % 20 >> BM25(num_results=10).index(many.docs) % 15)({"q": "cat"})) == 15
    assert "num_results" not in caplog.text


def test_pipeline_loads_a_dataset_given_by_name_and_refuses_other_objects():
    assert len(rerank.pipeline("bm25 % 3", "scifact").search("vitamin D", k=3)) == 3
    for wrong in (DOCS, 5):
        with pytest.raises(ConfigError, match="dataset must be a Dataset, a dataset name, a BEIR folder or irds:<id>"):
            rerank.pipeline("bm25", wrong)


@pytest.mark.parametrize("make, message", [
    (lambda: BiEncoderReranker(batch_size="8"), "BiEncoderReranker: batch_size must be an integer, got '8'"),
    (lambda: CrossEncoderReranker(batch_size=True), "CrossEncoderReranker: batch_size must be an integer, got True"),
    (lambda: E2Rank(num_input_docs=0), "E2Rank: num_input_docs must be >= 1, got 0"),
])
def test_reranker_arguments_are_checked_in_python_as_in_expressions(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


# -- rankings and results ---------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0, -1, 1.5, True, "2"])
def test_top_k_must_be_a_positive_integer(k):
    run = Ranking.from_records([("q", "cat", "d1", 2.0), ("q", "cat", "d2", 1.0)])
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        run.top(k)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        RankedResults("cat", [Result("d1", 2.0, 1), Result("d2", 1.0, 2)]).top_k(k)


def test_select_takes_a_collection_of_query_ids():
    run = Ranking.from_records([("q1", "cat", "d1", 2.0)])
    with pytest.raises(ConfigError, match=r"select takes a collection of query ids, got str 'q1'; for one query give \[qid\]"):
        run.select("q1")  # was read letter by letter: an empty Ranking
    assert len(run.select(["q1"])) == 1


@pytest.mark.parametrize("score", ["١٢", "1_000", True, " 2 "])
def test_scores_given_as_text_follow_the_plain_number_rule_of_run_files(score):
    with pytest.raises(DataError, match="a Ranking's scores must be numbers"):
        Ranking.from_records([("q", "cat", "d1", score), ("q", "cat", "d2", 3.0)])
    assert Ranking.from_records([("q", "cat", "d1", "1.5e0")]).to_dict() == {"q": {"d1": 1.5}}


# -- document forms ---------------------------------------------------------------------------------
def test_documents_may_be_given_as_beir_dicts_pyserini_dicts_tuples_or_a_dataframe():
    forms = {
        "beir": [{"_id": "d1", "title": "Cats", "text": "The cat sat"}, {"_id": 2, "title": None, "text": "Stocks fell"}],
        "pyserini": [{"id": "d1", "contents": "Cats The cat sat"}, {"id": "2", "contents": "Stocks fell"}],
        "frame": pd.DataFrame({"docid": ["d1", "2"], "title": ["Cats", ""], "text": ["The cat sat", "Stocks fell"]}),
    }
    for name, docs in forms.items():
        index = BM25().index(docs)
        assert [d.docid for d in index.docs] == ["d1", "2"] and index.search("cat", k=1).docids == ["d1"], name
    ranked = BiEncoderReranker().rerank("a cat", [("d1", "The cat sat"), {"docid": "d2", "text": "Stocks fell"}])
    assert ranked.docids == ["d1", "d2"]


@pytest.mark.parametrize("doc, message", [
    ({"_id": "d1", "docid": "d1", "text": "x"}, "a document dict needs one id key"),
    ({"_id": "d1", "body": "x"}, "a document dict needs one id key .* and one text key \\(text, contents\\); got keys \\['_id', 'body'\\]"),
    ({"_id": True, "text": "x"}, "docid must be a string, got bool"),
    ({"_id": "d1", "text": float("nan")}, "text must be a string, got float nan"),
])
def test_document_dicts_that_could_be_misread_are_refused(doc, message):
    with pytest.raises(ConfigError, match=message):
        BM25().index([doc])


# -- a dataset made in Python -------------------------------------------------------------------------
def test_your_own_documents_queries_and_qrels_make_a_dataset_for_experiments(tmp_path):
    from ranx import Qrels

    from rerank.data import InMemoryDataset
    from rerank.types import Qrel

    corpus = [{"_id": "d1", "title": "Cats", "text": "cats purr"}, {"_id": "d2", "text": "dogs bark"}, {"_id": "d3", "text": "fish swim"}]
    queries = {"q1": "cats", "q2": "dogs"}
    judged = pd.DataFrame({"qid": ["q1", "q2"], "docno": ["d1", "d3"], "label": [1, 1]})  # PyTerrier's columns
    ds = InMemoryDataset("mine", corpus, queries, judged)
    corpus.append({"_id": "d4", "text": "late"})  # copied: no effect
    assert len(ds.corpus()) == 3 and ds.qrels() == {"q1": {"d1": 1}, "q2": {"d3": 1}}
    report = rerank.Experiment({"bm25": "bm25", "bm25 % 1": "bm25 % 1"}, ds, ["mrr@10"], save_dir=tmp_path / "out").run()
    assert report.table("mine").at["bm25", "mrr@10"] == 0.5  # q2's d3 shares no word with it: not retrieved
    run = rerank.pipeline("bm25", ds)(ds.topics())
    for qrels in ([Qrel("q1", "d1", 1)], [("q1", "d1", 1)], Qrels({"q1": {"d1": 1}}), judged.iloc[:1],
                  Qrels({"q1": {"d1": 1}}).to_dataframe()):   # ranx's frame names its qids q_id (review helper-90)
        assert rerank.evaluate(run, qrels, ["mrr@10"]) == {"mrr@10": 1.0}


def test_an_experiment_refuses_a_retriever_indexed_on_other_documents_than_the_datasets():
    from rerank.data import InMemoryDataset

    queries, qrels = {"q1": "cats"}, [("q1", "d1", 1)]
    mine = InMemoryDataset("mine", [("d1", "cats purr"), ("d2", "dogs bark"), ("d3", "fish swim")], queries, qrels)
    other = InMemoryDataset("other", [("d1", "stock report"), ("d2", "cats purr"), ("d3", "rain")], queries, qrels)
    systems = {"whole": BM25().index(mine.corpus()), "part": BM25().index(mine.corpus()[:2])}
    report = rerank.Experiment(systems, [mine, other], ["mrr@10"]).run()
    assert report.table("mine").at["whole", "mrr@10"] == 1.0
    failed = {key: c.error for key, c in report.cells.items() if not c.ok}
    assert set(failed) == {("mine", "part"), ("other", "whole"), ("other", "part")}
    assert "BM25() holds an index of 3 documents that are not other's corpus" in failed["other", "whole"]
    assert "index it on this dataset's corpus" in failed["mine", "part"]
    shuffled = BM25().index(mine.corpus()[::-1])  # the same documents in another order: the same results
    wrong = Dense().index(other.corpus())
    shared = {"reordered": shuffled, "bad": shuffled % 2 >> wrong, "good": shuffled % 2 >> Dense().index(mine.corpus())}
    report = rerank.Experiment(shared, mine, ["mrr@10"]).run()  # "bad" and "good" share the prefix shuffled % 2
    assert {key[1] for key, c in report.cells.items() if not c.ok} == {"bad"}
    assert report.table("mine").at["good", "mrr@10"] == 1.0


def test_saved_bm25_settings_compare_resolved_and_large_files_are_sealed_by_samples(tmp_path, monkeypatch):
    from rerank.retrievers.base import Retriever

    docs = [("d1", "cats purr"), ("d2", "dogs bark"), ("d3", "fish swim")]
    BM25().index(docs).save(tmp_path / "ix")
    assert BM25(k1=0.9, b=0.4).read_index(tmp_path / "ix").search("cats").docids == ["d1"]  # the defaults, written out
    monkeypatch.setattr("rerank.index_cache.SAMPLED_ABOVE", 16)
    monkeypatch.setattr("rerank.index_cache.SAMPLE", 8)
    BM25().index(docs).save(tmp_path / "big")
    assert json_of(tmp_path / "big" / "params.json")["files"]["vocab.json"].startswith("sampled:")
    vocab = tmp_path / "big" / "vocab.json"
    vocab.write_text(vocab.read_text().replace("cat", "dog"))
    with pytest.raises(DataError, match="vocab.json changed since the index was saved"):
        Retriever.load(tmp_path / "big")


def json_of(path):
    import json

    return json.loads(path.read_text())


def test_stored_embeddings_are_lent_only_for_the_documents_they_embed():
    dense = Dense().index([("d1", "cats purr"), ("d2", "dogs bark")])
    # a cut text is the same document, but not the text embedded: its vector is not lent (review helper-64)
    assert set(dense.embeddings_for(["d1", "d2"], ["cats purr", "dogs"])) == {"d1"}
    assert set(dense.embeddings_for(["d2", "unknown"])) == {"d2"}  # without texts: every indexed docid
    with pytest.raises(DataError, match="candidate 'd2' comes with another text than the index holds"):
        dense.embeddings_for(["d1", "d2"], ["cats purr", "stock report"])


def test_a_retriever_rescoring_candidates_of_another_corpus_refuses_them():
    mine = BM25().index([("d1", "the cat sat"), ("d2", "dogs bark at cats"), ("d3", "birds sing")])
    other = BM25(k1=1.1).index([("d1", "stock report"), ("d2", "rain"), ("d3", "cat food review")])
    with pytest.raises(DataError, match="candidate 'd1' of query 'q' comes with another text than the index holds"):
        (mine % 2 >> other)({"q": "cat"})
    same = BM25(k1=1.1).index([("d1", "the cat sat"), ("d2", "dogs bark at cats"), ("d3", "birds sing")])
    assert (mine % 2 >> same)({"q": "cat"}).to_pandas()["docid"].tolist() == ["d1", "d2"]


@pytest.mark.parametrize("corpus, queries, qrels, error, message", [
    ([], {"q1": "x"}, [("q1", "d1", 1)], DataError, "the corpus is empty"),
    ([("d1", "a"), ("d1", "b")], {"q1": "x"}, [("q1", "d1", 1)], DataError, "two different document records have the id 'd1'"),
    ([("d1", "a")], {"q1": ""}, [("q1", "d1", 1)], DataError, "1 queries have empty text"),
    ([("d1", "a")], {"q1": "x"}, [("q1", "d9", 1)], DataError, "none of the 1 judged documents is in the corpus"),
    ([("d1", "a")], {"q1": "x"}, [("q1", "d1", 0.5)], DataError, "relevance 0.5 is not an integer grade"),
    ([("d1", "a")], {"q1": "x"}, [("q1", "d1", float("nan"))], DataError, "relevance nan is not an integer grade"),
    ([("d1", "a")], {"q1": "x"}, [("q1", "d1", 1), ("q1", "d1", 2)], ConfigError, "judged twice, 1 and 2"),
    ([("d1", "a")], {"q1": "x"}, [(True, "d1", 1)], ConfigError, "a judgment is \\(qid, docid, relevance\\) with string ids"),
    ([("d1", "a")], "q1 x", [("q1", "d1", 1)], ConfigError, "queries must be a list of records or a DataFrame, got str"),
    ("d1 a", {"q1": "x"}, [("q1", "d1", 1)], ConfigError, "corpus must be a list of records or a DataFrame, got str"),
    ([("d1", "a")], {"q1": "x", "q2 ": "y"}, [("q1", "d1", 1)], DataError, "1 query ids are not strings, are empty or start or end"),
    ([("d1", "a")], {"q1": "x", "": "y"}, [("q1", "d1", 1)], DataError, "1 query ids are not strings, are empty"),
])
def test_a_dataset_made_in_python_is_checked_as_files_are(corpus, queries, qrels, error, message):
    from rerank.data import InMemoryDataset

    with pytest.raises(error, match=message):
        InMemoryDataset("mine", corpus, queries, qrels)


def test_results_as_a_dataframe_and_by_a_whole_number_qid(bm25):
    frame = bm25.search("cat", k=2).to_pandas()
    assert list(frame.columns) == ["query", "docid", "score", "rank", "text", "title"] and frame["rank"].tolist() == [1, 2]
    assert bm25({7: "cat"}).results(7).docids == bm25.search("cat").docids
    assert list(RankedResults("cat", []).to_pandas().columns) == ["query", "docid", "score", "rank", "text", "title"]


def test_more_inputs_that_would_be_misread(bm25, tmp_path):
    from rerank.data import InMemoryDataset

    with pytest.raises(ConfigError, match="mine: rel_threshold must be an integer from 1 to 1,000,000,000, got 0"):
        InMemoryDataset("mine", [("d1", "a")], {"q1": "x"}, [("q1", "d1", 1)], rel_threshold=0)
    for wrong in (0, -3, "abc", None, 1.5):
        with pytest.raises(ConfigError, match="num_results must be a positive integer"):
            bm25.with_num_results(5).num_results = wrong
    with pytest.raises(ConfigError, match="top\\(k\\) cuts ranked documents; this Ranking is a query set"):
        Ranking.from_queries({"q1": "x"}).top(1)
    frame = pd.DataFrame({"docno": ["1", "2"], "text": ["cats purr", "dogs bark"], "title": ["Cats", None]})  # PyTerrier's
    assert [(d.docid, d.title) for d in BM25().index(frame).docs] == [("1", "Cats"), ("2", "")]     # None: NaN in pandas


def test_frames_that_a_ranking_would_misread_review_helper_72(caplog):
    both = pd.DataFrame({"qid": ["q1"], "query": ["cats"], "doc_id": ["d1"], "docno": ["d2"], "score": [1.0]})
    with pytest.raises(DataError, match="columns must have distinct names; \\['docid'\\] repeat"):  # a raw pandas error
        Ranking.from_pandas(both)
    topics = pd.concat([pd.DataFrame({"qid": ["q1"], "query": ["cats"]}), pd.DataFrame({"qid": ["q2", "q1"], "query": ["dogs", "cats"]})])
    assert Ranking(topics).to_pandas()["qid"].tolist() == ["q1", "q2"]  # repeated index labels: 3 rows came out
    tied = pd.DataFrame({"qid": ["q"] * 3, "query": ["a"] * 3, "docid": ["d1", "d2", "d3"], "score": [0.0] * 3, "rank": [3, 1, 2]})
    assert Ranking.from_pandas(tied).to_pandas()["docid"].tolist() == ["d2", "d3", "d1"]  # equal scores: the given ranks
    mixed = pd.DataFrame({"qid": [7, "7"], "query": ["a", "a"], "docid": ["a", "b"], "score": [1.0, 1.0], "rank": [2, 1]})
    assert Ranking.from_pandas(mixed).to_pandas()["docid"].tolist() == ["b", "a"]  # 7 and "7" are one query (helper-77)
    with pytest.raises(DataError, match="needs columns .* missing \\['qid'\\]"):  # not a raw KeyError (helper-77)
        Ranking.from_pandas(tied.drop(columns="qid"))
    distance = pd.DataFrame({"qid": ["q"] * 2, "query": ["a"] * 2, "docid": ["near", "far"], "score": [0.1, 0.9], "rank": [1, 2]})
    with caplog.at_level(logging.WARNING, logger="rerank"):
        assert Ranking.from_pandas(distance).to_pandas()["docid"].tolist() == ["far", "near"]
    assert "1 queries have a rank column that disagrees with their scores" in caplog.text
    for odd, named in (([False, True, True], "False"), (["1", "x", "3"], "'x'")):   # helper-78: False and True were
        with pytest.raises(DataError, match=f"^a Ranking's rank column must be numbers; {named} is not"):  # ranks 0 and 1
            Ranking.from_pandas(tied.assign(rank=odd))
    assert Ranking.from_pandas(tied.assign(rank=["3", "1", "2"])).to_pandas()["docid"].tolist() == ["d2", "d3", "d1"]
    with pytest.raises(DataError, match="^a Ranking's scores must be numbers; (True|False) is not"):   # as before
        Ranking.from_pandas(tied.assign(score=[True, False, True]))


def test_a_pyterrier_frame_given_to_ranking_is_not_read_as_a_query_set():
    frame = pd.DataFrame({"qid": ["q1"], "query": ["cats"], "docno": ["d1"], "score": [1.0]})
    with pytest.raises(DataError, match="this frame has PyTerrier's docno: read it with Ranking.from_pandas"):
        Ranking(frame)
    assert len(Ranking.from_pandas(frame)) == 1


def test_a_pyterrier_result_frame_is_not_read_by_its_internal_docids():
    """review helper-90: PyTerrier's results hold docid (the index's internal number) beside docno (the
    document's id); from_pandas read docid as the id, so evaluate() scored 0.0 without a word."""
    from rerank.data import load

    ds = load("scifact")
    judged = [(q, sorted(docs)[0]) for q, docs in ds.qrels().items()][:5]
    res = pd.DataFrame({"qid": [q for q, _ in judged], "docid": range(5), "docno": [d for _, d in judged],
                        "rank": [0] * 5, "score": [1.0] * 5, "query": ["x"] * 5})
    for read in (Ranking.from_pandas, Ranking):
        with pytest.raises(DataError, match="both docid and docno columns, two ids for each document .* "
                                            "Ranking.from_pandas\\(frame.drop\\(columns='docid'\\)\\)"):
            read(res)
    run = Ranking.from_pandas(res.drop(columns="docid"))
    assert rerank.evaluate(run, {q: ds.qrels()[q] for q, _ in judged}, ["hit_rate@1"]) == {"hit_rate@1": 1.0}
