"""Tasks: what one model call asks about the documents it shows, and how its answer is read.

A task owns the item placeholders of its prompt, the answer's constraint, the parser kind, and the
answer-token budget: the token count of the longest well-formed answer (:meth:`Task.samples`) under
the backend's tokenizer. A task reads an answer in one of two ways (``read``): ``"generate"``
parses the generated text; the log-probability read (``"score"``, setwise's ``"likelihood"``)
compares the options' log-probabilities and never needs repair.

=====================  ===================================  ================================
task                   answer                               families
=====================  ===================================  ================================
:class:`Rank`          a permutation of the shown ids       listwise, first, insertrank
:class:`Pick`          the label of one shown document      setwise
:class:`Prefer`        one of two options                   prp
:class:`Score`         one score for the one shown document yes-no, erank
:class:`Scores`        a score for each shown document      groupwise
:class:`Think`         any task, after a reasoning phase    reasonrank, rank-r1, erank-think
=====================  ===================================  ================================
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from rerank.constraints import Constraint, OneOf, Permutation
from rerank.errors import ConfigError, one_of
from rerank.params import check_fields
from rerank.prompts import PromptTemplate, placeholders
from rerank.rerankers._parsing import LABELS, Parsed, Parser, get_parser

if TYPE_CHECKING:
    from rerank.rerankers._llm import LLMReranker

Messages = list[dict[str, str]]


class Task:
    """Base of tasks. Subclasses are frozen dataclasses with a ``read`` field whose type lists the
    reads they offer."""

    read: str
    gives: ClassVar[str]
    """The kind of value an answer becomes (a strategy's ``takes``): ``"order"`` (positions of the
    shown documents), ``"pick"`` (the index of one), ``"preference"`` (P(first)), ``"score"``,
    ``"scores"`` (one per shown document)."""
    answer: ClassVar[str]
    """The kind of answer (:data:`rerank.rerankers._parsing.READS`) the template's parser must read."""
    constraints: ClassVar[tuple[str, ...]] = ()
    """Template ``constraint`` kinds that describe this task's answer."""
    option: ClassVar[str | None] = "{index}"
    """How an option is written for the log-probability read (a template's ``meta.option`` wins;
    None: the template's ``options``)."""
    labels: ClassVar[str] = ""
    """The ``{label}`` of the j-th shown document: ``labels[j]``, or ``j + 1`` when empty."""
    ids: ClassVar[tuple[str, ...]] = ("index",)
    """Item placeholders that can tell the shown documents apart (one is needed); empty: the task
    shows one document, whose ``{text}`` may stand in the prefix."""

    READS: ClassVar[tuple[str, ...]] = ("generate", "score", "likelihood")
    """Every ``read``: the generated text, or the options' log-probabilities (two names)."""

    def __post_init__(self) -> None:
        check_fields(self)
        one_of(f"{type(self).__name__}: read", self.read, self.READS)

    def check(self, template: PromptTemplate) -> Parser:
        """The template's parser, resolved now; ConfigError when the template does not fit this task."""
        name = type(self).__name__
        if not template.parser:
            raise ConfigError(f"prompt {template.name!r} names no parser; a {name} task reads {self.answer!r} "
                              "answers (set its parser: field)")
        if template.constraint and template.constraint not in self.constraints:
            raise ConfigError(f"prompt {template.name!r} (paradigm {template.paradigm!r}) has constraint "
                              f"{template.constraint!r}, which does not describe a {name} answer")
        try:
            parser = get_parser(template.parser, self.answer)
        except ConfigError as e:
            raise ConfigError(f"prompt {template.name!r} (paradigm {template.paradigm!r}) does not fit a {name} task: {e}") from None
        if "query" not in placeholders(template.prefix + template.suffix):
            raise ConfigError(f"prompt {template.name!r} never shows the query: put {{query}} in its prefix or suffix")
        for i, ex in enumerate(template.examples, 1):
            written = str(ex["answer"])
            answer = written.split(Think.CLOSE.strip())[-1]  # after a reasoning block, as Think reads answers
            n = len(ex.get("items", [])) or 1
            problems = min((parser(a, n).problems for a in (answer, with_answer_prefix(answer, template.answer_prefix))), key=len)
            if problems:
                raise ConfigError(f"prompt {template.name!r}, example {i}: answer {written!r:.60} is not a well-formed "
                                  f"{template.parser!r} answer ({', '.join(problems)}); a demonstration must show one")
        option = template.meta.get("option")
        if option is not None and (not placeholders(option) <= {"index", "label"} or not option.strip()):
            raise ConfigError(f"prompt {template.name!r}: meta.option must be text whose only placeholders are "
                              f"{{index}} and {{label}} (the answer for each shown document), got {option!r}")
        item, shown = placeholders(template.item), placeholders(template.prefix + template.item)
        if "text" not in (item if self.ids else shown) or (self.ids and not item & set(self.ids)):
            needed = " and ".join(["{text}"] + ([" or ".join(f"{{{p}}}" for p in self.ids)] if self.ids else []))
            raise ConfigError(f"prompt {template.name!r} must show {needed} in its "
                              f"{'item' if self.ids else 'prefix or item'} for a {name} task")
        return parser

    def check_first_option(self, template: PromptTemplate, parser: Parser, meaning: str) -> Parser:
        """``parser``, unless it reads the template's second option above its first, which the
        log-probability read takes to mean ``meaning``: the two reads would disagree (ConfigError)."""
        first, second = (self.from_text(parser(with_answer_prefix(o, template.answer_prefix), 2), [0, 1])
                         for o in template.options[:2])
        if not first.problems and not second.problems and first.value < second.value:
            raise ConfigError(f"prompt {template.name!r}: its parser {template.parser!r} reads option "
                              f"{template.options[1]!r} above {template.options[0]!r}, but the log-probability read "
                              f"takes the first option to mean {meaning}; list that option first")
        return parser

    def label(self, j: int) -> str:
        return self.labels[j] if self.labels else str(j + 1)

    def show_scores(self, scores: np.ndarray) -> list[str]:
        """The ``{score}`` shown for each candidate (its first-stage score)."""
        return [f"{s:.2f}" for s in scores]

    def options(self, template: PromptTemplate, n: int) -> list[str]:
        """The answers compared by the log-probability read, for ``n`` shown documents."""
        fmt = template.meta.get("option", self.option)
        return list(template.options) if fmt is None else [str(fmt).format(index=j + 1, label=self.label(j)) for j in range(n)]

    def language(self, template: PromptTemplate, n: int) -> Constraint:
        """Every well-formed answer about ``n`` documents: generated answers follow it where the
        template declares a constraint."""
        return OneOf(self.options(template, n))

    def samples(self, template: PromptTemplate, n: int) -> list[str]:
        """Well-formed answers; the longest one's token count is the answer budget."""
        return self.language(template, n).samples()

    def ask(self, r: LLMReranker, prompts: Sequence[Messages], shown: Sequence[list[int]]) -> list[Parsed]:
        """One parsed answer per prompt (``shown[i]``: the candidate positions prompt ``i`` shows)."""
        sizes = [len(s) for s in shown]
        if self.read == "generate":
            gens = r.generate(prompts, [r.answer_tokens(n) for n in sizes],
                              [self.language(r.template, n) if r.constrain_answers else None for n in sizes])
            return [self.from_text(r.parse(g, len(s)), s) for g, s in zip(gens, shown)]
        rows = r.score_options(prompts, [self.options(r.template, n) for n in sizes])
        return [self._read_logprobs(r.template, np.asarray(row, dtype=np.float64), s) for row, s in zip(rows, shown)]

    def _read_logprobs(self, template: PromptTemplate, row: np.ndarray, shown: list[int]) -> Parsed:
        """:meth:`from_logprobs`, with non-finite log-probabilities put below every finite one (all
        equal when none is finite). NaN and +inf (unknown) are reported as ``"not_finite"``; -inf is
        a probability of 0 (an option that begins another may leave none for itself)."""
        finite = np.isfinite(row)
        if finite.all():
            return self.from_logprobs(template, row, shown)
        floor = row[finite].min() - 1e3 if finite.any() else 0.0
        parsed = self.from_logprobs(template, np.where(finite, row, floor), shown)
        return replace(parsed, problems=(*parsed.problems, "not_finite")) if _unknown(row).any() else parsed

    def from_text(self, parsed: Parsed, shown: list[int]) -> Parsed:
        """The answer read from a parsed generation about the candidates at positions ``shown``."""
        return parsed

    def from_logprobs(self, template: PromptTemplate, row: np.ndarray, shown: list[int]) -> Parsed:
        """The answer read from the options' log-probabilities about the candidates at positions ``shown``."""
        raise NotImplementedError(f"{type(self).__name__} has no log-probability read")


@dataclass(frozen=True)
class Rank(Task):
    """A permutation of the shown ids: generated (``[2] > [1] > [3]``) or, with ``read="score"``
    (FIRST), the ids sorted by the log-probability of each as the first answer token."""

    read: Literal["generate", "score"] = "generate"
    gives: ClassVar[str] = "order"
    answer: ClassVar[str] = "order"
    constraints: ClassVar[tuple[str, ...]] = ("permutation",)
    option: ClassVar[str] = "{index}]"

    def language(self, template: PromptTemplate, n: int) -> Constraint:
        consumed = Permutation.OPEN if template.answer_prefix.endswith(Permutation.OPEN) else ""
        return Permutation(n, consumed=consumed)

    def from_logprobs(self, template: PromptTemplate, row: np.ndarray, shown: list[int]) -> Parsed:
        return Parsed(np.argsort(-row, kind="stable").tolist())


@dataclass(frozen=True)
class Pick(Task):
    """The label (A, B, ...) of the most relevant shown document. An answer naming none counts as
    a pick of the document the first stage ranked highest (and is reported)."""

    read: Literal["generate", "likelihood"] = "generate"
    gives: ClassVar[str] = "pick"
    answer: ClassVar[str] = "choice"
    constraints: ClassVar[tuple[str, ...]] = ("labels",)
    option: ClassVar[str] = "{label}"
    labels: ClassVar[str] = LABELS
    ids: ClassVar[tuple[str, ...]] = ("label",)

    def from_text(self, parsed: Parsed, shown: list[int]) -> Parsed:
        return replace(parsed, value=shown.index(min(shown))) if "empty" in parsed.problems else parsed

    def from_logprobs(self, template: PromptTemplate, row: np.ndarray, shown: list[int]) -> Parsed:
        best = np.flatnonzero(row == row.max())  # of tied labels, the first stage's higher-ranked document
        return Parsed(int(min(best, key=lambda j: shown[j])))


@dataclass(frozen=True)
class Prefer(Task):
    """Which of two shown documents is better (the template's two ``options``, the first meaning
    "the first document"). The value is P(first): from the two options' log-probabilities, or 1, 0
    and 0.5 (no preference) from a generated answer."""

    read: Literal["score", "generate"] = "score"
    gives: ClassVar[str] = "preference"
    answer: ClassVar[str] = "choice"
    constraints: ClassVar[tuple[str, ...]] = ("options",)
    option: ClassVar[str | None] = None
    labels: ClassVar[str] = LABELS
    ids: ClassVar[tuple[str, ...]] = ("label", "index")

    def check(self, template: PromptTemplate) -> Parser:
        if len(template.options) != 2:
            raise ConfigError(f"a Prefer task needs a prompt with two options (the first meaning the first document), "
                              f"{template.name!r} has {list(template.options)}")
        return self.check_first_option(template, super().check(template), "the first document")

    def from_text(self, parsed: Parsed, shown: list[int]) -> Parsed:
        return replace(parsed, value=0.5 if "empty" in parsed.problems else float(parsed.value == 0))

    def from_logprobs(self, template: PromptTemplate, row: np.ndarray, shown: list[int]) -> Parsed:
        return Parsed(float(0.5 + 0.5 * np.tanh((row[0] - row[1]) / 2)))  # the logistic of the difference, without overflow


@dataclass(frozen=True)
class Score(Task):
    """One relevance score for the one shown document. Read from log-probabilities, ``combine``
    gives it: ``"first"`` is log P(first option) over the two options (Yes/No); ``"expected"`` is
    the expected value of numeric options (0..10). Generated, it is the parsed answer."""

    read: Literal["score", "generate"] = "score"
    gives: ClassVar[str] = "score"
    combine: Literal["first", "expected"] = "first"
    answer: ClassVar[str] = "score"
    constraints: ClassVar[tuple[str, ...]] = ("options",)
    option: ClassVar[str | None] = None
    ids: ClassVar[tuple[str, ...]] = ()

    def check(self, template: PromptTemplate) -> Parser:
        options = template.options
        if self.combine == "first" and len(options) != 2:
            raise ConfigError(f"scoring by the first option needs a prompt with two options (relevant first), "
                              f"{template.name!r} has {list(options)}")
        if self.combine == "expected" and (len(options) < 2 or not all(re.fullmatch(r"-?\d+(\.\d+)?", o) for o in options)):
            raise ConfigError(f"the expected rating needs at least two numeric options, {template.name!r} has {list(options)}")
        parser = super().check(template)
        return self.check_first_option(template, parser, "relevant") if self.combine == "first" else parser

    def _read_logprobs(self, template: PromptTemplate, row: np.ndarray, shown: list[int]) -> Parsed:
        """As :meth:`Task._read_logprobs`, but a row with an unknown option, or no finite one, scores
        ``-inf``, which the :class:`~rerank.rerankers._strategies.Pointwise` plan puts below every
        readable score (an unknown P(No) must not read as a certain Yes)."""
        if np.isfinite(row).any() and not _unknown(row).any():
            return super()._read_logprobs(template, row, shown)
        return Parsed(-np.inf, problems=("not_finite",))

    def from_logprobs(self, template: PromptTemplate, row: np.ndarray, shown: list[int]) -> Parsed:
        if self.combine == "first":
            return Parsed(float(row[0] - np.logaddexp(row[0], row[1])))
        weights = np.exp(row - row.max())
        return Parsed(float(weights / weights.sum() @ np.array([float(o) for o in template.options])))


@dataclass(frozen=True)
class Scores(Task):
    """A score for each shown document (GroupRank): JSON or ``[i]: score`` lines, generated."""

    read: Literal["generate"] = "generate"
    gives: ClassVar[str] = "scores"
    answer: ClassVar[str] = "scores"

    def samples(self, template: PromptTemplate, n: int) -> list[str]:
        """``n`` lines ``[i]: score`` (what the ``scores`` parser reads) at the template's highest option."""
        top = max(template.options, key=len, default="0")
        return ["\n".join(f"[{j + 1}]: {top}" for j in range(n)).removeprefix(template.answer_prefix)]


@dataclass(frozen=True)
class Think:
    """``inner`` after a reasoning phase of at most ``think_tokens`` tokens (budget forcing).

    The answer turn opens with :attr:`OPEN`; the model reasons until it closes the block or the
    budget runs out. Then the block is closed for it (:attr:`CLOSE`) and the inner task's answer is
    decoded after its answer prefix, under its constraint: exactly on in-process backends, by
    grammar on servers. ``Parsed.forced`` says whether the budget ran out. A budget of 0 is the
    plain inner task (the reranker does not wrap it). Everything but :meth:`ask` is the inner task's.
    """

    inner: Task = field(default_factory=Rank)
    OPEN: ClassVar[str] = "<think>\n"
    CLOSE: ClassVar[str] = "\n</think>\n"

    def __post_init__(self) -> None:
        if not isinstance(self.inner, Task):
            raise ConfigError(f"Think wraps a task (Rank(), Pick(), ...), got {self.inner!r}")

    def ask(self, r: LLMReranker, prompts: Sequence[Messages], shown: Sequence[list[int]]) -> list[Parsed]:
        budget = r.settings.think_tokens
        gens = r.generate([_answer_turn(p, self.OPEN) for p in prompts], [budget] * len(prompts),
                          [None] * len(prompts), stop=(self.CLOSE.strip(),))
        thoughts = [(g.reasoning if g.reasoning is not None else g.text).split(self.CLOSE.strip())[0].strip() for g in gens]
        answering = [_answer_turn(p, self.OPEN + t + self.CLOSE + _answer_prefix(p)) for p, t in zip(prompts, thoughts)]
        answers = self.inner.ask(r, answering, shown)
        return [replace(a, reasoning=t, forced=g.finish_reason == "length") for a, t, g in zip(answers, thoughts, gens)]


def _unknown(row: np.ndarray) -> np.ndarray:
    """Log-probabilities that are no probability: NaN and +inf."""
    return np.isnan(row) | np.isposinf(row)


def with_answer_prefix(answer: str, prefix: str) -> str:
    """``answer`` after the template's ``answer_prefix``, unless it repeats the prefix itself."""
    return answer if prefix.strip() and answer.lstrip().startswith(prefix.strip()) else prefix + answer


def _answer_prefix(messages: Messages) -> str:
    return messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""


def _answer_turn(messages: Messages, start: str) -> Messages:
    """``messages`` with the assistant's answer starting with ``start``."""
    head = messages[:-1] if messages[-1]["role"] == "assistant" else messages
    return [*head, {"role": "assistant", "content": start}]
