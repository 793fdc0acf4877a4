"""Prompts as data: one YAML file per method, loaded by name (``"listwise/rankgpt"``) or by path.

A template has named sections. ``system`` becomes the system message; the user message is
``prefix`` + ``item`` (once per document, joined by ``separator``) + ``suffix``; ``answer_prefix``
(optional) starts the assistant's answer; ``constraint`` (optional, :data:`CONSTRAINTS`) names
the answer's language for constrained decoding. ``examples`` (optional) are few-shot
demonstrations given as earlier chat turns: each is a mapping of placeholder values (and ``items``,
a list of item values) rendered through the same sections as a user turn, then its ``answer`` as
the assistant's turn. Small instruct models follow turns far better than examples pasted into one
message, which they tend to copy. Placeholders are checked per section, and every example is
rendered, when the file is loaded, so a typo fails at load time, not in the middle of a benchmark.

==========  =============================================================
section     placeholders it may use
==========  =============================================================
system      {num}
prefix      {query} {num} {text} {score} {docid} {index} {min_score} {max_score}
item        {index} {text} {score} {docid} {label}
suffix      {query} {num} {min_score} {max_score}
==========  =============================================================

Pointwise templates use ``prefix`` alone with ``{query}`` and ``{text}``.

>>> t = load("pointwise/yes_no")
>>> t.paradigm, "{query}" in t.prefix
('pointwise', True)
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rerank.errors import ConfigError

ALLOWED = {
    "system": {"num"},
    "prefix": {"query", "num", "text", "score", "docid", "index", "min_score", "max_score"},
    "item": {"index", "text", "score", "docid", "label"},
    "suffix": {"query", "num", "min_score", "max_score"},
    "answer_prefix": {"num"},
}
CONSTRAINTS = {"": "free text", "permutation": "[i] > [j] > ... over all shown ids",
               "options": "exactly one of the template's options", "labels": "one item label: A, B, ..."}
"""Values of a template's ``constraint``: what constrained decoding lets the model answer."""


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
        messages.append({"role": "user", "content": self._user(query, items, values)})
        if self.answer_prefix:
            messages.append({"role": "assistant", "content": self.answer_prefix.format_map(_Defaults(common))})
        return messages

    def _turns(self, example: dict[str, Any]) -> list[dict[str, str]]:
        """A few-shot example as a user turn and the assistant's answer."""
        shown = {k: v for k, v in example.items() if k not in ("answer", "items")}
        return [{"role": "user", "content": self._user(shown.pop("query", ""), example.get("items", []), shown)},
                {"role": "assistant", "content": str(example["answer"])}]

    def _user(self, query: str, items: list[dict[str, Any]], values: dict[str, Any]) -> str:
        common = _Defaults({"query": query, "num": len(items), **values})
        body = self.prefix.format_map(common)
        if self.item:
            body += self.separator.join(self.item.format_map(_Defaults(it)) for it in items)
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
        return name_or_path
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        res = resources.files(__name__).joinpath(f"{str(name_or_path).replace('/', '__')}.yaml")
        if not res.is_file():
            raise ConfigError(f"unknown prompt {str(name_or_path)!r}; built-in prompts: {', '.join(names())}")
        text, source = res.read_text(encoding="utf-8"), str(name_or_path)
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a prompt file must be a YAML mapping")
    known = set(PromptTemplate.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{source}: unknown sections {sorted(unknown)}; allowed: {sorted(known)}")
    for required in ("name", "paradigm", "prefix"):
        if required not in data:
            raise ConfigError(f"{source}: missing section {required!r}")
    data["options"] = tuple(data.get("options", ()))
    data["examples"] = tuple(data.get("examples") or ())
    return _validate(PromptTemplate(**data))


def names() -> list[str]:
    """Names of the built-in templates."""
    return sorted(p.name[: -len(".yaml")].replace("__", "/") for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def _validate(t: PromptTemplate) -> PromptTemplate:
    if t.constraint not in CONSTRAINTS:
        raise ConfigError(f"prompt {t.name!r}: constraint {t.constraint!r} is not one of {sorted(CONSTRAINTS)}")
    if t.constraint == "options" and not t.options:
        raise ConfigError(f"prompt {t.name!r}: constraint 'options' needs an options list")
    for section, allowed in ALLOWED.items():
        text = getattr(t, section)
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
        except ValueError as e:
            raise ConfigError(f"prompt {t.name!r}, section {section!r}: {e} (write literal braces as {{{{ }}}})") from None
        bad = {f.split(".")[0].split("[")[0] for f in fields} - allowed
        if bad:
            raise ConfigError(f"prompt {t.name!r}, section {section!r}: unknown placeholders {sorted(bad)}; allowed: {sorted(allowed)}")
    for i, ex in enumerate(t.examples, 1):
        where = f"prompt {t.name!r}, example {i}"
        answer = ex.get("answer") if isinstance(ex, dict) else None
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or answer != answer or not str(answer).strip():
            raise ConfigError(f"{where}: an example is a mapping of placeholder values with a non-empty text answer "
                              "(quote answers such as 'yes', which YAML reads as true)")
        if not isinstance(ex.get("items", []), list) or not all(isinstance(it, dict) for it in ex.get("items", [])):
            raise ConfigError(f"{where}: items must be a list of mappings of item values")
        try:
            t._turns(ex)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return t
