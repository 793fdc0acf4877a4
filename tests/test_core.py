"""Core types and stage operators on real data (TREC-DL 2019's shipped BM25 run)."""

import re

import numpy as np
import pandas as pd
import pytest

from rerank import (
    Candidates,
    ConfigError,
    Cutoff,
    DataError,
    Fuse,
    Pipeline,
    Ranking,
    Stage,
    fuse,
)
from rerank.backends.fake import FakeBackend
from rerank.data import load
from rerank.expr import build
from rerank.rerankers.listwise import Listwise
from rerank.retrievers.bm25 import BM25
from rerank.retrievers.run import RunRetriever


@pytest.fixture(scope="module")
def dl19():
    return load("trec-dl-2019")


@pytest.fixture(scope="module")
def bm25_run(dl19):
    return RunRetriever("bm25", dl19)


def test_ranking_sorts_and_ranks_per_query():
    r = Ranking.from_records([("q2", "b", "x", 0.1), ("q1", "a", "d1", 0.2), ("q1", "a", "d2", 0.7)])
    df = r.to_pandas()
    assert df[["qid", "docid", "rank"]].values.tolist() == [["q2", "x", 1], ["q1", "d2", 1], ["q1", "d1", 2]]
    assert r.queries() == {"q2": "b", "q1": "a"}


def test_ranking_never_mutates_its_frame():
    frame = pd.DataFrame({"qid": [1, 1], "query": "a", "docid": [5, 6], "score": [1, 2]})
    before = frame.copy()
    Ranking.from_pandas(frame).top(1)
    pd.testing.assert_frame_equal(frame, before)


def test_foreign_column_names_are_translated():
    r = Ranking.from_pandas(pd.DataFrame({"query_id": ["1"], "doc_id": ["a"], "score": [1.0]}))
    assert r.to_pandas()["docid"].tolist() == ["a"]


def test_ranking_round_trips_through_ranx_and_trec(tmp_path, dl19):
    run = dl19.run("bm25")
    back = Ranking.from_run(run.to_run())
    assert back.to_dict() == run.to_dict()
    run.write_trec(tmp_path / "x.trec", tag="my tag")
    again = Ranking.read_trec(tmp_path / "x.trec")
    assert [c.docids for c in again.per_query()] == [c.docids for c in run.per_query()]
    first = (tmp_path / "x.trec").read_text().splitlines()[0].split()
    assert first[1] == "Q0" and first[3] == "1" and first[5] == "my_tag"


def test_candidates_reorder_keeps_scores_decreasing():
    c = Candidates("q", "query", ["a", "b", "c"], ["ta", "tb", "tc"], np.array([3.0, 2.0, 1.0]))
    r = c.reordered([2, 0, 1], repaired=1)
    assert r.docids == ["c", "a", "b"] and list(r.scores) == [3.0, 2.0, 1.0] and r.info["repaired"] == 1
    with pytest.raises(ValueError, match="permutation"):
        c.reordered([0, 0, 1])
    assert c.with_scores([0.1, 0.9, 0.5]).docids == ["b", "c", "a"]


@pytest.mark.parametrize("order", [[2.7, 0.3, 1.9], np.array([2.0, 0.0, 1.0]), ["2", "0", "1"], [2, 0.0, 1]])
def test_an_order_of_other_than_whole_positions_is_refused_not_cut_to_one(order):
    """Scores passed to reordered by mistake were cut to positions, a permutation here, silently (review helper-91)."""
    c = Candidates("q", "query", ["a", "b", "c"], ["ta", "tb", "tc"], np.array([3.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="order must be positions \\(whole numbers\\) of range\\(3\\)"):
        c.reordered(order)
    assert c.reordered(np.array([2, 0, 1], dtype=np.int32)).docids == ["c", "a", "b"] and len(c.top(0).reordered([])) == 0


def test_a_pipelines_output_and_search_keep_its_rerankers_per_query_info():
    """README: repairs are reported in info["parse"]; a pipeline's search() answered {} (review helper-80)."""
    docs = [("d1", "cats purr softly at night"), ("d2", "dogs bark loudly"), ("d3", "cats and dogs play")]
    lw = Listwise(FakeBackend(generate=lambda p: "[2] > [1]"), window=3, step=1)  # [3] missing: repaired
    pipe = BM25().index(docs) % 3 >> lw % 2
    found = pipe.search("cats dogs at night")
    assert found.info["parse"]["repaired"] == 1 and found.info["parse"]["problems"] == {"missing": 1}
    out = pipe({"q1": "dogs", "q2": "cats dogs at night"})
    assert [c.info["parse"]["answers"] for c in out.per_query()] == [1, 1]
    assert out.select(["q2"]).results("q2").info["parse"]["repaired"] == 1 and not Ranking.from_pandas(out.to_pandas()).results("q2").info


def test_cutoff_and_pipeline_on_real_run(bm25_run, dl19):
    out = (bm25_run % 10)(dl19.topics())
    assert len(out) == 43 * 10 and out.to_pandas()["rank"].max() == 10
    assert "text" in out.columns and out.to_pandas()["text"].str.len().min() > 0
    assert repr(bm25_run % 10) == "RunRetriever(name='bm25', dataset='trec-dl-2019') >> Cutoff(10)"


def test_a_shipped_run_is_a_first_stage_only(bm25_run, dl19):
    """Review helper-66: ``bm25 % 5 >> run`` scored exactly as ``run``, the candidates thrown away."""
    with pytest.raises(ConfigError, match="replays a shipped first-stage run; it cannot rescore given candidates"):
        (bm25_run % 5 >> bm25_run)(dl19.topics())
    with pytest.raises(ConfigError, match="takes a Dataset, got str 'x'"):  # an AttributeError, exit 1
        build("run(dataset='x')")


def test_pipelines_flatten_and_compare_by_repr(bm25_run):
    p = (bm25_run % 50) >> Cutoff(10)
    assert isinstance(p, Pipeline) and len(p.stages) == 3
    assert p == (bm25_run % 50) >> Cutoff(10) and hash(p) == hash((bm25_run % 50) >> Cutoff(10))


def test_fusion_of_a_run_with_itself_keeps_its_order(bm25_run, dl19):
    topics = dl19.topics().select(["19335", "47923"])
    fused = Fuse([bm25_run, bm25_run % 20], method="rrf")(topics)
    base = bm25_run(topics)
    for f, b in zip(fused.per_query(), base.per_query()):
        assert f.docids[:20] == b.docids[:20]
        assert all(t for t in f.texts)
    wsum = Fuse([bm25_run, bm25_run], method="wsum", norm="min-max")(topics)
    assert len(wsum) == len(base)


def test_rrf_chains_are_one_fusion_and_score_fusions_nest_as_written(bm25_run, dl19):
    """A nested wsum was flattened into an equal-weight fusion of all the leaves (review helper-62)."""
    topics = dl19.topics().select(["19335", "47923"])
    a, b, c = bm25_run, bm25_run % 20, bm25_run % 5
    assert (a | b | c).stages == [a, b, c] and (a | (b | c)).stages == [a, b, c]
    inner = Fuse([a, b], method="wsum", norm="min-max")
    nested = Fuse([inner, c], method="wsum", norm="min-max")
    assert nested.stages == [inner, c]
    by_hand = fuse([fuse([a(topics), b(topics)], method="wsum"), c(topics)], method="wsum")
    assert nested(topics).to_dict() == by_hand.to_dict()


def test_numpy_weights_name_a_fusion_as_python_numbers_do(bm25_run):
    given = Fuse([bm25_run, bm25_run % 5], method="wsum", weights=np.array([0.25, 0.75]))
    assert repr(given) == repr(Fuse([bm25_run, bm25_run % 5], method="wsum", weights=[0.25, 0.75]))
    assert "np.float64" not in repr(given)


def test_fuse_of_computed_rankings_is_what_the_fuse_stage_gives(bm25_run, dl19):
    topics = dl19.topics().select(["19335", "47923", "87181"])
    first, second = bm25_run(topics), (bm25_run % 20)(topics)
    for settings in ({"method": "rrf"}, {"method": "wsum", "norm": "min-max", "weights": [0.3, 0.7]}):
        assert fuse([first, second], **settings).to_dict() == Fuse([bm25_run, bm25_run % 20], **settings)(topics).to_dict()
    # a query one ranking lacks is fused from the others (ranx alone refuses runs with other query ids)
    partial = first.to_pandas()
    fused = fuse([Ranking(partial[partial.qid != "87181"]), second], method="wsum", weights=[0.5, 0.5]).to_dict()
    lacking = fused["87181"]  # only the second ranking has it: its min-max scores, weighted 0.5
    assert set(lacking) == set(second.to_dict()["87181"]) and max(lacking.values()) == 0.5
    assert fused["19335"] == fuse([first, second], method="wsum", weights=[0.5, 0.5]).to_dict()["19335"]
    assert len(fuse([Ranking.empty(), Ranking.empty()])) == 0
    assert fuse([first, Ranking.empty()]).to_dict().keys() == first.to_dict().keys()


@pytest.mark.parametrize("rankings, settings, message", [
    (1, {}, "fusion needs at least two rankings"),
    (2, {"method": "borda"}, "unknown fusion method 'borda'"),
    (2, {"norm": "l2", "method": "wsum"}, "unknown fusion norm 'l2'"),
    (2, {"norm": "min-max"}, "rrf fuses ranks, so it takes no norm"),
    (2, {"weights": [1.0, 1.0]}, "weights apply to method='wsum' only, not 'rrf'"),
    (2, {"k": 0}, "fusion k must be an integer >= 1 and <= 1000000000, got 0"),
    (2, {"k": True}, "fusion k must be an integer >= 1 and <= 1000000000, got True"),
    (2, {"k": "60"}, "fusion k must be an integer >= 1 and <= 1000000000, got '60'"),
    (2, {"method": "wsum", "weights": [1.0]}, "1 weights given for 2 rankings"),
    (2, {"method": "wsum", "weights": [1.0, float("nan")]}, "fusion weights must be finite numbers >= 0"),
    (2, {"method": "wsum", "weights": [1.0, "2"]}, "fusion weights must be finite numbers >= 0"),
    (2, {"method": "wsum", "weights": [True, False]}, "fusion weights must be finite numbers >= 0"),
    (2, {"method": "wsum", "weights": [-1.0, 1.0]}, "fusion weights must be finite numbers >= 0"),
    (2, {"method": "wsum", "weights": [0, 0]}, "not all 0"),
    (2, {"method": "wsum", "weights": [1, 10**400]}, "fusion weights must be finite numbers >= 0"),
    ("text", {}, "fuse takes Rankings of documents, got ['Ranking', 'str']"),
    ("queries", {}, "fuse takes Rankings of documents, got ['Ranking', 'Ranking without docids']"),
    ("one", {}, "fuse takes a list of Rankings, got one Ranking"),
])
def test_fuse_refuses_bad_settings_and_inputs(rankings, settings, message):
    one = Ranking.from_run({"q": {"d": 1.0}})
    given = {"text": [one, "a run"], "queries": [one, Ranking.from_queries({"q": "x"})], "one": one}.get(rankings)
    with pytest.raises(ConfigError, match=re.escape(message)):
        fuse([one] * rankings if given is None else given, **settings)


def test_fuse_carries_text_over_from_whichever_ranking_has_it_and_refuses_two_query_texts():
    with_text = Ranking.from_records([("q", "cats", "d1", 2.0), ("q", "cats", "d2", 1.0)]).assign(text=["one", "two"])
    from_a_run_file = Ranking.from_run({"q": {"d1": 0.5, "d2": 0.9, "d3": 0.1}})
    for order in ([with_text, from_a_run_file], [from_a_run_file, with_text]):
        out = fuse(iter(order), method="combsum", norm="min-max").to_pandas().set_index("docid")
        assert set(out["query"]) == {"cats"} and out.loc["d1", "text"] == "one" and pd.isna(out.loc["d3", "text"])
    assert fuse([with_text, with_text], method="wsum", weights=np.array([1, 3])).to_dict() == {"q": {"d1": 4.0, "d2": 0.0}}
    other = Ranking.from_records([("q", "dogs", "d1", 1.0)])
    with pytest.raises(DataError, match="two texts: 'cats' and 'dogs'"):
        fuse([with_text, other])


def test_stage_validates_columns_and_accepts_empty_input(bm25_run):
    with pytest.raises(DataError, match="lacks"):
        Cutoff(3)(Ranking.from_queries({"1": "x"}))
    assert len(Cutoff(3)(Ranking.empty())) == 0
    with pytest.raises(ConfigError):
        Cutoff(0)
    with pytest.raises(ConfigError, match="fusion method"):
        Fuse([bm25_run, bm25_run], method="nope")


def test_custom_stage_composes():
    class Reverse(Stage):
        requires = ("qid", "query", "docid", "score")

        def transform(self, inp):
            return inp.assign(score=-inp.to_pandas()["score"])

    r = Ranking.from_records([("q", "x", "a", 2.0), ("q", "x", "b", 1.0)])
    assert (Reverse() >> Cutoff(1))(r).to_pandas()["docid"].tolist() == ["b"]
    assert repr(Reverse() % 1) == "Reverse() >> Cutoff(1)"


class Echo(Stage):
    """A stage that returns its input (for the input checks)."""

    requires = ("qid", "query")

    def transform(self, inp):
        return inp


@pytest.mark.parametrize("inp, message", [
    ({"q1": {"d1": 1.0}}, "mapping needs strings"), ({"q1": None}, "mapping needs strings"),
    (["cats dogs"], "for several query strings give"), (["ab", "cd"], "Query records or \\(qid, text\\) pairs"),
    ([("q1", 5)], "Query records or \\(qid, text\\) pairs"), (None, "got NoneType"), (b"x", "got bytes"),
])
def test_stage_inputs_of_the_wrong_shape_are_refused_not_read_as_text(inp, message):
    """A dict-of-dicts run became a query whose text was "{'d1': 1.0}"; "ab" became Query("a", "b")."""
    with pytest.raises(ConfigError, match=message):
        Echo()(inp)


def test_a_query_frame_with_its_text_in_a_text_column_is_a_query_set():
    for frame in (pd.DataFrame({"_id": ["1"], "text": ["cats"]}), pd.DataFrame({"qid": ["1"], "text": ["cats"]})):  # BEIR's, HF's
        assert Echo()(frame).queries() == {"1": "cats"}
    with pytest.raises(ConfigError, match="from_queries takes \\{qid: text\\}, Query records or \\(qid, text\\) pairs, got 'what is x'"):
        Ranking.from_queries(["what is x"])


def test_a_mapping_whose_keys_name_one_qid_twice_is_refused_not_collapsed():
    with pytest.raises(DataError, match="query '1': 'cats' and 'dogs'"):
        Echo()({1: "cats", "1": "dogs"})


def test_search_and_cut_offs_take_numpy_integers_and_refuse_non_strings():
    r = Echo() % np.int64(2)
    assert r.stages[-1] == Cutoff(2)
    with pytest.raises(ConfigError, match="cut-off needs a positive integer, got True"):
        Echo() % True
    with pytest.raises(ConfigError, match="search takes one query string"):
        Echo().search(None)


def test_a_run_read_from_a_file_gets_its_texts_for_a_reranker(tmp_path):
    """A TREC run of one's own could not be reranked: read_trec took queries but no document texts, and
    nothing attached them (review helper-87)."""
    from rerank.rerankers.biencoder import BiEncoderReranker
    from rerank.types import Doc

    scifact = load("scifact")
    topics = scifact.topics().select(scifact.topics().to_pandas()["qid"].tolist()[:3])
    retrieved = build("bm25 % 5", dataset=scifact)(topics)
    retrieved.write_trec(tmp_path / "mine.trec", tag="mine")
    queries = dict(zip(topics.to_pandas()["qid"], topics.to_pandas()["query"]))
    read = Ranking.read_trec(tmp_path / "mine.trec", queries, docs=scifact)
    columns = ["qid", "query", "docid", "text", "title"]
    pd.testing.assert_frame_equal(read.to_pandas()[columns], retrieved.to_pandas()[columns])
    rescore = BiEncoderReranker()
    assert rescore(read).to_pandas()["docid"].tolist() == rescore(retrieved).to_pandas()["docid"].tolist()
    docids = read.to_pandas()["docid"].tolist()
    plain = Ranking.read_trec(tmp_path / "mine.trec", queries, docs={d: "plain text" for d in docids}).to_pandas()
    assert set(plain["text"]) == {"plain text"} and set(plain["title"]) == {""}
    with pytest.raises(DataError, match=r"1 docid\(s\) of the ranking are not among the documents given for their texts"):
        read.with_texts({d: Doc(d, "t") for d in docids[1:]})
    with pytest.raises(ConfigError, match="texts come from a dataset or a mapping docid -> Doc or text, got list"):
        read.with_texts(["a", "b"])
    with pytest.raises(DataError, match=f"document {docids[0]!r} has no text: None"):
        read.with_texts({d: None if d == docids[0] else "t" for d in docids})
    with pytest.raises(ConfigError, match="a query set has no documents"):
        topics.with_texts(scifact)
    # review helper-90: a dataset's queries() (Query records) or topics() as queries= was a raw AttributeError
    for given in (scifact.queries(), topics, list(queries.items())):
        pd.testing.assert_frame_equal(Ranking.read_trec(tmp_path / "mine.trec", given, docs=scifact).to_pandas(), read.to_pandas())
    assert Ranking.from_run({7: {"d1": 1.0}}, {7: "int ids"}).queries() == {"7": "int ids"}   # were '' (no match)
    with pytest.raises(ConfigError, match="takes {qid: text}, Query records or \\(qid, text\\) pairs, got int: 5"):
        Ranking.from_run({"q": {"d": 1.0}}, 5)
