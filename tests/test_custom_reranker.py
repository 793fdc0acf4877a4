"""Writing your own reranker: the documented example.

Two ways, both one small class:

* subclass :class:`~rerank.rerankers.base.PointwiseReranker` and implement ``score_pairs`` (one
  score per (query, text) pair); batching across queries, sorting and ranks come for free;
* subclass :class:`~rerank.rerankers.base.Reranker` and implement ``rerank_candidates`` to reorder
  one query's :class:`~rerank.types.Candidates` any way you like.

Either is a pipeline stage (``bm25 >> mine % 10``), a plain object (``mine.rerank(query, docs)``)
and can be registered under a name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from rerank import Candidates, ConfigError, Cutoff, DataError, Doc, Fuse, Ranking, get, register
from rerank.backends.fake import FakeBackend
from rerank.data import load
from rerank.rerankers.base import PointwiseReranker, Reranker
from rerank.retrievers.run import RunRetriever


class TermOverlap(PointwiseReranker):
    """Score = number of distinct query words in the document (a toy, but a real reranker)."""

    def __init__(self, batch_size: int = 32, progress: bool | None = None):
        self.batch_size, self.progress = batch_size, progress

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        return np.array([len(set(q.lower().split()) & set(t.lower().split())) for q, t in zip(queries, texts)], float)


class ShortestFirst(Reranker):
    """Reorder by document length, shortest first (order-only: scores fall with the new position)."""

    def rerank_candidates(self, cands: Candidates) -> Candidates:
        return cands.reordered(np.argsort([len(t) for t in cands.texts], kind="stable"), note="by length")


def test_pointwise_subclass_as_a_plain_object():
    res = TermOverlap().rerank("life cycle of a flea", ["Bananas are yellow.", "The life cycle of a flea is short."])
    assert res.docids == ["1", "0"] and res[0].score == 5.0 and res[0].rank == 1
    assert len(TermOverlap().rerank("flea", [])) == 0
    with pytest.raises(DataError, match="empty"):
        TermOverlap().rerank("  ", ["a"])


@pytest.mark.parametrize("query, docs, error, message", [
    ("fleas", "one text", ConfigError, "a list of documents .*got str"),            # would be read letter by letter
    ("fleas", {"d1": "a text"}, ConfigError, "a list of documents .*got dict"),
    ("fleas", ["a", None], ConfigError, "a document's text must be a string, got NoneType None \\(document '1'\\)"),
    ("fleas", ["a", float("nan")], ConfigError, "text must be a string, got float nan"),
    ("fleas", [b"bytes"], ConfigError, "text must be a string, got bytes"),
    ("fleas", [Doc("d", "x"), Doc("d", "y")], DataError, "'d' is given twice"),
    (None, ["a"], ConfigError, "one query string, got NoneType"),
    (" ", ["a"], DataError, "the query is empty"),
    ("\u200b\ufeff", ["a"], DataError, "the query is empty"),                       # no visible character, as the service says
])
def test_rerank_refuses_documents_and_queries_it_would_misread(query, docs, error, message):
    with pytest.raises(error, match=message):
        TermOverlap().rerank(query, docs)


def test_a_non_finite_score_is_refused_naming_the_reranker_the_document_and_the_query():
    class Broken(TermOverlap):
        def score_pairs(self, queries, texts):
            return np.where(["flea" in t for t in texts], np.nan, super().score_pairs(queries, texts))

    with pytest.raises(DataError, match="Broken gave a non-finite score \\(nan\\) to document '1' of query 'flea life'"):
        Broken().rerank("flea life", ["cats purr", "the life cycle of a flea"])    # it used to be ranked last, as nan
    ranking = Ranking.from_records([("q1", "flea", "a", 1.0), ("q1", "flea", "b", 0.5)]).assign(text=["cats", "flea facts"])
    with pytest.raises(DataError, match="to document 'b' of query 'flea'"):
        Broken()(ranking)


def test_rerank_takes_any_iterable_of_texts():
    texts = ["cats purr", "the life cycle of a flea"]
    expected = TermOverlap().rerank("flea life", texts)
    assert TermOverlap().rerank("flea life", (t for t in texts)) == TermOverlap().rerank("flea life", np.array(texts)) == expected


def test_custom_rerankers_in_a_pipeline_on_trec_dl():
    ds = load("trec-dl-2019")
    topics = Ranking.from_queries(ds.queries()[:3])
    first_stage = RunRetriever("bm25", dataset=ds)
    pipe = first_stage % 20 >> TermOverlap(batch_size=7) % 10
    out = pipe(topics)
    frame = out.to_pandas()
    assert len(frame) == 30 and frame.groupby("qid")["rank"].max().tolist() == [10, 10, 10]
    assert (frame.groupby("qid")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()

    by_length = (first_stage % 5 >> ShortestFirst())(topics)
    for c in by_length.per_query():
        assert [len(t) for t in c.texts] == sorted(len(t) for t in c.texts)


def test_registering_a_custom_reranker_by_name():
    register("reranker", "term-overlap")(TermOverlap)
    judge = get("reranker", "term-overlap", batch_size=4)
    assert isinstance(judge, TermOverlap) and repr(judge) == "TermOverlap(batch_size=4)"
    inp = Ranking.from_records([("q", "flea", "a", 1.0), ("q", "flea", "b", 0.5)]).assign(text=["cats", "flea facts"])
    assert judge(inp).to_pandas()["docid"].tolist() == ["b", "a"]


def test_a_class_defined_again_under_its_name_replaces_its_registration():
    """A notebook cell run twice defines the class anew; a different class under the name is refused."""
    for weight in (1.0, 2.0):
        @register("reranker", "weighted-overlap")
        class WeightedOverlap(TermOverlap):
            def score_pairs(self, queries, texts):
                return weight * super().score_pairs(queries, texts)

    assert get("reranker", "weighted-overlap").rerank("flea", ["a flea"])[0].score == 2.0
    with pytest.raises(ConfigError, match="'weighted-overlap' would shadow or be shadowed"):
        register("reranker", "weighted-overlap")(ShortestFirst)
    register("reranker", "weighted_overlap")(WeightedOverlap)                       # one class, both spellings


def test_an_argument_kept_under_no_attribute_is_refused_not_mistaken_for_another_stage():
    class Private(TermOverlap):
        def __init__(self, weight: float = 1.0):
            self.w = weight  # neither self.weight nor self._weight

    class Kept(TermOverlap):
        def __init__(self, weight: float = 1.0):
            self._weight = weight

    with pytest.raises(ConfigError, match="Private keeps its argument 'weight' under no attribute self.weight"):
        repr(Private(weight=2.0))
    assert Kept(weight=2.0) != Kept(weight=-1.0) and repr(Kept(weight=2.0)) == "Kept(weight=2.0)"


def test_a_constructor_taking_keyword_options_is_refused_unless_the_class_names_its_identity():
    class Options(TermOverlap):
        def __init__(self, **options: float):
            self.options = options

    class Named(Options):
        def params(self):
            return dict(self.options)

    with pytest.raises(ConfigError, match=r"Options takes \*\*options, which its identity \(repr, ==, caches\) cannot see"):
        Options(sign=1.0)  # else Options(sign=-1.0) would pass for it, and an Experiment would share its scores
    assert Named(sign=1.0) != Named(sign=-1.0) and repr(Named(sign=1.0)) == "Named(sign=1.0)"


class Drops(Reranker):
    def rerank_candidates(self, cands):
        return cands.top(len(cands) // 2)


class Invents(Reranker):
    def rerank_candidates(self, cands):
        return Candidates(cands.qid, cands.query, [d + "x" for d in cands.docids], cands.texts, cands.scores)


class Repeats(Reranker):
    """Its last document replaced by a second copy of its first (said to be only 'dropped 1', review helper-91)."""

    def rerank_candidates(self, cands):
        return Candidates(cands.qid, cands.query, [*cands.docids[:-1], cands.docids[0]], [*cands.texts[:-1], cands.texts[0]],
                          cands.scores)


class Unsorted(Reranker):
    def rerank_candidates(self, cands):
        return Candidates(cands.qid, cands.query, cands.docids, cands.texts, np.array([len(t) for t in cands.texts], float))


@pytest.mark.parametrize("cls, message", [
    (Drops, "Drops must return every candidate of query 'q1' once; it dropped 2 \\(e.g. 'c'\\) of its 4 documents"),
    (Invents, "Invents must return every candidate of query 'q1' once; it dropped 4 \\(e.g. 'a'\\), added 4"),
    (Repeats, "Repeats must return every candidate of query 'q1' once; it dropped 1 \\(e.g. 'd'\\), repeated 1 \\(e.g. 'a'\\) of its 4"),
])
def test_a_reranker_that_loses_or_invents_documents_is_refused(cls, message):
    ranking = Ranking.from_records([("q1", "flea", d, 4.0 - i) for i, d in enumerate("abcd")]).assign(text=["w"] * 4)
    with pytest.raises(DataError, match=message):
        cls()(ranking)
    with pytest.raises(DataError, match=message.replace("'q1'", "'q'")):
        cls().rerank("flea", [Doc(d, "w") for d in "abcd"])


class TextsLeftBehind(Reranker):
    def rerank_candidates(self, cands):
        return replace(cands, docids=cands.docids[::-1], scores=np.arange(len(cands), 0, -1.0))


class NewQuery(Reranker):
    def rerank_candidates(self, cands):
        return replace(cands, query=cands.query.upper())


class ShortTitles(Reranker):
    def rerank_candidates(self, cands):
        return replace(cands, titles=[t[:1] for t in cands.titles])


class TitlesDropped(Reranker):
    def rerank_candidates(self, cands):
        return Candidates(cands.qid, cands.query, cands.docids, cands.texts, cands.scores)


class UpperCasesInPlace(Reranker):
    def rerank_candidates(self, cands):
        cands.texts[:] = [t.upper() for t in cands.texts]  # checked against its input afterwards, it passed
        return cands.reordered(range(len(cands))[::-1])


@pytest.mark.parametrize("cls, message", [
    (TitlesDropped, "TitlesDropped returned the documents of query 'q1' without their titles"),
    (UpperCasesInPlace, "UpperCasesInPlace returned document 'd' of query 'q1' with another text than it was given"),
    (TextsLeftBehind, "TextsLeftBehind returned document 'd' of query 'q1' with another text than it was given"),
    (NewQuery, "NewQuery changed the text of query 'q1' \\('flea' to 'FLEA'\\)"),
    (ShortTitles, "ShortTitles returned document 'a' of query 'q1' with another title"),
])
def test_a_reranker_that_pairs_docids_with_other_texts_or_changes_the_query_is_refused(cls, message):
    """A reranker that reversed docids but left texts in place paired them with other passages, silently (review helper-80)."""
    ranking = Ranking.from_records([("q1", "flea", d, 4.0 - i) for i, d in enumerate("abcd")]).assign(
        text=[f"text {d}" for d in "abcd"], title=[f"title {d}" for d in "abcd"])
    with pytest.raises(DataError, match=message):
        cls()(ranking)
    with pytest.raises(DataError, match=message.replace("'q1'", "'q'")):
        cls().rerank("flea", [Doc(d, f"text {d}", f"title {d}") for d in "abcd"])


def test_rerankers_and_fusion_keep_the_inputs_other_columns_as_a_cutoff_does():
    """PyTerrier keeps extra columns; a reranker and Fuse dropped them (review helper-80)."""
    frame = pd.DataFrame({"qid": ["q1"] * 3, "query": ["cats at night"] * 3, "docid": ["a", "b", "c"], "score": [3.0, 2.0, 1.0],
                          "text": ["dogs", "cats at night", "cats"], "url": ["u-a", "u-b", "u-c"], "tags": [["x"], ["y"], []]})
    overlap = TermOverlap()
    for stage in (Cutoff(2), overlap, overlap % 2 >> overlap, Fuse([overlap, Cutoff(2)]), Fuse([overlap, Cutoff(2)], method="wsum")):
        out = stage(frame).to_pandas()
        assert dict(zip(out["docid"], out["url"])) == {d: f"u-{d}" for d in out["docid"]}, repr(stage)
        assert dict(zip(out["docid"], out["tags"])) == {d: t for d, t in zip("abc", [["x"], ["y"], []]) if d in set(out["docid"])}


def test_scores_left_out_of_order_are_sorted_so_rerank_and_a_pipeline_agree():
    texts = ["a", "bbbbbb", "cc"]
    results = Unsorted().rerank("q", texts)
    assert [r.docid for r in results] == ["1", "2", "0"] and [r.rank for r in results] == [1, 2, 3]
    ranking = Ranking.from_records([("q1", "q", str(i), 1.0) for i in range(3)]).assign(text=texts)
    assert Unsorted()(ranking).to_pandas()["docid"].tolist() == ["1", "2", "0"]


def test_broken_plugin_entries_are_one_line_naming_them():
    from rerank.registry import _ENTRIES, resolve

    _ENTRIES["reranker"]["ghost"] = "tests.test_custom_reranker:DoesNotExist"
    _ENTRIES["retriever"]["not-a-stage"] = "rerank.backends.fake:FakeBackend"
    try:
        with pytest.raises(ConfigError, match=r"reranker 'ghost' \(tests.test_custom_reranker:DoesNotExist\) cannot be loaded: AttributeError"):
            resolve("reranker", "ghost")
        with pytest.raises(ConfigError, match=r"retriever 'not-a-stage' .* must be a subclass of rerank.stage.Stage"):
            resolve("retriever", "not-a-stage")
    finally:
        del _ENTRIES["reranker"]["ghost"], _ENTRIES["retriever"]["not-a-stage"]
    for name, clash in (("http", "a URL scheme"), ("smollm2", "a model alias")):
        with pytest.raises(ConfigError, match=f"backend '{name}' is {clash}"):
            from rerank.backends.fake import FakeBackend

            register("backend", name)(FakeBackend)


@pytest.mark.parametrize("scores, message", [
    (lambda n: ["high"] * n, "Wordy.score_pairs returned \\['high', 'high'\\], not numbers"),
    (lambda n: ["1.5"] * n, "Wordy.score_pairs returned \\['1.5', '1.5'\\], not numbers"),  # numpy read it as 1.5
    (lambda n: [True, False][:n], "Wordy.score_pairs returned \\[True, False\\], not numbers"),  # and these as 1, 0
    (lambda n: np.array([True, False])[:n], "Wordy.score_pairs returned array\\(\\[ True, False\\]\\), not numbers"),
    (lambda n: [1.0] * (n + 1), "Wordy.score_pairs returned shape \\(3,\\) for 2 pairs"),
])
def test_scores_that_are_not_one_number_per_pair_are_refused_naming_the_reranker(scores, message):
    class Wordy(TermOverlap):
        def score_pairs(self, queries, texts):
            return scores(len(texts))

    with pytest.raises(DataError, match=message):
        Wordy().rerank("flea", ["a flea", "a cat"])


@pytest.mark.parametrize("scores, message", [
    (lambda c: np.array(["1", "10", "2"]), "Direct returned scores array\\(\\['1', '10', '2'\\].* for query 'q', not numbers"),  # a ufunc error
    (lambda c: [True, False, True], "Direct returned scores \\[True, False, True\\] for query 'q', not numbers"),  # read as 1, 0
    (lambda c: np.arange(3) + 1j, "Direct returned scores .* not numbers"),                                            # its real part
    (lambda c: np.ones((3, 1)), "Direct returned scores of shape \\(3, 1\\) for the 3 documents of query 'q'"),
])
def test_scores_a_reranker_returns_in_its_candidates_are_numbers_as_score_pairs_must_be(scores, message):
    """A reranker of its own (rerank_candidates) returning text or booleans as scores got numpy's error or
    a silent reading, where score_pairs refused them (review helper-91)."""
    class Direct(Reranker):
        def rerank_candidates(self, cands):
            return replace(cands, scores=scores(cands))

    with pytest.raises(DataError, match=message):
        Direct().rerank("flea", ["a", "b", "c"])
    with pytest.raises(TypeError, match="are not numbers"):
        Candidates("q", "flea", ["a", "b"], ["x", "y"], np.ones(2)).with_scores(["2", "10"])


# -- a plugin that is not a package: rerank --plugin FILE.py|MODULE -----------------------------------
PLUGIN = '''
import numpy as np
from rerank import register
from rerank.rerankers.base import PointwiseReranker

@register("reranker", "{name}")
class Overlap(PointwiseReranker):
    def score_pairs(self, queries, texts):
        return np.array([len(set(q.lower().split()) & set(t.lower().split())) for q, t in zip(queries, texts)], float)
'''


@pytest.fixture
def plugin_env(monkeypatch):
    """Keep the plugin list, PYTHONPATH and sys.path of this process as they were."""
    monkeypatch.delenv("RERANK_PLUGINS", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(sys, "path", list(sys.path))


def test_a_plugin_file_or_module_registers_its_stages_for_the_command_line_and_its_child_processes(tmp_path, capsys, monkeypatch, plugin_env):
    from rerank.cli import main

    (tmp_path / "my_overlap_file.py").write_text(PLUGIN.format(name="file-overlap"))
    code = main(["--quiet", "--plugin", str(tmp_path / "my_overlap_file.py"), "search", "--dataset", "scifact",
                 "--pipeline", "bm25 % 5 >> file-overlap", "-k", "2", "vitamin D"])
    assert code == 0 and len(capsys.readouterr().out.strip().splitlines()) >= 2
    assert os.environ["RERANK_PLUGINS"] == str(tmp_path / "my_overlap_file.py")  # what child processes import
    listed = subprocess.run([sys.executable, "-m", "rerank.cli", "list", "rerankers"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": ""}, cwd=tmp_path)  # a child finds the file anywhere
    assert listed.returncode == 0 and "file-overlap" in listed.stdout, listed.stderr
    monkeypatch.chdir(tmp_path)  # a module name is looked up in the working directory too
    (tmp_path / "my_overlap_module.py").write_text(PLUGIN.format(name="module-overlap"))
    assert main(["--quiet", "--plugin", "my_overlap_module", "list", "rerankers"]) == 0
    assert "module-overlap" in capsys.readouterr().out


@pytest.mark.parametrize("file, text, message", [
    ("nosuch_plugin.py", None, "plugin '{path}': no such file"),
    ("broken_syntax.py", "def (:\n", "plugin '{path}' cannot be imported: SyntaxError"),
    ("raises_at_import.py", "raise RuntimeError('no GPU here')\n", "cannot be imported: RuntimeError: no GPU here"),
    ("bad_name_plugin.py", PLUGIN.format(name="bad name"), "cannot be imported: reranker name 'bad name' cannot be written"),
    ("json.py", PLUGIN.format(name="json-overlap"), "the module name 'json' is taken by"),
    ("my-plugin.py", PLUGIN.format(name="dash-overlap"), "'my-plugin' is not a Python module name; rename it"),
])
def test_a_plugin_that_cannot_be_imported_is_one_line_exit_2(tmp_path, capsys, plugin_env, file, text, message):
    from rerank.cli import main

    if text is not None:
        (tmp_path / file).write_text(text)
    path = str(tmp_path / file)
    assert main(["--quiet", "--plugin", path, "list", "rerankers"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(path=path) in err, err
    assert main(["--quiet", "--plugin", "no_such_module_anywhere", "list"]) == 2
    assert "plugin 'no_such_module_anywhere' cannot be imported: ModuleNotFoundError" in capsys.readouterr().err


def test_a_saved_cell_runs_again_after_its_plugins_code_changes(tmp_path, capsys, plugin_env, caplog):
    import logging

    from rerank.cli import main

    plugin = tmp_path / "stamped_overlap.py"
    plugin.write_text(PLUGIN.format(name="stamped-overlap"))
    args = ["--plugin", str(plugin), "eval", "--dataset", "scifact", "--limit", "2", "--save-runs", str(tmp_path / "out"),
            "--pipeline", "bm25 % 3 >> stamped-overlap"]

    def runs() -> int:
        return caplog.text.count("done: bm25 % 3 >> stamped-overlap")

    with caplog.at_level(logging.INFO, logger="rerank"):
        assert main(args) == 0 and runs() == 1
        assert main(args) == 0 and runs() == 1  # nothing changed: the saved cell stands
        plugin.write_text(PLUGIN.format(name="stamped-overlap").replace("len(set(q", "-len(set(q"))
        assert main(args) == 0 and runs() == 2  # its code changed: the saved cell is not trusted


def test_code_stamps_cover_base_classes_in_other_modules(tmp_path, plugin_env):
    from rerank.models import code_stamps
    from rerank.registry import import_plugin

    (tmp_path / "stamped_base.py").write_text(PLUGIN.format(name="stamped-base-unused").replace("class Overlap", "class Base"))
    (tmp_path / "stamped_leaf.py").write_text("from rerank import register\nfrom stamped_base import Base\n\n"
                                              "@register('reranker', 'stamped-leaf')\nclass Leaf(Base):\n    pass\n")
    import_plugin(str(tmp_path / "stamped_leaf.py"))
    before = code_stamps("bm25 >> stamped-leaf")
    assert set(before) == {"stamped_base", "stamped_leaf"}
    (tmp_path / "stamped_base.py").write_text((tmp_path / "stamped_base.py").read_text() + "\n# edited\n")
    assert code_stamps("bm25 >> stamped-leaf")["stamped_base"] != before["stamped_base"]


# -- found by an adversarial review of the caches (helper-53): every cache follows a plugin's code ------
def _edit(path) -> None:
    path.write_text(path.read_text() + "\n# edited\n")


def test_a_saved_shared_prefix_runs_again_after_its_plugins_code_changes(tmp_path, plugin_env, caplog):
    """The prefix's key is its stages' description, which does not parse: its stamps come from the stages."""
    import logging

    from rerank.cli import main

    plugin = tmp_path / "prefix_overlap.py"
    plugin.write_text(PLUGIN.format(name="prefix-overlap"))
    args = ["--plugin", str(plugin), "eval", "--dataset", "scifact", "--limit", "2", "--save-runs", str(tmp_path / "out"),
            "--pipeline", "A=bm25 % 3 >> prefix-overlap", "--pipeline", "B=bm25 % 3 >> prefix-overlap % 2"]

    def prefixes() -> int:
        return caplog.text.count("shared prefix on scifact")

    with caplog.at_level(logging.INFO, logger="rerank"):
        assert main(args) == 0 and prefixes() == 1
        shutil.rmtree(tmp_path / "out" / "scifact" / "A", ignore_errors=True)
        for record in (tmp_path / "out").rglob("A.json"):
            record.unlink()                                   # A runs again: its prefix is read from disk
        assert main(args) == 0 and prefixes() == 1
        _edit(plugin)
        assert main(args) == 0 and prefixes() == 2            # edited: the saved prefix is not trusted


def test_the_index_cache_call_cache_and_teacher_scores_follow_a_plugins_code(tmp_path, plugin_env):
    from rerank.backends.base import backend_id, code_suffix
    from rerank.index_cache import index_folder
    from rerank.registry import import_plugin
    from rerank.train.distill import TeacherScores

    plugin = tmp_path / "stamped_stages.py"
    plugin.write_text(PLUGIN.format(name="stamped-teacher") + textwrap.dedent("""
        from rerank.backends.fake import FakeBackend
        from rerank.retrievers.bm25 import BM25

        class TitleBM25(BM25):  # not registered: the registry's doctests list the retrievers
            pass

        class MyFake(FakeBackend):
            pass
        """))
    import_plugin(str(plugin))
    ds = load("scifact")
    module = sys.modules["stamped_stages"]
    retriever, backend = module.TitleBM25(), module.MyFake()
    teacher = TeacherScores("bm25 % 3 >> stamped-teacher", ds, depth=3, cache=tmp_path / "calls.sqlite")
    before = (index_folder(retriever, ds, tmp_path), backend_id(backend), teacher._key("q1", "why"))
    _edit(plugin)
    code_suffix.cache_clear()  # read once per class, the code that runs: as a new process would see the edit
    teacher = TeacherScores("bm25 % 3 >> stamped-teacher", ds, depth=3, cache=tmp_path / "calls.sqlite")
    after = (index_folder(retriever, ds, tmp_path), backend_id(backend), teacher._key("q1", "why"))
    assert all(b != a for b, a in zip(before, after)), (before, after)
    assert "~" not in backend_id(FakeBackend())              # rerank's own backends keep their ids


def test_a_class_named_by_an_argument_and_a_class_without_a_source_file_are_stamped(tmp_path, plugin_env):
    import types

    from rerank.models import class_stamps, code_stamps
    from rerank.registry import import_plugin

    (tmp_path / "anncur_scorer.py").write_text(PLUGIN.format(name="anncur-scorer"))
    import_plugin(str(tmp_path / "anncur_scorer.py"))
    assert "anncur_scorer" in code_stamps("anncur(scorer='anncur-scorer')")   # ANNCUR builds it from its name
    notebook = types.ModuleType("a_notebook_cell")                        # as in Jupyter or `python -`
    scorer = type("Scorer", (), {"__module__": "a_notebook_cell"})
    sys.modules["a_notebook_cell"] = notebook
    try:
        stamp = class_stamps([scorer])["a_notebook_cell"]
    finally:
        del sys.modules["a_notebook_cell"]
    assert stamp.startswith("session ")                                  # this process's: never another's saved cells


@pytest.mark.parametrize("runtime", ["ctranslate2", "auto"])
def test_a_plugin_with_a_runtime_of_its_own_is_stamped_by_its_code_and_runs(tmp_path, capsys, plugin_env, runtime):
    """resolved_stamps resolves rerank's own cross-encoder's runtime only: a plugin's is its business,
    and may not need torch (reviews helper-55, helper-56)."""
    from rerank.cli import main
    from rerank.models import code_stamps, resolved_stamps

    name = f"own-runtime-{runtime}"
    plugin = tmp_path / f"own_runtime_{runtime}.py"
    plugin.write_text(PLUGIN.format(name=name).replace(
        "    def score_pairs", f"    def __init__(self, model='my/model', runtime='{runtime}'):\n"
        "        self.model, self.runtime = model, runtime\n\n    def score_pairs"))
    assert main(["--quiet", "--plugin", str(plugin), "eval", "--dataset", "scifact", "--limit", "2", "--pipeline", "bm25",
                 "--pipeline", f"bm25 % 5 >> {name}", "--save-runs", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert resolved_stamps(f"bm25 % 5 >> {name}") == [] and f"own_runtime_{runtime}" in code_stamps(f"bm25 % 5 >> {name}")


def test_a_stage_named_by_any_argument_is_stamped_with_what_it_resolves_to(tmp_path, plugin_env):
    """A plugin wrapping ``inner='yes-no'`` runs SmolLM2 through it: its weights are in the keys too."""
    from rerank.models import code_stamps, resolved_stamps, weights_stamp
    from rerank.registry import import_plugin

    plugin = tmp_path / "wrapping.py"
    plugin.write_text(PLUGIN.format(name="wrapping").replace(
        "    def score_pairs", "    def __init__(self, inner='yes-no'):\n        self.inner = inner\n\n    def score_pairs"))
    import_plugin(str(plugin))
    assert resolved_stamps("bm25 >> wrapping") == [{"stage": "Overlap", "inner": [{"stage": "YesNo", "backend": {
        "spec": "hf:smollm2", "weights": weights_stamp("smollm2"), "gpu": False}}]}]
    assert "wrapping" in code_stamps("bm25 >> wrapping")


class Slotted:
    """A stage-like object that keeps its arguments in slots: no ``__dict__`` to read them from."""

    __slots__ = ("inner",)

    def __init__(self, inner: str = "yes-no"):
        self.inner = inner


def test_stamping_an_object_without_a_dict_reads_no_arguments_and_does_not_fail():
    from rerank.models import code_stamps, resolved_stamps

    assert set(code_stamps(Slotted())) == {__name__} and resolved_stamps(Slotted()) == []


def test_an_index_of_a_retriever_defined_without_a_source_file_is_not_cached_on_disk(tmp_path):
    """No other process could reuse it (its code is stamped for this one): a notebook would leave a new
    folder per kernel restart (review helper-56)."""
    import types

    from rerank.index_cache import index_folder, indexed
    from rerank.retrievers.bm25 import BM25

    sys.modules["a_notebook_index"] = types.ModuleType("a_notebook_index")
    try:
        retriever = type("NotebookBM25", (BM25,), {"__module__": "a_notebook_index"})()
        ds = load("scifact")
        assert indexed(retriever, ds, tmp_path).is_indexed and not index_folder(retriever, ds, tmp_path).exists()
    finally:
        del sys.modules["a_notebook_index"]


def test_a_module_without_source_is_stamped_by_its_compiled_file(tmp_path, plugin_env):
    """A plugin shipped as .pyc (or .so) keeps its stamp across processes; only code with no file at all is
    this process's."""
    import py_compile

    from rerank.models import class_stamps

    source = tmp_path / "compiled_only.py"
    source.write_text("class Scorer:\n    pass\n")
    py_compile.compile(str(source), cfile=str(tmp_path / "compiled_only.pyc"))
    source.unlink()
    sys.path.insert(0, str(tmp_path))
    import compiled_only

    stamp = class_stamps([compiled_only.Scorer])["compiled_only"]
    assert stamp and not stamp.startswith("session ") and class_stamps([compiled_only.Scorer])["compiled_only"] == stamp


@pytest.mark.parametrize("files, spec, message", [
    ({"test.py": PLUGIN.format(name="shadowed-overlap")}, "test", "the module name 'test' is taken by"),
    ({"exits_plugin.py": "raise SystemExit(5)\n"}, "exits_plugin.py", "cannot be imported: it called sys.exit(5)"),
    ({}, "a:b.py", "cannot hold ':', which separates $RERANK_PLUGINS"),
])
def test_plugins_that_would_be_misread_are_one_line(tmp_path, capsys, monkeypatch, plugin_env, files, spec, message):
    from rerank.cli import main

    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert main(["--quiet", "--plugin", spec, "list", "rerankers"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
