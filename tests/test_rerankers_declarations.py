"""Declarations that cannot work are refused when they are made, and odd answers are counted.

A plugin author combines a Task, a Strategy and Settings; each wrong combination below used to run
and give a wrong ranking or crash deep inside. These tests pin the one-line refusals.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources

import numpy as np
import pytest

from rerank import register
from rerank.backends.fake import FakeBackend
from rerank.errors import BackendError, ConfigError, DataError
from rerank.prompts import load as load_prompt
from rerank.rerankers._llm import LLMReranker, Settings
from rerank.rerankers._parsing import parse
from rerank.rerankers._strategies import Groups, PairSort, Pointwise, SetSort, SinglePass, SlidingWindow
from rerank.rerankers._tasks import Pick, Prefer, Rank, Score, Scores, Think
from rerank.rerankers.insertrank import InsertRank
from rerank.rerankers.listwise import Listwise
from rerank.rerankers.pairwise import PRP
from rerank.rerankers.pointwise import ERank, YesNo
from rerank.rerankers.setwise import Setwise

RANKS = FakeBackend(generate=lambda p: "[2] > [1]")
TASKS = {"order": Rank(), "pick": Pick(), "preference": Prefer(), "score": Score(), "scores": Scores()}
STRATEGIES = {"order": SinglePass(), "pick": SetSort(), "preference": PairSort(), "score": Pointwise(), "scores": Groups()}


@pytest.mark.parametrize("gives,takes", [(g, t) for g in TASKS for t in STRATEGIES if g != t])
def test_a_task_whose_answers_the_strategy_cannot_read_is_refused(gives, takes):
    task, strategy = TASKS[gives], STRATEGIES[takes]
    with pytest.raises(ConfigError, match=rf"LLMReranker: a {type(task).__name__} task gives {gives} answers, "
                                          rf"but a {type(strategy).__name__} strategy takes {takes} answers"):
        LLMReranker(RANKS, "listwise/rankgpt", task=task, strategy=strategy)


def test_a_users_strategy_that_declares_what_it_takes_fits_the_tasks_that_give_it():
    @dataclasses.dataclass(frozen=True)
    class Reverse(SinglePass):
        """All candidates in one prompt; the answer's order, reversed."""

        def plan(self, n):
            return list(reversed((yield [list(range(n))])[0])) if n else []

    assert LLMReranker(RANKS, "listwise/rankgpt", task=Rank(), strategy=Reverse()).rerank("q", ["a", "b"]).docids == ["0", "1"]

    @dataclasses.dataclass(frozen=True)
    class Undeclared:
        pass

    with pytest.raises(ConfigError, match="strategy must be a strategy object"):
        LLMReranker(RANKS, "listwise/rankgpt", task=Rank(), strategy=Undeclared())


@pytest.mark.parametrize("given,message", [
    ({"task": "rank"}, "task must be a task object (a dataclass instance such as Rank()), got 'rank'"),
    ({"task": Rank}, "task must be a task object"),
    ({"strategy": SlidingWindow}, "strategy must be a strategy object"),
    ({"strategy": None, "task": None}, "needs a task and a strategy"),
])
def test_a_part_that_is_not_a_task_or_strategy_object_is_refused(given, message):
    parts = {"task": Rank(), "strategy": SinglePass(), **given}
    with pytest.raises(ConfigError, match=re.escape(message)):
        LLMReranker(RANKS, "listwise/rankgpt", **parts)


@pytest.mark.parametrize("given", [{"prompt": "listwise/rankgpt"}, None, Settings])
def test_defaults_that_are_not_a_settings_object_are_refused(given):
    with pytest.raises(ConfigError, match=r"^E: defaults must be a Settings object \(Settings\(prompt=...\)\), got"):
        class E(LLMReranker):
            task = Rank()
            strategy = SinglePass()
            defaults = given


@pytest.mark.parametrize("window,hint", [(10, "e.g. step=5"), (1, "so window must be at least 2")])
def test_a_step_as_long_as_the_window_is_refused_with_a_way_out(window, hint):
    with pytest.raises(ConfigError, match=rf"^Listwise: step \(\d+\) must be smaller than window \({window}\) so windows overlap \({hint}\)$"):
        Listwise(RANKS, window=window, step=max(1, window))


def test_think_wraps_a_task_once():
    with pytest.raises(ConfigError, match=r"Think wraps a task \(Rank\(\), Pick\(\), ...\), got Think"):
        Think(Think(Rank()))


def test_a_think_task_needs_a_budget_unless_zero_is_asked_for():
    with pytest.raises(ConfigError, match="F: declares a Think task with no think budget"):
        class F(LLMReranker):
            task = Think(Rank())
            strategy = SinglePass()
            defaults = Settings(prompt="listwise/rankgpt")

    with pytest.raises(ConfigError, match="a Think task needs think_tokens > 0"):
        LLMReranker(RANKS, "listwise/rankgpt", task=Think(Rank()), strategy=SinglePass())
    thinks = FakeBackend(generate=lambda p: "b first</think>" if p.endswith("<think>\n") else "2] > [1]")
    res = LLMReranker(thinks, "listwise/rankgpt", task=Think(Rank()), strategy=SinglePass(), think_tokens=8).rerank("q", ["a", "b"])
    assert res.docids == ["1", "0"] and res.info["reasoning"] == ["b first"]
    plain = LLMReranker(RANKS, "listwise/rankgpt", task=Think(Rank()), strategy=SinglePass(), think_tokens=0)
    assert "reasoning" not in plain.rerank("q", ["a", "b"]).info


def test_argument_names_that_clash_are_refused_when_the_family_is_declared():
    @dataclasses.dataclass(frozen=True)
    class Deep(SinglePass):
        depth: int = 3

    with pytest.raises(ConfigError, match="D: argument 'depth' is a field of both the strategy and the settings"):
        class D(LLMReranker):
            task = Rank()
            strategy = Deep()
            defaults = Settings(prompt="listwise/rankgpt")

    for renames in ({"mode": "nonexistent"}, {"depth": "read"}):
        with pytest.raises(ConfigError, match=f"A: alias {next(iter(renames))!r}"):
            class A(LLMReranker):
                task = Rank()
                strategy = SinglePass()
                defaults = Settings(prompt="listwise/rankgpt")
                aliases = renames


@pytest.mark.parametrize("family,section,text,needed", [
    (Listwise, "item", "[{index}]", "{text} and {index} in its item"),
    (Listwise, "item", "{text}", "{text} and {index} in its item"),
    (Setwise, "item", "[{index}] {text}", "{text} and {label} in its item"),
    (PRP, "item", "Passage: {text}", "{text} and {label} or {index} in its item"),
    (YesNo, "prefix", "Query: {query}\nRelevant?", "{text} in its prefix or item"),
])
def test_a_template_that_hides_the_documents_or_their_ids_is_refused(family, section, text, needed):
    template = load_prompt(family.defaults.prompt).with_(**{section: text})
    with pytest.raises(ConfigError, match=re.escape(needed)):
        family(RANKS, prompt=template)


def test_backend_specs_given_in_python_are_checked_when_the_reranker_is_built():
    with pytest.raises(ConfigError, match=r"Listwise: backend spec 'nosuch:x' is not 'kind:model'"):
        Listwise(backend="nosuch:x")


@pytest.mark.parametrize("scores,message", [
    ([np.nan, 1.0], "scores must be finite; score 0 is nan"),
    ([1.0, np.inf], "scores must be finite; score 1 is inf"),
    ([1.0], r"scores must be one number per document: 2 documents, scores of shape \(1,\)"),
    (["x", 1.0], "scores must be numbers"),
    (["1_000", "2"], "scores must be numbers; '1_000' is not"),  # review helper-72: read as 1000, as True as 1
    ([True, False], "scores must be numbers; True is not"),
    ("12", "scores must be one number per document"),
])
def test_first_stage_scores_given_to_rerank_are_checked(scores, message):
    with pytest.raises(DataError, match=message):
        InsertRank(RANKS, normalize="minmax").rerank("q", ["a", "b"], scores=scores)


@pytest.mark.parametrize("family,options", [
    (YesNo, {}), (Setwise, {"scoring": "likelihood", "k": 1, "set_size": 2}), (PRP, {"variant": "allpair"}),
])
def test_non_finite_log_probabilities_are_counted_and_never_reach_the_scores(family, options):
    broken = FakeBackend(score=lambda p, opts: [float("nan")] + [-1.0] * (len(opts) - 1))
    res = family(broken, **options).rerank("q", ["a", "b", "c"])
    assert all(np.isfinite(r.score) for r in res)
    assert res.info["parse"]["problems"]["not_finite"] == res.info["parse"]["answers"] > 0


@pytest.mark.parametrize("family", [YesNo, ERank])
def test_a_document_whose_log_probabilities_are_all_non_finite_ranks_last(family):
    def score(prompt, options):
        return [float("nan")] * len(options) if "broken" in prompt else [-3.0] + [-0.1] * (len(options) - 1)

    res = family(FakeBackend(score=score)).rerank("q", ["good doc", "broken doc", "other doc"])
    assert res.docids[-1] == "1" and all(np.isfinite(r.score) for r in res)
    assert res.info["parse"]["problems"] == {"not_finite": 1}


def test_an_unknown_option_is_no_certain_answer_and_a_zero_probability_is_no_repair():
    """[finite, NaN] read as P(No) far below P(Yes): the document looked certainly relevant (review
    helper-61). -inf is a probability of 0, which exclusive option scores can give."""
    def score(prompt, options):
        return {"unknown": [-0.1, float("nan")], "sure": [-0.1, -np.inf]}.get(prompt.split("Document: ")[1].split("\n")[0],
                                                                             [-1.0, -0.5])
    res = YesNo(FakeBackend(score=score)).rerank("q", ["unknown", "sure", "plain"])
    assert res.docids == ["1", "2", "0"] and res[0].score == 0.0
    assert res.info["parse"]["problems"] == {"not_finite": 1}


@pytest.mark.parametrize("count", [lambda text: len(text) / 4, lambda text: None, lambda text: -1])
@pytest.mark.parametrize("family", [YesNo, Listwise])
def test_a_backend_that_counts_tokens_in_other_than_whole_numbers_is_named(family, count):
    """A backend estimating len(text) / 4 tokens made the answer cap 'max_new_tokens must be an integer >= 1,
    got 5.25', naming a setting nobody gave; None was a TypeError (review helper-91)."""
    class Estimating(FakeBackend):
        def count_tokens(self, text):
            return count(text)

    backend = Estimating(generate=lambda p: "[2] > [1]", score=lambda p, o: [0.0, -1.0])
    with pytest.raises(BackendError, match=r"Estimating\('fake'\)\.count_tokens\('.*'\) gave .*, not a number of tokens \(an int >= 0\)$"):
        family(backend).rerank("q", ["a", "b"])


def test_a_backend_that_scores_with_probabilities_is_named():
    """Probabilities (or logits) where log-probabilities belong were read as log-probabilities: an expected
    rating is then a softmax over numbers near 0 and ranks wrongly, with every answer valid (review helper-91)."""
    probabilities = FakeBackend(score=lambda p, options: [1.0 / len(options)] * len(options))
    for reranker in (YesNo(probabilities), ERank(probabilities)):
        with pytest.raises(BackendError, match=r"FakeBackend\('fake'\)\.score returned 0\.\d+, which is no log-probability \(they are <= 0\)$"):
            reranker.rerank("q", ["a", "b"])
    rounded = FakeBackend(score=lambda p, options: [5e-5] + [-1.0] * (len(options) - 1))  # a bfloat16 engine's 0
    assert YesNo(rounded).rerank("q", ["a"]).docids == ["0"]


@pytest.mark.parametrize("context", [None, "2048", 2048.0, 0])
def test_a_backend_whose_context_is_no_number_of_tokens_is_named(context):
    """max_context None or "2048" on a plugin's backend was a bare TypeError (review helper-91)."""
    backend = FakeBackend(generate=lambda p: "[2] > [1]", score=lambda p, o: [0.0, -1.0], max_context=context)
    for family in (YesNo, Listwise):
        with pytest.raises(BackendError, match=r"FakeBackend\('fake'\)\.max_context gave .*, not a number of tokens \(an int >= 1\)$"):
            family(backend).rerank("q", ["a", "b"])


def test_reserved_tokens_that_fill_the_context_name_the_arguments():
    for reranker in (YesNo(FakeBackend(score=lambda p, o: [0.0, -1.0]), think_tokens=5000),
                     Listwise(RANKS, max_new_tokens=5000, window=3, step=1)):
        with pytest.raises(ConfigError, match=r"think_tokens \(\d+\) and the answer cap \(\d+ tokens"):
            reranker.rerank("q", ["a", "b"])
    one = YesNo(FakeBackend(score=lambda p, o: [0.0, -1.0], max_context=60), max_words=300)
    with pytest.raises(ConfigError, match=r"1 document\(s\) do not fit .*; use a longer-context model$"):
        one.rerank("q", ["word " * 400])


def test_odd_answers_are_reported_not_taken_as_valid():
    assert parse("rating", "9" * 400, 1).problems == ("not_finite",)
    assert parse("scores", "[1]:", 2).problems == ("empty",)  # an empty answer after the answer prefix
    assert parse("scores", "[1]: 5\n[1]: 9", 2).problems == ("duplicate", "missing")
    assert parse("scores", "[2]: 1e3\n[1]: 2", 2).value == [2.0, 1000.0]


def test_insertrank_names_itself_once_for_a_prompt_without_scores():
    with pytest.raises(ConfigError, match=r"^InsertRank: prompt 'listwise/rankgpt' must show \{score\} in its item"):
        InsertRank(RANKS, prompt="listwise/rankgpt")


def test_documents_cut_to_fit_the_context_are_counted_as_truncated():
    small = FakeBackend(generate=lambda p: "[1] > [2]", max_context=150)
    res = Listwise(small, window=2, step=1, max_words=100).rerank("q", [" ".join(["word"] * 60)] * 2)
    assert res.info["truncated"] == 2


def test_a_long_text_without_spaces_is_cut_by_characters_to_fit():
    """A Chinese document is one whitespace word: it could not be cut, and the run stopped (review helper-61)."""
    class ByCharacter(FakeBackend):
        def count_tokens(self, text: str) -> int:
            return len(text)

    chinese = "跳蚤的生命周期很短" * 1200  # 10,800 characters, one "word"
    res = YesNo(ByCharacter(score=lambda p, o: [0.0, -1.0], max_context=2000)).rerank("跳蚤", [chinese, "短文"])
    assert len(res) == 2 and res.info["truncated"] == 1


def test_every_argument_reads_back_by_name_including_the_prompt():
    assert Listwise(RANKS).prompt == "listwise/rankgpt" and Listwise(RANKS).window == 20


@pytest.mark.parametrize("name,entry,message", [
    ("my rr", Listwise, "cannot be written in an expression"),
    ("import", Listwise, "cannot be written in an expression"),
    ("2stage", Listwise, "cannot be written in an expression"),
    ("rr-2", Listwise, "a letter after each '-'"),  # review helper-66: an expression reads rr - 2
    ("rr-0x1", Listwise, "a letter after each '-'"),
    ("bm25", Listwise, "would shadow or be shadowed by the retriever 'bm25'"),
    ("list_wise", int, "must be a subclass of rerank.stage.Stage"),
])
def test_registry_names_must_be_writable_and_unambiguous_in_expressions(name, entry, message):
    with pytest.raises(ConfigError, match=message):
        register("reranker", name)(entry)


def test_an_installed_plugin_with_a_bad_name_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    """Entry points of a real (tmp) distribution: the bad one must not hide the registry or the good one."""
    from rerank import registry

    info = tmp_path / "rerank_badplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rerank-badplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[rerank.plugins]\nreranker:monot5.v2 = rerank.rerankers.listwise:Listwise\n"
                                           "reranker:plugin-good-one = rerank.rerankers.listwise:Listwise\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setitem(registry._ENTRIES, "reranker", dict(registry._ENTRIES["reranker"]))
    assert "bm25" in registry.names("retriever")
    assert "plugin-good-one" in registry.names("reranker") and "monot5.v2" not in registry.names("reranker")
    assert "skipping plugin 'reranker:monot5.v2'" in caplog.text and "cannot be written" in caplog.text


def test_dash_and_underscore_spellings_of_one_name_cannot_name_two_stages():
    class One(Listwise):
        pass

    class Two(Listwise):
        pass

    register("reranker", "decl-test-one")(One)
    with pytest.raises(ConfigError, match="'decl_test_one' would shadow or be shadowed by the reranker 'decl-test-one'"):
        register("reranker", "decl_test_one")(Two)


def test_a_prompt_file_edited_between_two_builds_gives_unequal_rerankers(tmp_path):
    path = tmp_path / "mine.yaml"
    original = resources.files("rerank.prompts").joinpath("listwise__rankgpt.yaml").read_text(encoding="utf-8")
    path.write_text(original, encoding="utf-8")
    before = Listwise(RANKS, prompt=str(path))
    path.write_text(original.replace("Rank the following", "Order the following"), encoding="utf-8")
    after = Listwise(RANKS, prompt=str(path))
    assert before != after and after == Listwise(RANKS, prompt=str(path))


@pytest.mark.parametrize("scoring", ["likelihood", "generate"])
def test_setwise_ties_keep_the_first_stage_order_whichever_way_answers_are_read(scoring):
    indifferent = FakeBackend(score=lambda p, opts: [-1.0] * len(opts), generate=lambda p: "none of them")
    res = Setwise(indifferent, scoring=scoring, k=5, set_size=3).rerank("q", list("abcdef"))
    assert res.docids == ["0", "1", "2", "3", "4", "5"]
