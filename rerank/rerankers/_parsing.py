"""Answer parsers, registered by name: parse a model answer, repair it, and say what was repaired.

A prompt template names its parser (``parser: permutation``). A parser takes the answer text and
the number ``n`` of items shown and returns a :class:`Parsed`: the usable value, the reasoning text
(if any) and the problems it repaired. Nothing is repaired silently: :class:`ParseLog` counts the
problems per query, and rerankers put ``log.as_dict()`` into the results' ``info["parse"]``. Each
parser says what kind of answer it ``reads`` (:data:`READS`); a task accepts only parsers of its
kind, so a mismatch is refused when the reranker is built.

>>> p = parse("permutation", "[2] > [2] > [9] > [1]", 3)
>>> p.value, p.problems
([1, 0, 2], ('duplicate', 'out_of_range', 'missing'))
>>> parse("choice", "<answer>[B]", 3).value
1
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rerank.errors import ConfigError

LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""Letter labels of setwise prompts (``{label}``); at most 26 items per set."""

# Fullwidth and other look-alike digits and brackets that models emit now and then.
_LOOKALIKES = str.maketrans("０１２３４５６７８９［］【】〔〕", "0123456789[][][]")
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_SCORE_LINE = re.compile(rf"""[\["']?\s*(\d+)\s*[\]"']?\s*[:=]\s*({_NUMBER})""")


@dataclass(frozen=True)
class Parsed:
    """A parsed answer: ``value``, the ``reasoning`` text and the ``problems`` that were repaired."""

    value: Any
    reasoning: str | None = None
    problems: tuple[str, ...] = ()
    forced: bool | None = None
    """After a reasoning budget (``Think``): True when it ran out and the block was closed for the
    answer, False when the model closed it; None without a budget."""

    @property
    def valid(self) -> bool:
        """True when the answer needed no repair."""
        return not self.problems


Parser = Callable[[str, int], Parsed]
READS = ("order", "choice", "score", "scores")
"""Kinds of answer a parser reads: a permutation, one picked item, one score, a score per item."""
_PARSERS: dict[str, tuple[Parser, str]] = {}


def register_parser(name: str, reads: str) -> Callable[[Parser], Parser]:
    """Decorator: make ``name`` usable in a template's ``parser:`` field, for tasks whose answer ``reads``."""
    if reads not in READS:
        raise ConfigError(f"parser {name!r}: reads={reads!r} is not one of {READS}")

    def deco(fn: Parser) -> Parser:
        if name in _PARSERS and _PARSERS[name][0] is not fn:
            raise ConfigError(f"parser {name!r} is already registered")
        _PARSERS[name] = (fn, reads)
        return fn

    return deco


def get_parser(name: str, reads: str | None = None) -> Parser:
    """The parser registered as ``name``; with ``reads``, refuse one that reads another kind of answer."""
    if name not in _PARSERS:
        raise ConfigError(f"unknown answer parser {name!r}; registered parsers: {', '.join(sorted(_PARSERS))} "
                          "(set the template's parser: field to one of them, or register one with register_parser)")
    fn, kind = _PARSERS[name]
    if reads is not None and kind != reads:
        fitting = sorted(n for n, (_, k) in _PARSERS.items() if k == reads)
        raise ConfigError(f"parser {name!r} reads a {kind!r} answer, but this task needs a {reads!r} answer; "
                          f"use one of: {', '.join(fitting)}")
    return fn


def parse(name: str, text: str, n: int) -> Parsed:
    """Parse ``text`` (an answer about ``n`` items) with the parser registered as ``name``."""
    return get_parser(name)(text, n)


# -- the parsers ------------------------------------------------------------------------------
@register_parser("permutation", reads="order")
def parse_permutation(text: str, n: int) -> Parsed:
    """Ids in ``[i]`` brackets (or bare numbers if there are none), 1-based, as a full permutation.

    Repairs: duplicates and out-of-range ids are dropped, missing ids are appended in their shown
    order. An answer with no ids at all gives the identity (problem ``"empty"``).
    """
    text = text.translate(_LOOKALIKES)
    ids = [int(t) - 1 for t in re.findall(r"\[\s*(\d+)\s*\]", text) or re.findall(r"\d+", text)]
    picked: dict[int, None] = {}  # an ordered set
    problems = []
    for i in ids:
        if not 0 <= i < n:
            problems.append("out_of_range")
        elif i in picked:
            problems.append("duplicate")
        else:
            picked[i] = None
    if not picked:
        return Parsed(list(range(n)), problems=("empty",))
    order = list(picked)
    if len(order) < n:
        problems.append("missing")
        order += [i for i in range(n) if i not in picked]
    return Parsed(order, problems=tuple(dict.fromkeys(problems)))


@register_parser("choice", reads="choice")
def parse_choice(text: str, n: int) -> Parsed:
    """The one item picked: a letter label (``B``, ``[B]``, ``Passage B``) or a 1-based number.

    When the answer names several, the first wins (problem ``"ambiguous"``); none gives item 0
    (problem ``"empty"``), which keeps the current order.
    """
    text = text.translate(_LOOKALIKES)
    letters = [LABELS.index(m) for m in re.findall(r"(?<![A-Za-z])([A-Z])(?![a-z])", text) if LABELS.index(m) < n]
    numbers = [int(m) - 1 for m in re.findall(r"\d+", text) if 0 < int(m) <= n]
    picks = list(dict.fromkeys(letters or numbers))
    if not picks:
        return Parsed(0, problems=("empty",))
    return Parsed(picks[0], problems=("ambiguous",) if len(picks) > 1 else ())


@register_parser("scores", reads="scores")
def parse_scores(text: str, n: int) -> Parsed:
    """One score per item from JSON (an object keyed by 1-based id, or a list) or ``[i]: s`` lines.

    Missing items are NaN (problem ``"missing"``; all of them: ``"empty"``), for the plan to repair:
    a groupwise plan ranks them below every scored one and calibrates no group by a missing anchor.
    Non-finite values count as missing.
    """
    text = text.translate(_LOOKALIKES)
    lines = [(int(i) - 1, float(s)) for i, s in re.findall(_SCORE_LINE, text)]
    found = dict(lines) or _scores_from_json(text)
    scores = {i: s for i, s in found.items() if 0 <= i < n and math.isfinite(s)}
    if not scores:
        return Parsed([math.nan] * n, problems=("empty",))
    problems = ["out_of_range" if not 0 <= i < n else "not_finite" for i in found if i not in scores]
    problems += ["duplicate"] * (len(lines) > len(found)) + ["missing"] * (len(scores) < n)
    return Parsed([scores.get(i, math.nan) for i in range(n)], problems=tuple(dict.fromkeys(problems)))


@register_parser("yes_no", reads="score")
def parse_yes_no(text: str, n: int = 1) -> Parsed:
    """1.0 for an answer starting with yes, 0.0 for no; anything else ``-inf`` (problem ``"empty"``),
    which a pointwise plan puts below every readable answer."""
    m = re.search(r"\b(yes|no)\b", text, re.IGNORECASE)
    if m is None:
        return Parsed(-math.inf, problems=("empty",))
    return Parsed(1.0 if m.group(1).lower() == "yes" else 0.0)


@register_parser("rating", reads="score")
def parse_rating(text: str, n: int = 1) -> Parsed:
    """The first number of the answer; none gives ``-inf`` (problem ``"empty"``), and so does one too
    large for a float (``"not_finite"``): a pointwise plan puts them below every readable rating."""
    m = re.search(_NUMBER, text.translate(_LOOKALIKES))
    if m is None:
        return Parsed(-math.inf, problems=("empty",))
    value = float(m.group())
    return Parsed(value) if math.isfinite(value) else Parsed(-math.inf, problems=("not_finite",))


def _scores_from_json(text: str) -> dict[int, float]:
    """Scores from a JSON object keyed by 1-based id, or a list of numbers, anywhere in ``text``; ``{}`` if none."""
    m = re.search(r"\{.*\}", text, re.DOTALL) or re.search(r"\[.*\](?!\s*:)", text, re.DOTALL)
    try:
        data = json.loads(m.group()) if m else None
        if isinstance(data, dict):
            return {int(re.sub(r"\D", "", str(k)) or -1) - 1: _as_float(v) for k, v in data.items()}
        if isinstance(data, list) and all(isinstance(v, (int, float)) for v in data):
            return {i: _as_float(v) for i, v in enumerate(data)}
    except (TypeError, ValueError):  # json.JSONDecodeError is a ValueError
        pass
    return {}


def _as_float(value: object) -> float:
    """``float(value)``; a JSON integer too large for a float is infinite (so reported as not finite)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError:
        return math.copysign(math.inf, value)  # type: ignore[arg-type]


# -- reporting --------------------------------------------------------------------------------
@dataclass
class ParseLog:
    """Counts of one query's answers: how many, how many valid, which problems were repaired, and
    after a reasoning budget how many were ``forced``. ``reasoning`` keeps the reasoning texts
    unless ``keep_reasoning`` is False (a log spanning many queries keeps counts only)."""

    keep_reasoning: bool = True
    answers: int = 0
    valid: int = 0
    budgeted: int = 0
    forced: int = 0
    problems: Counter = field(default_factory=Counter)
    reasoning: list[str] = field(default_factory=list)

    def add(self, parsed: Parsed) -> Parsed:
        self.answers += 1
        self.valid += parsed.valid
        self.budgeted += parsed.forced is not None
        self.forced += bool(parsed.forced)
        self.problems.update(parsed.problems)
        if parsed.reasoning is not None and self.keep_reasoning:
            self.reasoning.append(parsed.reasoning)
        return parsed

    def as_dict(self) -> dict[str, Any]:
        out = {"answers": self.answers, "valid": self.valid, "repaired": self.answers - self.valid,
               "problems": dict(self.problems)}
        return {**out, "forced": self.forced} if self.budgeted else out
