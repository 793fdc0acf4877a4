"""Evaluator: published numbers of the shipped TREC-DL BM25 runs, thresholds, comparisons."""

import pytest

from rerank import ConfigError, DataError, Experiment, Ranking, evaluate
from rerank.data import load
from rerank.evaluate import evaluate_per_query
from rerank.retrievers.run import RunRetriever


@pytest.mark.parametrize("name, ndcg", [("trec-dl-2019", 0.5058), ("trec-dl-2020", 0.4796)])
def test_shipped_bm25_runs_give_the_published_ndcg(name, ndcg):
    ds = load(name)
    assert evaluate(ds.run("bm25"), ds, ["ndcg@10"])["ndcg@10"] == pytest.approx(ndcg, abs=5e-5)


def test_trec_dl_binary_measures_use_relevance_two():
    ds = load("trec-dl-2019")
    run = ds.run("bm25")
    strict = evaluate(run, ds, ["map@1000", "mrr@10"])
    loose = evaluate(run, ds, ["map@1000", "mrr@10"], rel_threshold=1)
    assert strict["map@1000"] < loose["map@1000"] and strict["mrr@10"] <= loose["mrr@10"]


def test_a_judged_query_without_results_scores_zero_and_is_counted(caplog):
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = Ranking.from_records([("q1", "", "a", 1.0)])
    per_query = evaluate_per_query(run, qrels, ["ndcg@10"])
    assert per_query["ndcg@10"].to_dict() == {"q1": 1.0, "q2": 0.0}
    assert evaluate(run, qrels, ["ndcg@10"])["ndcg@10"] == 0.5
    assert "1 of 2 judged queries are not in the run (e.g. 'q2'): they count as 0" in caplog.text


def test_inputs_are_not_modified_and_bad_qrels_are_refused():
    run = Ranking.from_records([("q1", "", "a", 1.0)])
    qrels = {"q1": {"a": 1}}
    evaluate(run, qrels)
    assert qrels == {"q1": {"a": 1}} and run.to_dict() == {"q1": {"a": 1.0}}
    with pytest.raises(ConfigError):
        evaluate(run, [("q1", "a", 1)])
    with pytest.raises(DataError, match="no relevant"):
        evaluate(run, {"q1": {"a": 0}})
    with pytest.raises(DataError, match="has judgments"):
        evaluate(Ranking.from_records([("zz", "", "a", 1.0)]), qrels)


def test_bright_excluded_ids_are_dropped_before_scoring():
    ds = load("bright/leetcode")
    qid, excluded = next(iter(ds.exclusions().items()))
    gold = next(iter(ds.qrels()[qid]))
    run = Ranking.from_records([(qid, "", d, 10.0 - i) for i, d in enumerate(sorted(excluded)[:5] + [gold])])
    assert evaluate_per_query(run, ds, ["mrr@10"]).loc[qid, "mrr@10"] == 1.0


def test_experiment_compares_systems_with_significance(tmp_path):
    ds = load("trec-dl-2019")
    bm25 = RunRetriever("bm25", ds)
    reversed_run = Ranking(ds.run("bm25").to_pandas().assign(score=lambda f: -f["score"]))
    report = Experiment({"BM25": bm25, "BM25 top-10": bm25 % 10, "reversed": reversed_run}, ds,
                        ["ndcg@10", "recall@100"], save_dir=tmp_path).run()
    table, pvalues = report.table(), report.pvalues()
    assert table.loc["BM25", "ndcg@10"] == pytest.approx(0.5058, abs=5e-5)
    assert table.loc["BM25 top-10", "ndcg@10"] == pytest.approx(0.5058, abs=5e-5)
    assert table.loc["reversed", "ndcg@10"] < 0.3 and pvalues.loc["reversed", "ndcg@10"] < 0.05
    assert pvalues.loc["BM25 top-10", "ndcg@10"] == 1.0
    md = report.to_markdown()
    assert "| reversed |" in md and "†" in md
    runs = tmp_path / "trec-dl-2019"
    assert (runs / "BM25.trec").exists() and (runs / "reversed.trec").exists() and (tmp_path / "report.json").exists()
    with pytest.raises(ConfigError, match="baseline"):
        Experiment({"a": bm25}, ds, baseline="b")


def test_judged_queries_missing_from_the_queries_are_not_averaged_in(tmp_path):
    """The loader warns that such queries are not evaluated; evaluate() must not score them 0 either."""
    import json

    folder = tmp_path / "ds"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in
                                                 enumerate(["cats purr", "dogs bark", "fish swim", "birds fly"])))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in [("q1", "cats"), ("q2", "dogs")]))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td1\t1\nq9\td2\t1\n")
    from rerank.retrievers.bm25 import BM25

    ds = load(str(folder))
    run = BM25(stopwords=None, stemmer=None).index(ds.corpus())(ds.topics())
    assert evaluate(run, ds, ["ndcg@10", "mrr@10"]) == {"ndcg@10": 1.0, "mrr@10": 1.0}


def test_an_undefined_per_query_value_makes_the_mean_nan_not_the_mean_of_the_others(caplog):
    run = Ranking.from_records([("q1", "", "d1", 3.0), ("q1", "", "d2", 2.0), ("q2", "", "d4", 1.0), ("q2", "", "d9", 0.5)])
    per_query = evaluate_per_query(run, {"q1": {"d2": 1}, "q2": {"d9": 1, "d4": 0}}, ["bpref"])
    assert per_query["bpref"].isna().sum() == 1                       # ranx: bpref needs a judged non-relevant document
    value = evaluate(run, {"q1": {"d2": 1}, "q2": {"d9": 1, "d4": 0}}, ["bpref"])["bpref"]
    assert value != value and "bpref is undefined (NaN) on 1 of 2 queries" in caplog.text


@pytest.mark.parametrize("run, qrels, kwargs, error, message", [
    (Ranking.empty(), {"q1": {"a": 1}}, {}, DataError, "the run is empty"),
    (Ranking.from_queries({"q1": "x"}), {"q1": {"a": 1}}, {}, DataError, "queries but no ranked documents"),
    ({"q1": {"a": 1.0}}, {"q1": {"a": 1}}, {}, ConfigError, "evaluate takes a Ranking"),
    (Ranking.from_records([("q1", "", "a", 1.0)]), {"q1": {"a": 1}}, {"rel_threshold": 0}, ConfigError, "rel_threshold must be an integer from 1 to"),
])
def test_runs_that_would_score_zero_silently_are_refused(run, qrels, kwargs, error, message):
    with pytest.raises(error, match=message):
        evaluate(run, qrels, ["ndcg@10"], **kwargs)


def test_f1_is_a_metric_and_superscript_cut_offs_are_refused():
    run = Ranking.from_records([("q1", "", "a", 2.0), ("q1", "", "b", 1.0)])
    assert evaluate(run, {"q1": {"a": 1}}, ["f1@2"])["f1@2"] == pytest.approx(2 / 3)
    for bad in ("ndcg@²", "ndcg@10-l²"):
        with pytest.raises(ConfigError, match="must be a positive integer"):
            evaluate(run, {"q1": {"a": 1}}, [bad])
