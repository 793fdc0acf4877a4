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


def test_a_judged_query_without_results_scores_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = Ranking.from_records([("q1", "", "a", 1.0)])
    per_query = evaluate_per_query(run, qrels, ["ndcg@10"])
    assert per_query["ndcg@10"].to_dict() == {"q1": 1.0, "q2": 0.0}
    assert evaluate(run, qrels, ["ndcg@10"])["ndcg@10"] == 0.5


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
