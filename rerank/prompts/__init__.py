"""Prompts as data: one YAML file per method, loaded by name (``"listwise/rankgpt"``) or by path.

A template has named sections. ``paradigm`` names the family it is written for (any name: a plugin's
family may have its own; a family checks that a template fits its task, the paradigm aside, and E2Rank
its paradigm). ``system`` becomes the system message; the user message is
``prefix`` + ``item`` (once per document, joined by ``separator``) + ``suffix``; ``answer_prefix``
(optional) starts the assistant's answer; ``constraint`` (optional, :data:`CONSTRAINTS`) names the
answer's language for constrained decoding; ``meta`` (optional, :data:`META`) holds settings that only some families read.
``examples`` (optional) are few-shot demonstrations given as earlier chat turns: each maps the
placeholders of the prefix and suffix (and ``items``, a list of item values, where the template has
an ``item``), rendered through the same sections as a user turn, then its ``answer`` as the
assistant's turn. Small instruct models follow turns far better than examples pasted into one
message, which they tend to copy. Placeholders are checked per section, and every example is
rendered, when the file is loaded, so a typo fails at load time, not in the middle of a benchmark.

==========  =============================================================
section     placeholders it may use
==========  =============================================================
system      {num}
prefix      {query} {num} {text} {score} {docid} {index}
item        {index} {text} {score} {docid} {label}
separator   none (literal braces doubled, as in every section)
suffix      {query} {num}
==========  =============================================================

Pointwise templates use ``prefix`` alone with ``{query}`` and ``{text}``.

>>> t = load("pointwise/yes_no")
>>> t.paradigm, "{query}" in t.prefix
('pointwise', True)
"""

from __future__ import annotations

import difflib
import os
import string
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rerank.errors import ConfigError, one_line
from rerank.params import check_fields, describe

ALLOWED = {
    "system": {"num"},
    "prefix": {"query", "num", "text", "score", "docid", "index"},
    "item": {"index", "text", "score", "docid", "label"},
    "separator": set(),
    "suffix": {"query", "num"},
    "answer_prefix": {"num"},
}
CONSTRAINTS = {"": "free text", "permutation": "[i] > [j] > ... over all shown ids",
               "options": "exactly one of the template's options", "labels": "one item label: A, B, ..."}
"""Values of a template's ``constraint``: what constrained decoding lets the model answer."""
META = {"option": (str, "how a document's answer is written for the log-probability read ({index}, {label}): FIRST, setwise, Rank-R1"),
        "chat_template": (bool, "E2Rank: the prompt goes through the model's chat template"),
        "doc_suffix": (str, "E2Rank: text added to each document before it is embedded on its own")}
"""Keys of a template's ``meta`` -> (the type of its value, what it means): settings that only the families named read."""
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    paradigm: str
    prefix: str
    system: str = ""
    item: str = ""
    separator: str = "\n"
    suffix: str = ""
    answer_prefix: str = ""
    parser: str = ""
    options: tuple[str, ...] = ()
    max_new_tokens: int | None = None
    constraint: str = ""
    examples: tuple[dict[str, Any], ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def render(self, query: str, items: list[dict[str, Any]] | None = None, **values: Any) -> list[dict[str, str]]:
        """Chat messages for ``query`` and the per-document ``items`` (dicts of item placeholders)."""
        items = items or []
        common = {"query": query, "num": len(items), **values}
        messages = [{"role": "system", "content": self.system.format_map(_Defaults(common))}] if self.system else []
        for ex in self.examples:
            messages += self._turns(ex)
        messages.append({"role": "user", "content": self._user(items, {"query": query, **values})})
        if self.answer_prefix:
            messages.append({"role": "assistant", "content": self.answer_prefix.format_map(_Defaults(common))})
        return messages

    def _turns(self, example: dict[str, Any]) -> list[dict[str, str]]:
        """A few-shot example as a user turn and the assistant's answer."""
        shown = {k: v for k, v in example.items() if k not in ("answer", "items")}
        return [{"role": "user", "content": self._user(example.get("items", []), shown)},
                {"role": "assistant", "content": str(example["answer"])}]

    def _user(self, items: list[dict[str, Any]], values: dict[str, Any]) -> str:
        common = _Defaults({"num": len(items), **values})
        body = self.prefix.format_map(common)
        if self.item:
            body += self.separator.format_map(_Defaults()).join(self.item.format_map(_Defaults(it)) for it in items)
        return body + self.suffix.format_map(common)

    def with_(self, **changes: Any) -> PromptTemplate:
        """A copy with some sections replaced (validated again)."""
        return _validate(replace(self, **changes))


class _Defaults(dict):
    def __missing__(self, key: str) -> str:
        raise ConfigError(f"prompt placeholder {{{key}}} has no value here")


def load(name_or_path: str | Path | PromptTemplate) -> PromptTemplate:
    """Load a template by built-in name (``"listwise/rankgpt"``) or from a YAML file path."""
    if isinstance(name_or_path, PromptTemplate):
        return _checked(name_or_path, "a PromptTemplate given in Python")
    path, name = Path(name_or_path), str(name_or_path)
    if path.suffix.lower() in YAML_SUFFIXES and path.exists():
        text, source = _read(path), name
    else:
        res = resources.files(__name__).joinpath(f"{name.replace('/', '__')}.yaml")
        if not res.is_file():
            raise _not_found(name)
        text, source = res.read_text(encoding="utf-8"), name
    data = _parse(text, source)
    known = set(PromptTemplate.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{source}: unknown sections {sorted(unknown, key=str)}; allowed: {sorted(known)}")
    for required in ("name", "paradigm", "prefix"):
        if required not in data:
            raise ConfigError(f"{source}: missing section {required!r}")
    for listed in ("options", "examples"):  # YAML lists -> the dataclass's tuples; other types are refused below
        if listed in data and data[listed] is None:  # an empty section ("examples:") is an empty list
            data[listed] = ()
        if isinstance(data.get(listed), list):
            data[listed] = tuple(data[listed])
    return _checked(PromptTemplate(**data), source)


def _checked(template: PromptTemplate, source: str) -> PromptTemplate:
    """``template``, validated; a :class:`ConfigError` names ``source`` (its file)."""
    try:
        return _validate(template)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one), and
    anchors and aliases, which a prompt has no need for (nested aliases expand exponentially)."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (&name, *name) are not allowed in a prompt file",
                                              event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: {...}' is merged by SafeLoader
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # SafeLoader refuses it
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read(path: Path) -> str:
    """The text of a prompt file; :class:`ConfigError` naming it when it cannot be read as UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the prompt file: {e.strerror or e}") from None


def _parse(text: str, source: str) -> dict[Any, Any]:
    """The YAML mapping in ``text``; :class:`ConfigError` naming ``source`` and the line and column."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML{_yaml_problem(e, text)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply to be a prompt") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a prompt file must be a YAML mapping")
    return data


def _yaml_problem(e: yaml.YAMLError, text: str) -> str:
    """`` at line L, column C: problem`` for a YAML error, on one line."""
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML refuses: it gives an offset only
        line = text.count("\n", 0, e.position)
        column = e.position - (text.rfind("\n", 0, e.position) + 1)
        return f" at line {line + 1}, column {column + 1}: character #x{e.character:04x}: {e.reason}"
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or one_line(e)
    return f" at line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else f": {problem}"


def _not_found(name: str) -> ConfigError:
    """The error for a prompt that is neither a file nor built in: a path-like name is a missing file."""
    builtin = f"built-in prompts: {', '.join(names())}"
    path = Path(name)
    if path.suffix.lower() in YAML_SUFFIXES:
        stem = name.removesuffix(path.suffix)
        hint = f" (the built-in prompt is named {stem!r}, without {path.suffix})" if stem in names() else ""
        return ConfigError(f"prompt file {name!r} does not exist{hint}")
    if path.is_file():
        return ConfigError(f"prompt file {name!r} is not YAML: a template file must end in {' or '.join(YAML_SUFFIXES)}")
    close = difflib.get_close_matches(name, names(), n=1, cutoff=0.8)
    if close:
        return ConfigError(f"unknown prompt {name!r}; did you mean {close[0]!r}? {builtin}")
    if os.sep in name and name.split(os.sep)[0] not in paradigms():
        return ConfigError(f"unknown prompt {name!r}: no such .yaml file exists and no built-in prompt has that name; {builtin}")
    return ConfigError(f"unknown prompt {name!r}; {builtin}")


def placeholders(section: str) -> set[str]:
    """The replacement fields a template section uses, as written (``text``, ``index``, ``text.x``);
    ValueError for unbalanced braces."""
    return {f for _, f, _, _ in string.Formatter().parse(section) if f is not None}


def names() -> list[str]:
    """Names of the built-in templates."""
    return sorted(p.name[: -len(".yaml")].replace("__", "/") for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def paradigms() -> set[str]:
    """The paradigms of the built-in templates (the first part of their names)."""
    return {n.split("/")[0] for n in names()}


def _validate(t: PromptTemplate) -> PromptTemplate:
    _check_types(t)
    if any(not o.strip() for o in t.options):
        raise ConfigError(f"prompt {t.name!r}: options must be non-empty strings, got {list(t.options)}")
    if len(set(t.options)) < len(t.options):
        repeated = sorted({o for o in t.options if t.options.count(o) > 1})
        raise ConfigError(f"prompt {t.name!r}: options must differ, but {repeated} repeat (options tie, so answers cannot be told apart)")
    unknown = set(t.meta) - set(META)
    if unknown:
        raise ConfigError(f"prompt {t.name!r}: unknown meta keys {sorted(unknown)}; known: {sorted(META)}")
    wrong = next((k for k, v in t.meta.items() if not isinstance(v, META[k][0])), None)
    if wrong is not None:  # YAML reads 'false' quoted as text, which is true
        raise ConfigError(f"prompt {t.name!r}: meta.{wrong} must be {describe(META[wrong][0])}, got {t.meta[wrong]!r} "
                          f"({type(t.meta[wrong]).__name__})")
    if t.constraint not in CONSTRAINTS:
        raise ConfigError(f"prompt {t.name!r}: constraint {t.constraint!r} is not one of {sorted(CONSTRAINTS)}")
    if t.constraint == "options" and not t.options:
        raise ConfigError(f"prompt {t.name!r}: constraint 'options' needs an options list")
    for section, allowed in ALLOWED.items():
        text = getattr(t, section)
        try:
            fields = list(string.Formatter().parse(text))
        except ValueError as e:
            raise ConfigError(f"prompt {t.name!r}, section {section!r}: {e} (write literal braces as {{{{ }}}})") from None
        odd = next((f"{{{f}{'!' + c if c else ''}{':' + s if s else ''}}}" for _, f, s, c in fields
                    if f is not None and (s or c or not f.isidentifier())), None)
        if odd:
            raise ConfigError(f"prompt {t.name!r}, section {section!r}: placeholder {odd} is more than a name; write "
                              "{name} alone (no format spec, conversion, attribute or index)")
        bad = placeholders(text) - allowed
        if bad:
            raise ConfigError(f"prompt {t.name!r}, section {section!r}: unknown placeholders {sorted(bad)}; allowed: {sorted(allowed)}")
    for i, ex in enumerate(t.examples, 1):
        where = f"prompt {t.name!r}, example {i}"
        answer = ex.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or answer != answer or not str(answer).strip():
            raise ConfigError(f"{where}: an example is a mapping of placeholder values with a non-empty text answer "
                              "(quote answers such as 'yes', which YAML reads as true)")
        items = ex.get("items", [])
        if not isinstance(items, list) or not all(isinstance(it, dict) for it in items):
            raise ConfigError(f"{where}: items must be a list of mappings of item values")
        keys = (placeholders(t.prefix + t.suffix) - {"num"}) | {"answer"} | ({"items"} if t.item else set())
        unknown = set(ex) - keys
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown, key=str)}; an example gives {sorted(keys)}")
        if t.item and not items:
            raise ConfigError(f"{where}: no items; an example shows its documents as items, as the template's item does")
        unknown = {k for it in items for k in it} - placeholders(t.item)
        if unknown:
            raise ConfigError(f"{where}: unknown item keys {sorted(unknown, key=str)}; an item gives {sorted(placeholders(t.item))}")
        try:
            t._turns(ex)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return t


def _check_types(t: PromptTemplate) -> None:
    """Refuse sections of the wrong type (YAML reads yes, no, 1 and null as non-strings) before they are used."""
    if not isinstance(t.options, tuple | list) or not all(isinstance(o, str) for o in t.options):
        raise ConfigError(f"prompt {t.name!r}: options must be a list of strings, got {t.options!r}; quote options "
                          "that YAML reads as booleans or numbers ('Yes', 'No', '0')")
    if not isinstance(t.examples, tuple | list) or not all(isinstance(ex, dict) for ex in t.examples):
        raise ConfigError(f"prompt {t.name!r}: examples must be a list, each a mapping of placeholder values, got {t.examples!r}")
    try:
        check_fields(t)
    except ConfigError as e:
        raise ConfigError(f"prompt {t.name!r}: section {str(e).removeprefix('PromptTemplate: ')}") from None
