"""BM25: effectiveness on SciFact, exactness against rank_bm25, persistence, edge cases, stage use."""

from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from ranx import Qrels, evaluate

from rerank import ConfigError, DataError, Doc, RankedResults, Ranking
from rerank.data import load
from rerank.retrievers.base import Retriever
from rerank.retrievers.bm25 import BM25

ANSERINI_SCIFACT_NDCG10 = 0.679  # Anserini BM25 flat (0.6789), k1=0.9 b=0.4
BM25S_SCIFACT_NDCG10 = 0.6762  # bm25s, Lucene variant, same tokenization (datasets/scifact/SOURCE.md)
WHITESPACE = {"pattern": "whitespace", "lowercase": False, "stopwords": None, "stemmer": None}


@pytest.fixture(scope="module")
def scifact():
    return load("scifact")


@pytest.fixture(scope="module")
def bm25(scifact):
    return BM25().index(scifact.corpus())


@pytest.fixture(scope="module")
def topics(scifact):
    return Ranking.from_queries(scifact.queries())


@pytest.fixture(scope="module")
def run(bm25, topics):
    return bm25(topics)


def test_scifact_ndcg_matches_anserini(scifact, run):
    ndcg = evaluate(Qrels(scifact.qrels()), run.to_run(), "ndcg@10", make_comparable=True)
    assert abs(ndcg - ANSERINI_SCIFACT_NDCG10) <= 0.005
    assert ndcg == pytest.approx(BM25S_SCIFACT_NDCG10, abs=5e-4)


def test_run_shape(run, topics):
    frame = run.to_pandas()
    assert {"qid", "query", "docid", "score", "rank", "text", "title"} <= set(frame.columns)
    assert frame["qid"].nunique() == len(topics)
    assert frame.groupby("qid").size().max() <= 1000
    assert (frame.groupby("qid")["score"].diff().dropna() <= 0).all()
    assert (frame["score"] > 0).all()


@pytest.mark.parametrize("k1,b", [(None, None), (1.2, 0.5)])
def test_rank_bm25_mode_reproduces_rank_bm25(k1, b):
    from rank_bm25 import BM25Okapi

    ds = load("cranfield")
    docs, queries = ds.corpus(), [q.text for q in ds.queries()[:40]]
    params = {k: v for k, v in {"k1": k1, "b": b}.items() if v is not None}
    ref = BM25Okapi([d.full_text().split() for d in docs], **params)
    ours = BM25(method="rank_bm25", **params, **WHITESPACE).index(docs)
    # the epsilon floor of negative idfs is exercised ("of", "the", ... are in most documents)
    assert 0.25 * ref.average_idf in ref.idf.values()
    everything = np.arange(len(docs))
    for q in queries:
        expected = ref.get_scores(q.split())
        assert np.allclose(ours._rescore(q, everything), expected, rtol=1e-5, atol=1e-6)
        (positions, scores), = ours._retrieve([q], 10)
        assert np.allclose(scores, np.sort(expected)[::-1][:10], rtol=1e-5, atol=1e-6)
        assert np.allclose(expected[positions], scores, rtol=1e-5, atol=1e-6)


def test_lucene_and_robertson_formulas_on_a_tiny_corpus():
    docs = [Doc("d1", "apple apple banana"), Doc("d2", "banana cherry"), Doc("d3", "cherry cherry cherry date")]
    n, avgdl = 3, 3.0
    k1, b = 1.2, 0.75

    def part(tf, dl):
        return tf / (tf + k1 * (1 - b + b * dl / avgdl))

    lucene = BM25(k1=k1, b=b, stopwords=None, stemmer=None).index(docs)
    idf = math.log(1 + (n - 1 + 0.5) / (1 + 0.5))  # "apple" is in one document
    assert lucene._rescore("apple", np.arange(3)) == pytest.approx([idf * part(2, 3), 0, 0], rel=1e-6)
    robertson = BM25(k1=k1, b=b, method="robertson", stopwords=None, stemmer=None).index(docs)
    idf = math.log((n - 2 + 0.5) / (2 + 0.5))  # "cherry" is in two documents: negative idf, kept
    expected = [0, idf * part(1, 2) * (k1 + 1), idf * part(3, 4) * (k1 + 1)]
    assert robertson._rescore("cherry", np.arange(3)) == pytest.approx(expected, rel=1e-6)
    assert robertson._rescore("cherry cherry", np.arange(3)) == pytest.approx(2 * np.array(expected), rel=1e-6)


def test_ties_go_to_the_earlier_document_and_negative_scores_sort():
    docs = [Doc(f"d{i}", "alpha beta") for i in range(5)] + [Doc("x", "gamma"), Doc("y", "alpha alpha alpha")]
    lucene = BM25(stopwords=None, stemmer=None).index(docs)
    assert lucene.search("beta", k=3).docids == ["d0", "d1", "d2"]
    robertson = BM25(method="robertson", stopwords=None, stemmer=None).index(docs)  # "alpha": negative idf
    (positions, scores), = robertson._retrieve(["alpha"], 4)
    assert (scores < 0).all() and list(scores) == sorted(scores, reverse=True)
    assert positions.tolist() == [0, 1, 2, 3]  # the short documents score higher (less negative) than "y"


@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(bm25, topics, tmp_path, mmap):
    bm25.save(tmp_path)
    loaded = BM25.load(tmp_path, mmap=mmap)
    assert loaded == bm25 and repr(loaded) == repr(bm25)
    if mmap:
        assert _memory_mapped(loaded._scores.data) and _memory_mapped(loaded._scores.indices)
    sample = topics.select([q for q in list(topics.queries())[:50]])
    pd.testing.assert_frame_equal(loaded(sample).to_pandas(), bm25(sample).to_pandas())


def test_non_default_params_survive_save_load(tmp_path):
    docs = load("cranfield").corpus()[:300]
    custom = BM25(k1=1.1, b=0.6, method="robertson", stopwords=["the", "of"], stemmer="porter", num_results=7).index(docs)
    custom.save(tmp_path)
    loaded = Retriever.load(tmp_path)
    assert type(loaded) is BM25 and repr(loaded) == repr(custom)
    assert loaded.search("boundary layer flow", k=7).docids == custom.search("boundary layer flow", k=7).docids


def test_load_rejects_incomplete_index(bm25, tmp_path):
    bm25.save(tmp_path)
    (tmp_path / "vocab.json").unlink()
    with pytest.raises(DataError, match="vocab.json missing; rebuild the index"):
        BM25.load(tmp_path)


@pytest.mark.parametrize("part, damaged", [("indices", lambda a: np.r_[2**31 - 1, a[1:]]), ("indptr", lambda a: np.r_[a[0], -5, a[2:]]),
                                           ("data", lambda a: a[:-1])])
def test_a_score_matrix_that_does_not_fit_the_index_is_refused_not_read(bm25, tmp_path, part, damaged):
    """A consistent seal over arrays that index outside the matrix (which scipy would read out of bounds)."""
    from conftest import resealed

    bm25.save(tmp_path)
    array = np.load(tmp_path / f"scores.{part}.npy")
    np.save(tmp_path / f"scores.{part}.npy", damaged(array).astype(array.dtype))
    with pytest.raises(DataError, match=f"scores.{part}.npy changed since the index was saved"):
        BM25.load(tmp_path)
    resealed(tmp_path)
    with pytest.raises(DataError, match="the score matrix's arrays do not describe"):
        BM25.load(tmp_path)


def test_empty_corpus_is_an_error():
    with pytest.raises(DataError, match="empty"):
        BM25().index([])
    with pytest.raises(DataError, match="index term"):
        BM25().index([Doc("d1", "the of and"), Doc("d2", "a")])


def test_query_of_stopwords_or_unknown_terms_gives_no_results(bm25):
    """Only documents sharing a term with the query are returned: such queries get no rows."""
    out = bm25(Ranking.from_queries({"stop": "the of and", "unknown": "zzqxv qqwwee", "real": "vitamin D deficiency"}))
    assert set(out.to_pandas()["qid"]) == {"real"}
    assert bm25.search("the of and", k=5) == RankedResults("the of and", [])
    scores = bm25._rescore("the of and", np.arange(10))
    assert scores.shape == (10,) and not scores.any()


def test_search_returns_results_with_text(bm25):
    res = bm25.search("vitamin D deficiency and bone health", k=5)
    assert isinstance(res, RankedResults) and len(res) == 5
    assert [r.rank for r in res] == [1, 2, 3, 4, 5]
    assert all(r.text and r.score > 0 for r in res)
    assert [r.score for r in res] == sorted((r.score for r in res), reverse=True)


def test_cutoff_is_absorbed_by_the_retriever(bm25, topics):
    sample = topics.select(list(topics.queries())[:5])
    out = (bm25 % 10)(sample)
    assert out.to_pandas().groupby("qid").size().max() == 10
    pd.testing.assert_frame_equal(out.to_pandas(), bm25(sample).top(10).to_pandas())


def test_rescores_given_candidates(bm25, run):
    first = run.top(20).select(list(run.queries())[:3])
    shuffled = Ranking(first.to_pandas().assign(score=np.random.default_rng(0).random(len(first))))
    rescored = bm25(shuffled).to_pandas()
    expected = first.to_pandas()
    assert len(rescored) == len(expected)
    merged = rescored.merge(expected, on=["qid", "docid"], suffixes=("", "_first"))
    assert np.allclose(merged["score"], merged["score_first"], rtol=1e-6)
    assert (merged["rank"] == merged["rank_first"]).all()


def test_rescoring_unknown_docids_is_an_error(bm25):
    cands = Ranking.from_records([("q", "vitamin", "not-a-doc", 1.0)])
    with pytest.raises(DataError, match="not in the index"):
        bm25(cands)


def test_params_repr_is_stable():
    assert repr(BM25()) == "BM25()"
    assert repr(BM25(k1=1.2, method="robertson", stopwords=["x"], stemmer=None)) == \
        "BM25(k1=1.2, method='robertson', stopwords=('x',), stemmer=None)"
    assert BM25(method="rank_bm25") == BM25(method="rank_bm25") != BM25()
    assert hash(BM25(b=0.5)) == hash(BM25(b=0.5))


@pytest.mark.parametrize("bad", [{"method": "bm42"}, {"stemmer": "klingon"}, {"stopwords": "xx"},
                                 {"pattern": "("}, {"k1": -1.0}, {"b": 2.0}])
def test_bad_params_raise_config_error(bad):
    with pytest.raises(ConfigError):
        BM25(**bad)


@pytest.mark.parametrize("pattern", ["", "a*", r"\w*"])
def test_a_pattern_that_matches_the_empty_string_is_refused(pattern):
    """The empty token matched every document: any query returned the whole corpus (review helper-62)."""
    with pytest.raises(ConfigError, match="matches the empty string"):
        BM25(pattern=pattern)


def test_a_pattern_with_groups_gives_its_whole_matches():
    """findall gave the groups: first letters only (cats matched café), or a raw TypeError (review helper-62)."""
    docs = [("1", "cats purr"), ("2", "café noir"), ("3", "dogs bark")]
    for pattern in (r"(\w)\w+", r"(\w)(\w+)"):
        assert BM25(pattern=pattern, stemmer=None).index(docs).search("cats", k=3).docids == ["1"]


def test_an_index_with_non_ascii_terms_saves_and_loads_under_an_ascii_locale(tmp_path):
    """vocab.json was written in the locale's encoding: a raw UnicodeEncodeError there (review helper-62)."""
    script = (f"from rerank.retrievers.bm25 import BM25; from rerank.retrievers.base import Retriever\n"  # ASCII, as the locale
              f"BM25().index([('1', {ascii('Müller à Genève')}), ('2', 'plain words')]).save({str(tmp_path / 'idx')!r})\n"
              f"print(Retriever.load({str(tmp_path / 'idx')!r}).search({ascii('genève')}, k=1).docids)")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "['1']", out.stderr


def test_not_indexed_is_an_error():
    with pytest.raises(ConfigError, match="index"):
        BM25().search("anything")


def _memory_mapped(array: np.ndarray) -> bool:
    while array is not None and not isinstance(array, np.memmap):
        array = array.base
    return array is not None


def test_a_cut_off_after_a_rescoring_retriever_keeps_its_k(bm25):
    """``% k`` after a retriever that rescores candidates (it rescores all it gets) still keeps k,
    also inside a fused branch, which gets the candidates too."""
    other = BM25(k1=0.9).index(bm25.docs)
    topics = Ranking.from_queries({"q1": "vitamin D and bone fractures", "q2": "cancer risk"})
    for pipe, k in ((bm25 % 20 >> other % 3, 3), (bm25 >> bm25 % 2, 2), (bm25 % 20 >> (other % 4 | bm25 % 4), 8)):
        sizes = pipe(topics).to_pandas().groupby("qid").size()
        assert set(sizes.index) == {"q1", "q2"} and sizes.max() <= k, (pipe, sizes)
    assert len((bm25 % 20 >> other % 3).search("vitamin D", k=8)) == 3


@pytest.mark.parametrize("docs, message", [
    ({"d1": "a text"}, "got dict"), ("one text", "got str"), (["text a", "text b"], "tuples of strings"),
    ([("d1", 5)], "tuples of strings"), ([Doc(1, "x"), Doc("1", "y")], "a document's docid must be a string, got int 1"),
    ([Doc("d1", None)], "a document's text must be a string, got NoneType"), ([Doc("d1", "x", float("nan"))], "title must be"),
])
def test_index_refuses_documents_it_would_read_letter_by_letter(docs, message):
    """A dict was iterated by key and Doc(*"d1") indexed docid "d" with text "1"."""
    with pytest.raises(ConfigError, match=message):
        BM25().index(docs)


@pytest.mark.parametrize("settings, message", [
    ({"k1": float("inf")}, "BM25: k1 must be a finite number, got inf"),
    ({"k1": float("nan")}, "BM25: k1 must be a finite number, got nan"),
    ({"k1": 1e308}, "BM25: k1 must be between 0 and 1000, got 1e+308"),
    ({"k1": -0.5}, "BM25: k1 must be between 0 and 1000, got -0.5"),
    ({"k1": "abc"}, "BM25: k1 must be a number or None, got 'abc' (str)"),
    ({"k1": "1.2"}, "BM25: k1 must be a number or None, got '1.2' (str)"),
    ({"k1": [1]}, "BM25: k1 must be a number or None, got [1] (list)"),
    ({"k1": True}, "BM25: k1 must be a number or None, got True (bool)"),
    ({"b": float("nan")}, "BM25: b must be a finite number, got nan"),
    ({"b": "0.5"}, "BM25: b must be a number or None, got '0.5' (str)"),
    ({"lowercase": 1}, "BM25: lowercase must be True or False, got 1 (int)"),
    ({"stopwords": {"the": 1}}, "BM25: stopwords must be a string or a list of strings or None, got {'the': 1} (dict)"),
    ({"k2": 1.2}, "BM25: bad arguments: got an unexpected keyword argument 'k2'; its parameters are k1, b, method,"),
])
def test_bm25_settings_from_python_are_refused_up_front(settings, message):
    """The bug: k1=inf and k1=1e308 indexed and returned no results, k1=nan failed at search blaming the
    Ranking, 'abc' and [1] raised raw ValueError/TypeError, '1.2' was silently converted."""
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        BM25(**settings)


@pytest.mark.parametrize("arguments", ["k1=1e999", "k1=1e308", "k1='abc'", "k1=[1]", "k1=True", "b='0.5'",
                                       "b=-1", "lowercase=1", "k2=1.2", "method='bm42'"])
def test_bm25_in_python_and_in_an_expression_refuse_the_same_settings_alike(arguments):
    """The expression names the stage 'bm25' and adds where; the rest of the message is the same."""
    from rerank.expr import build

    call = ast.parse(f"bm25({arguments})", mode="eval").body
    with pytest.raises(ConfigError) as in_python:
        BM25(**{k.arg: ast.literal_eval(k.value) for k in call.keywords})  # 1e999 is inf, as the parser reads it
    with pytest.raises(ConfigError) as in_expression:
        build(f"bm25({arguments})")
    said = str(in_python.value).removeprefix("BM25: ")
    assert said in str(in_expression.value), (str(in_python.value), str(in_expression.value))


def test_bm25_accepts_every_number_in_range_and_numpy_numbers():
    docs = [Doc("d1", "fleas bite dogs"), Doc("d2", "dogs bark at cats"), Doc("d3", "birds sing")]
    for k1 in (0, 1, 1000, np.float32(1.2), np.int64(2)):
        hits = BM25(k1=k1, b=np.float64(0.5), num_results=np.int64(5)).index(docs).search("dogs", k=3)
        assert hits.docids == ["d1", "d2"] or hits.docids == ["d2", "d1"], (k1, hits.docids)
        assert all(h.score > 0 and math.isfinite(h.score) for h in hits)


def test_stopwords_may_be_any_collection_and_a_set_gives_one_key():
    words = BM25(stopwords=["the", "a"]).stopwords
    assert BM25(stopwords={"the", "a"}).stopwords == BM25(stopwords=frozenset({"a", "the"})).stopwords == ("a", "the")
    assert BM25(stopwords=np.array(["the", "a"])).stopwords == ("a", "the") and words == ("the", "a")
    with pytest.raises(ConfigError, match="stopwords must be"):
        BM25(stopwords=[1, 2])


def test_custom_stopwords_are_lowercased_with_the_text_and_keyed_as_matched():
    docs = [Doc("d1", "The cats purr"), Doc("d2", "the dogs bark")]
    mixed, lower = BM25(stopwords=["The", "Cats"]), BM25(stopwords=["the", "cats"])
    assert mixed.tokenizer("The cats purr") == ["purr"]
    assert mixed == lower and mixed.index_identity() == lower.index_identity()  # the index cache's key
    assert mixed.index(docs).search("cats", k=2).docids == []
    assert BM25(stopwords=["The"], lowercase=False).tokenizer("The the") == ["the"]  # not lowercased, matched as given
    assert BM25(stopwords={"Cats", "a"}).stopwords == ("a", "cats")
