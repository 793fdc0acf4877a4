"""Prompt template files: every bad file is one ConfigError naming the file and the problem, at load time."""

from __future__ import annotations

import re

import pytest

from rerank import ConfigError
from rerank.prompts import PromptTemplate, load, names
from test_bad_input import beir, refused

HEAD = "name: t\nparadigm: pointwise\nprefix: 'Q: {query} D: {text}'\n"
LIST = "name: t\nparadigm: listwise\nprefix: 'Rank the {num} passages for {query}\n'\nitem: '[{index}] {text}'\nexamples:\n  - "


@pytest.mark.parametrize("name", names())
def test_every_built_in_prompt_loads(name):
    template = load(name)
    assert template.name and isinstance(template.prefix, str) and template.paradigm == name.split("/")[0]
    assert all(isinstance(o, str) for o in template.options) and len(set(template.options)) == len(template.options)


def write(tmp_path, text: str | bytes, name: str = "p.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def refused_at_load(tmp_path, text: str | bytes, message: str) -> None:
    """Loading the prompt file ``text`` is a ConfigError naming the file, then ``message``."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        load(path)


@pytest.mark.parametrize("text, message", [
    ("name: t\nparadigm: [pointwise\nprefix: x\n", "invalid YAML at line 3, column 7: expected ',' or ']', but got ':'"),
    ("name: t\nprefix: 'unterminated\n", "invalid YAML at line 3, column 1: found unexpected end of stream"),
    (HEAD + "system: a\x01b\n", "invalid YAML at line 4, column 10: character #x0001: special characters are not allowed"),
    (HEAD.encode() + b"system: caf\xe9\n", "not UTF-8 text (byte 70: invalid continuation byte)"),
    ("- a list\n", "a prompt file must be a YAML mapping"),
    (HEAD + "1: x\nfoo: y\n", "unknown sections [1, 'foo']"),
    # nested aliases in 578 bytes ('billion laughs') expanded to gigabytes when an example was rendered (review helper-72)
    (HEAD + "system: &s hi\n", "invalid YAML at line 4, column 9: anchors and aliases (&name, *name) are not allowed"),
    (HEAD + "examples:\n  - {query: q, answer: ' yes', text: [&a [lol, lol], [*a, *a], [*a, *a]]}\n",
     "invalid YAML at line 5, column 39: anchors and aliases (&name, *name) are not allowed"),
])
def test_unreadable_files_name_the_file_and_where(tmp_path, text, message):
    refused_at_load(tmp_path, text, message)


def test_a_folder_named_like_a_prompt_file_is_refused(tmp_path):
    (tmp_path / "x.yaml").mkdir()
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'x.yaml'}: cannot read the prompt file: Is a directory")):
        load(tmp_path / "x.yaml")


@pytest.mark.parametrize("text, message", [
    (HEAD + "parser: permutation\nparser: choice\n", "line 5, column 1: duplicate key 'parser'"),
    (HEAD + "meta: {a: 1, a: 2}\n", "line 4, column 14: duplicate key 'a'"),
    (HEAD + "examples:\n  - {text: x, answer: ' yes', answer: ' no'}\n", "line 5, column 31: duplicate key 'answer'"),
])
def test_duplicate_keys_are_refused_not_last_wins(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(write(tmp_path, text))


def test_yaml_merge_keys_still_work(tmp_path):
    text = HEAD + "examples:\n  - {<<: {query: q, text: x}, text: d, answer: ' yes'}\n"
    assert load(write(tmp_path, text)).examples == ({"query": "q", "text": "d", "answer": " yes"},)


@pytest.mark.parametrize("section, message", [
    ("prefix: 5", "section prefix must be a string, got 5 (int)"),
    ("system: null", "section system must be a string, got None (NoneType)"),
    ("answer_prefix: 7", "section answer_prefix must be a string, got 7 (int)"),
    ("separator: null", "section separator must be a string, got None"),
    ("parser: [x]", "section parser must be a string, got ['x'] (list)"),
    ("constraint: [options]", "section constraint must be a string"),
    ("examples: 5", "examples must be a list, each a mapping of placeholder values, got 5"),
    ("examples: [just a string]", "examples must be a list, each a mapping of placeholder values"),
    ("options: [0, 1, 2]", "options must be a list of strings, got (0, 1, 2); quote options"),
    ("options: [Yes, No]", "options must be a list of strings, got (True, False); quote options that YAML reads as booleans"),
    ("options: ' yes'", "options must be a list of strings, got ' yes'"),
    ("options: [' A', ' B', ' A']", "options must differ, but [' A'] repeat"),
    ("max_new_tokens: -5", "section max_new_tokens must be >= 1, got -5"),
    ("max_new_tokens: 0", "section max_new_tokens must be >= 1, got 0"),
    ("max_new_tokens: true", "section max_new_tokens must be an integer or None, got True (bool)"),
    ("max_new_tokens: 2.5", "section max_new_tokens must be an integer or None, got 2.5 (float)"),
    ("max_new_tokens: abc", "section max_new_tokens must be an integer or None, got 'abc' (str)"),
    ("meta: 5", "section meta must be a dict, got 5 (int)"),
    ("meta: {opton: '({index})'}", "unknown meta keys ['opton']; known: ['chat_template', 'doc_suffix', 'option']"),
    # helper-78: meta values were not checked: 'false' quoted turned E2Rank's chat template on, a number failed mid-run
    ("meta: {chat_template: 'false'}", "meta.chat_template must be True or False, got 'false' (str)"),
    ("meta: {doc_suffix: 5}", "meta.doc_suffix must be a string, got 5 (int)"),
    ("meta: {doc_suffix: null}", "meta.doc_suffix must be a string, got None (NoneType)"),
    ("meta: {option: [1]}", "meta.option must be a string, got [1] (list)"),
])
def test_sections_of_the_wrong_type_are_refused_at_load(tmp_path, section, message):
    text = HEAD.replace("prefix: 'Q: {query} D: {text}'", section) if section.startswith("prefix") else HEAD + section + "\n"
    refused_at_load(tmp_path, text, f"prompt 't': {message}")


def test_well_typed_sections_load(tmp_path):
    text = HEAD + "options: [' yes', ' no']\nmax_new_tokens: 3\nmeta: {doc_suffix: x}\nexamples: []\nsystem: ''\n"
    template = load(write(tmp_path, text))
    assert (template.options, template.max_new_tokens, template.meta, template.examples) == ((" yes", " no"), 3, {"doc_suffix": "x"}, ())


def test_empty_list_sections_read_as_empty_lists(tmp_path):
    template = load(write(tmp_path, HEAD + "options:\nexamples:\n"))
    assert (template.options, template.examples) == ((), ())


def test_with_checks_types_too():
    with pytest.raises(ConfigError, match="prompt 'pointwise/yes_no': section system must be a string, got None"):
        load("pointwise/yes_no").with_(system=None)
    with pytest.raises(ConfigError, match="options must differ"):
        load("pointwise/yes_no").with_(options=("Yes", "Yes"))


@pytest.mark.parametrize("name, message", [
    ("/tmp/no-such-dir/nope.yaml", "prompt file '/tmp/no-such-dir/nope.yaml' does not exist"),
    ("nope.yml", "prompt file 'nope.yml' does not exist"),
    ("mine/nope", "unknown prompt 'mine/nope': no such .yaml file exists and no built-in prompt has that name; built-in prompts: "),
    ("listwise/nope", "unknown prompt 'listwise/nope'; built-in prompts: e2rank/checkpoint"),
    ("listwise/rankgtp", "unknown prompt 'listwise/rankgtp'; did you mean 'listwise/rankgpt'? built-in prompts: "),
    ("nope", "unknown prompt 'nope'; built-in prompts: e2rank/checkpoint"),
])
def test_a_missing_file_is_told_apart_from_an_unknown_built_in_name(name, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(name)


def test_a_file_that_is_not_yaml_and_a_built_in_name_with_a_suffix_are_named(tmp_path):
    (tmp_path / "mine.txt").write_text("name: t\nparadigm: pointwise\nprefix: '{query} {text}'\n")
    with pytest.raises(ConfigError, match=re.escape(f"prompt file '{tmp_path / 'mine.txt'}' is not YAML: a template file must end in .yaml or .yml")):
        load(tmp_path / "mine.txt")
    with pytest.raises(ConfigError, match=re.escape("(the built-in prompt is named 'listwise/rankgpt', without .yaml)")):
        load("listwise/rankgpt.yaml")
    (tmp_path / "MINE.YAML").write_text("name: mine\nparadigm: pointwise\nprefix: '{query} {text}'\n")
    assert load(tmp_path / "MINE.YAML").name == "mine"


def test_the_cli_refuses_a_broken_prompt_file_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RERANK_CACHE", str(tmp_path / "cache"))
    data = beir(tmp_path / "c")
    path = write(tmp_path, "name: t\nparadigm: [pointwise\n")
    err = refused(capsys, "eval", "--dataset", str(data), "--pipeline", f"bm25 >> yes-no(prompt={path!r}, backend='hf:no-such-model')")
    assert f"{path}: invalid YAML at line 3, column 1" in err


@pytest.mark.parametrize("text, message", [
    ("name: t\nparadigm: pointwise\nprefix: 'Q: {query} D: {text:d}'\n", "placeholder {text:d} is more than a name"),
    ("name: t\nparadigm: pointwise\nprefix: 'Q: {query!r} D: {text}'\n", "placeholder {query!r} is more than a name"),
    ("name: t\nparadigm: listwise\nprefix: '{query}'\nitem: '[{index}] {text.upper}'\n", "placeholder {text.upper} is more than a name"),
    (HEAD + "options: ['', 'No']\n", "options must be non-empty strings"),
    ("name: t\nparadigm: listwise\nprefix: '{query}, from {min_score}'\nitem: '[{index}] {text}'\n",
     "unknown placeholders ['min_score']"),  # allowed once, given a value nowhere (review helper-61)
    ("meta: " + "[" * 3000 + "]" * 3000 + "\n" + HEAD, "the YAML is nested too deeply to be a prompt"),
    (LIST + "{query: q, items: [{index: 1, text: a}], answer: '[1]'}\nseparator: '\n-- {num} --\n'\n",
     "prompt 't', section 'separator': unknown placeholders ['num']; allowed: []"),  # joined as written (review helper-72)
])
def test_placeholders_options_and_nesting_that_would_fail_mid_run_are_refused_at_load(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(path)


def test_a_separator_is_written_as_every_section_is():
    template = load("listwise/rankgpt").with_(separator="\n{{-}}\n")
    assert "[1] a\n{-}\n[2] b" in template.render("q", [{"index": 1, "text": "a"}, {"index": 2, "text": "b"}])[-2]["content"]


def test_a_prompt_that_fits_only_one_document_per_call_is_refused_by_families_that_show_several(tmp_path):
    from rerank.backends.fake import FakeBackend
    from rerank.rerankers.listwise import Listwise
    from rerank.rerankers.setwise import Setwise

    one = write(tmp_path, "name: one\nparadigm: listwise\nparser: permutation\nprefix: 'Q: {query} first: {text}'\n"
                          "item: '[{index}] {text}'\n", "one.yaml")
    with pytest.raises(ConfigError, match=r"uses \['text'\] in its prefix or suffix, which have a value only when a prompt shows one"):
        Listwise(FakeBackend(generate=lambda p: "[1]"), prompt=one)
    bogus = write(tmp_path, "name: s\nparadigm: setwise\nparser: choice\nprefix: '{query}'\nitem: '[{label}] {text}'\n"
                            "meta: {option: '{bogus}'}\n", "s.yaml")
    with pytest.raises(ConfigError, match=r"meta.option must be text whose only placeholders are \{index\} and \{label\}"):
        Setwise(FakeBackend(generate=lambda p: "A"), prompt=bogus)


@pytest.mark.parametrize("sections, message", [
    ({"prefix": "Q: {query} D: {text.upper}"}, ", section 'prefix': placeholder {text.upper} is more than a name"),
    ({"prefix": "Q: {query!r} D: {text}"}, ", section 'prefix': placeholder {query!r} is more than a name"),
    ({"system": "judge for {query}"}, ", section 'system': unknown placeholders ['query']"),
    ({"options": "YN"}, ": options must be a list of strings, got 'YN'"),
    ({"examples": ({"query": "q", "text": "d"},)}, ", example 1: an example is a mapping of placeholder values with a non-empty text answer"),
])
def test_a_template_given_in_python_is_checked_as_a_file_is(sections, message):
    """load() returned a PromptTemplate as it was: {text.upper} sent a bound method's repr to the model (review helper-72)."""
    template = PromptTemplate(**{"name": "mine", "paradigm": "pointwise", "prefix": "Q: {query} D: {text}", **sections})
    with pytest.raises(ConfigError, match=re.escape(f"a PromptTemplate given in Python: prompt 'mine'{message}")):
        load(template)
    assert load(PromptTemplate("mine", "pointwise", "Q: {query} D: {text}")).prefix == "Q: {query} D: {text}"


@pytest.mark.parametrize("text, message", [
    (HEAD + "examples:\n  - {text: d, answer: ' yes'}\n", "example 1: prompt placeholder {query} has no value here"),
    (HEAD + "examples:\n  - {querry: q, query: q, text: d, answer: ' yes'}\n",
     "example 1: unknown keys ['querry']; an example gives ['answer', 'query', 'text']"),
    (LIST + "{query: q, item: [{index: 1, text: a}], answer: '[1]'}\n", "example 1: unknown keys ['item']"),
    (LIST + "{query: q, answer: '[1]'}\n", "example 1: no items; an example shows its documents as items"),
    (LIST + "{query: q, items: [{index: 1, txt: a}], answer: '[1]'}\n", "example 1: unknown item keys ['txt']; an item gives ['index', 'text']"),
])
def test_example_keys_that_the_template_does_not_show_are_refused(tmp_path, text, message):
    """A misspelt key was ignored: the example showed an empty query, or 'Rank the 0 passages' (review helper-72)."""
    refused_at_load(tmp_path, text, f"prompt 't', {message}")


def test_every_meta_key_the_code_reads_is_known():
    """Unknown meta keys are refused, so a key a family reads must be listed in META."""
    from pathlib import Path

    import rerank
    from rerank.prompts import META

    source = "".join(p.read_text() for p in Path(rerank.__file__).parent.rglob("*.py"))
    assert set(re.findall(r"\.meta\.get\(\"(\w+)\"", source)) == set(META)
