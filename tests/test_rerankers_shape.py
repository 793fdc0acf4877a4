"""LLM rerankers as Task x Strategy x Settings: every family takes every setting, templates must fit
their task, and a new method is one declaration plus one registry line (the README's worked example,
run end to end on the real SmolLM2)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from rerank import get, register
from rerank.backends.fake import FakeBackend
from rerank.errors import ConfigError
from rerank.prompts import load as load_prompt
from rerank.registry import names, resolve
from rerank.rerankers._llm import LLMReranker, Settings
from rerank.rerankers._parsing import register_parser
from rerank.rerankers._strategies import SinglePass, SlidingWindow
from rerank.rerankers._tasks import Rank, Score, Think
from rerank.rerankers.listwise import Listwise

LLM_FAMILIES = [n for n in names("reranker") if issubclass(resolve("reranker", n), LLMReranker)]


def fake() -> FakeBackend:
    return FakeBackend(generate=lambda p: "1", score=lambda p, options: [-float(i) for i in range(len(options))])


def test_every_registered_llm_family_accepts_every_shared_setting():
    assert len(LLM_FAMILIES) >= 11
    backend = fake()
    for name in LLM_FAMILIES:
        cls = resolve("reranker", name)
        changed = {"backend": backend, "prompt": load_prompt(cls.defaults.prompt).with_(name="mine"), "depth": 3,
                   "batch_size": 3, "max_words": 11, "max_new_tokens": 5, "temperature": 0.5, "constrained": False,
                   "think_tokens": 7 if cls.defaults.think_tokens == 0 else 0, "progress": False}
        assert set(changed) == {f.name for f in dataclasses.fields(Settings)}, "a new setting needs a value here"
        reranker = get("reranker", name, **changed)
        assert all(getattr(reranker.settings, k) == v for k, v in changed.items()), name
        assert isinstance(reranker.asker, Think) == (changed["think_tokens"] > 0), name
        for k in changed:
            assert f"{k}=" in repr(reranker), (name, k)
        out = reranker.rerank("q", ["a", "b", "c", "d"], scores=[4.0, 3.0, 2.0, 1.0])
        assert sorted(out.docids) == ["0", "1", "2", "3"] and out.info["truncated"] == 0
        assert all(n == 0 or kw["temperature"] == 0.5 for n, kw in backend.batches), name


@pytest.mark.parametrize("name", LLM_FAMILIES)
def test_rerank_with_scores_orders_the_documents_as_a_pipeline_does(name):
    """rerank(query, docs, scores) kept the input order, so depth kept the weakest documents and the
    result differed from the same candidates in a Ranking (review helper-61)."""
    from rerank import Ranking

    docs, scores = ["weak a", "weak b", "strong c", "strong d", "middling e"], [0.1, 0.2, 0.9, 0.8, 0.5]
    reranker = get("reranker", name, backend=fake(), depth=2)
    run = Ranking.from_records([("q", "query", str(i), s) for i, s in enumerate(scores)])
    run = Ranking(run.to_pandas().assign(text=[docs[int(d)] for d in run.to_pandas()["docid"]]))
    expected = reranker(run).to_pandas()
    got = reranker.rerank("query", docs, scores=scores)
    assert got.docids == expected["docid"].tolist() and [r.score for r in got] == expected["score"].tolist()


@pytest.mark.parametrize("name", LLM_FAMILIES)
def test_one_candidate_is_asked_about_only_when_the_family_scores_it(name):
    """A listwise window, or a single pass, over one candidate asked the model to order it."""
    backend = fake()
    reranker = get("reranker", name, backend=backend)
    out = reranker.rerank("q", ["the only document"], scores=[1.0])
    assert out.docids == ["0"]
    assert bool(backend.calls) == (reranker.strategy.takes in ("score", "scores")), name


def test_unknown_arguments_and_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="has no argument 'windw'; arguments: .*window"):
        Listwise(fake(), windw=3)
    for bad in ({"batch_size": 0}, {"max_words": -1}, {"temperature": -0.1}, {"think_tokens": -1}, {"depth": 0}):
        with pytest.raises(ConfigError):
            Listwise(fake(), **bad)


@pytest.mark.parametrize("family, given, message", [
    ("listwise", {"temperature": float("nan")}, "temperature must be a finite number, got nan"),
    ("listwise", {"batch_size": 2.5}, "batch_size must be an integer, got 2.5"),
    ("listwise", {"window": "20"}, "Listwise: window must be an integer, got '20'"),
    ("listwise", {"passes": 0}, "passes must be >= 1, got 0"),
    ("listwise", {"constrained": "no"}, "constrained must be True or False, got 'no'"),
    ("setwise", {"k": 0}, "k must be >= 1, got 0"),
    ("prp", {"top_k": float("inf")}, "top_k must be an integer, got inf"),
    ("prp", {"method": 3}, "PRP: method=3; choose one of ('score', 'generate')"),
    ("setwise", {"scoring": "sample"}, "Setwise: scoring='sample'; choose one of ('generate', 'likelihood')"),
    ("groupwise", {"anchors": -1}, "anchors must be >= 0, got -1"),
    ("insertrank", {"decimals": -1}, "decimals must be between 0 and 10, got -1"),
    ("insertrank", {"decimals": 10**6}, "decimals must be between 0 and 10, got 1000000"),
    ("insertrank", {"score_range": (float("nan"), 1.0)}, "score_range must be finite"),
    ("insertrank", {"score_range": (0.0, float("inf"))}, "score_range must be finite"),
    ("insertrank", {"score_range": (0, 10**400)}, "score_range must be finite"),
    ("insertrank", {"score_range": (True, 2.0)}, "score_range must be a pair of numbers, got (True, 2.0)"),
    ("listwise", {"depth": 10**400}, None),  # a huge integer is in range, not an OverflowError
])
def test_settings_built_in_python_are_checked_like_expression_arguments(family, given, message):
    """The dataclasses of every part check their fields' types and ranges (:func:`rerank.params.check_fields`)."""
    if message is None:
        assert hash(get("reranker", family, backend=fake(), **given))
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        get("reranker", family, backend=fake(), **given)


def test_a_score_range_given_as_a_list_keeps_the_reranker_hashable():
    reranker = get("reranker", "insertrank", backend=fake(), score_range=[0, 1])
    assert reranker.task.score_range == (0, 1) and hash(reranker) == hash(get("reranker", "insertrank", backend=fake(), score_range=(0, 1)))


def test_a_template_must_name_a_parser_that_fits_the_task():
    rankgpt = load_prompt("listwise/rankgpt")
    with pytest.raises(ConfigError, match="names no parser"):
        Listwise(fake(), prompt=rankgpt.with_(parser=""))
    with pytest.raises(ConfigError, match="reads a 'choice' answer, but this task needs a 'order' answer"):
        Listwise(fake(), prompt=rankgpt.with_(parser="choice", constraint=""))
    with pytest.raises(ConfigError, match="constraint 'labels'"):
        Listwise(fake(), prompt=rankgpt.with_(constraint="labels"))


def test_a_template_must_show_the_query_and_demonstrate_well_formed_answers():
    rankgpt = load_prompt("listwise/rankgpt")
    with pytest.raises(ConfigError, match=r"never shows the query: put \{query\} in its prefix or suffix"):
        Listwise(fake(), prompt=rankgpt.with_(prefix="Rank these {num} passages.\n", suffix="Answer:"))
    items = [{"index": 1, "text": "a"}, {"index": 2, "text": "b"}]
    shot = {"query": "q", "items": items}
    assert Listwise(fake(), prompt=rankgpt.with_(examples=({**shot, "answer": "[2] > [1]"},)))
    assert Listwise(fake(), prompt=rankgpt.with_(answer_prefix="[", examples=({**shot, "answer": "2] > [1]"},)))
    with pytest.raises(ConfigError, match=r"example 1: answer '\[2\] > \[3\]' is not a well-formed 'permutation' "
                                          r"answer \(out_of_range, missing\)"):
        Listwise(fake(), prompt=rankgpt.with_(examples=({**shot, "answer": "[2] > [3]"},)))
    yes_no = load_prompt("pointwise/yes_no")
    with pytest.raises(ConfigError, match="example 1: answer 'maybe' .* \\(empty\\)"):
        get("reranker", "yes-no", backend=fake(), prompt=yes_no.with_(examples=({"query": "q", "text": "d", "answer": "maybe"},)))


def test_parsers_resolve_without_importing_their_family(tmp_path):
    """``yes_no`` and ``rating`` live with the other parsers, so no import order can hide them."""
    import subprocess
    import sys

    code = ("from rerank.rerankers._llm import LLMReranker; from rerank.rerankers._tasks import Score; "
            "from rerank.rerankers._strategies import Pointwise; from rerank.backends.fake import FakeBackend; "
            "r = LLMReranker(FakeBackend(generate=lambda p: 'yes'), 'pointwise/yes_no', task=Score(read='generate'), "
            "strategy=Pointwise()); print(r.rerank('q', ['a']).info['parse']['valid'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_a_users_parser_says_what_it_reads():
    with pytest.raises(ConfigError, match="reads="):
        register_parser("mine", reads="anything")
    register_parser("last_first", reads="order")(lambda text, n: __import__("rerank").rerankers._parsing.Parsed(list(range(n))[::-1]))
    lw = Listwise(fake(), prompt=load_prompt("listwise/rankgpt").with_(parser="last_first"), window=3, step=1)
    assert lw.rerank("q", ["a", "b", "c"]).docids == ["2", "1", "0"]


def test_identity_does_not_depend_on_memory_addresses():
    a, b = Listwise(fake(), window=4, step=2), Listwise(fake(), window=4, step=2)
    assert repr(a) == repr(b) == "Listwise(backend=FakeBackend('fake'), window=4, step=2)" and a == b
    assert not re.search(r"0x[0-9a-f]{6,}", repr(LLMReranker(fake(), "listwise/rankgpt", task=Rank(), strategy=SinglePass())))


def test_direct_declaration_with_a_single_pass():
    fake_model = FakeBackend(generate=lambda p: "3] > [1] > [2]")
    r = LLMReranker(fake_model, "listwise/rankgpt", task=Rank(), strategy=SinglePass())
    assert r.rerank("q", ["a", "b", "c"]).docids == ["2", "0", "1"] and len(fake_model.batches) == 1


# -- the README's worked example: a new method is one declaration and one registry line -------------
class ThinkListwise(LLMReranker):
    """Think, then rank a sliding window (think-then-listwise)."""

    task = Think(Rank())
    strategy = SlidingWindow(window=5, step=3)
    defaults = Settings(prompt="listwise/rankgpt", depth=10, think_tokens=24)


register("reranker", "think-listwise")(ThinkListwise)


@pytest.mark.slow
def test_a_family_combined_anew_runs_end_to_end_on_smollm2(smollm2, dl19_top10):
    reranker = get("reranker", "think-listwise", backend=smollm2, max_words=30)
    before = {c.qid: c for c in dl19_top10.per_query()}
    out = reranker.rerank_many(list(before.values()))
    for c in out:
        assert sorted(c.docids) == sorted(before[c.qid].docids)
        report = c.info["parse"]
        assert report["answers"] == 3 and report["valid"] == 3, report  # every forced answer is a full permutation
        assert 0 <= report["forced"] <= 3 and len(c.info["reasoning"]) == 3
        assert c.info["constrained"] == "exact"
    assert reranker.answer_log.answers == 6 and reranker.answer_log.reasoning == []  # counts only: bounded


@pytest.mark.parametrize("family, given, named", [
    ("setwise", {"method": "quicksort"}, "method='quicksort'"), ("prp", {"variant": "bubble"}, "variant='bubble'"),
    ("prp", {"method": "vote"}, "method='vote'"), ("groupwise", {"calibrate": "zscore"}, "calibrate='zscore'"),
    ("insertrank", {"normalize": "zscore"}, "normalize='zscore'"), ("yes-no", {"combine": "max"}, "combine='max'"),
    ("first", {"read": "twice"}, "read='twice'"),
])
def test_a_choice_outside_its_list_is_refused_naming_the_argument_and_the_choices(family, given, named):
    with pytest.raises(ConfigError, match=rf"{named}; choose one of \("):
        get("reranker", family, backend=fake(), **given)


def test_a_users_task_may_annotate_with_names_imported_only_for_type_checkers():
    """A plugin's hints need not resolve: its family is still declared, with a signature, and built."""
    code = ("from __future__ import annotations\nfrom dataclasses import dataclass\nfrom typing import TYPE_CHECKING\n"
            "from rerank.rerankers._llm import LLMReranker, Settings\nfrom rerank.rerankers._strategies import Pointwise\n"
            "from rerank.rerankers._tasks import Score\nif TYPE_CHECKING:\n    from elsewhere import Hidden\n"
            "@dataclass(frozen=True)\nclass Tagged(Score):\n    tag: Hidden | None = None\n"
            "class Mine(LLMReranker):\n    task = Tagged()\n    strategy = Pointwise()\n"
            "    defaults = Settings(prompt='pointwise/yes_no')\n")
    namespace: dict = {}
    exec(compile(code, "plugin.py", "exec"), namespace)
    mine = namespace["Mine"](fake(), tag=None)
    assert "tag" in mine._arguments and mine.rerank("q", ["a", "b"]).docids == ["0", "1"]


def test_a_users_task_declaring_read_as_a_plain_string_is_still_checked():
    """Without a Literal hint, ``read`` is checked against the reads every task knows."""
    @dataclasses.dataclass(frozen=True)
    class Loose(Score):
        read: str = "score"

    assert Loose(read="generate").read == "generate"
    with pytest.raises(ConfigError, match=r"Loose: read='generte'; choose one of \('generate', 'score', 'likelihood'\)"):
        Loose(read="generte")
