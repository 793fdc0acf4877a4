"""Prompt-based rerankers as Task x Strategy x Settings.

A family is a declaration: a :class:`~rerank.rerankers._tasks.Task` (what one call asks and how its
answer is read), a :class:`~rerank.rerankers._strategies.Strategy` (how calls are planned over the
candidates) and default :class:`Settings` (what every family shares)::

    class ThinkListwise(LLMReranker):
        task = Think(Rank())
        strategy = SlidingWindow(window=20, step=10)
        defaults = Settings(prompt="listwise/rankgpt", depth=100, think_tokens=64)

The constructor takes the fields of the settings, the strategy and the task (``aliases`` may
rename them); ``repr`` names those that differ from the declaration. ``think_tokens > 0`` wraps
any task in :class:`~rerank.rerankers._tasks.Think`. Candidates below ``depth`` keep their order.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rerank.backends import parse_spec
from rerank.backends.base import Backend, Generation, Prompt, checked_count, checked_generations, checked_scores, prompt_text
from rerank.constraints import Constraint
from rerank.errors import ConfigError
from rerank.params import check_fields, class_hints
from rerank.prompts import PromptTemplate, placeholders
from rerank.prompts import load as load_prompt
from rerank.rerankers._parsing import Parsed, ParseLog
from rerank.rerankers._strategies import Strategy, lockstep
from rerank.rerankers._tasks import Messages, Task, Think, with_answer_prefix
from rerank.rerankers.base import Reranker
from rerank.stage import _same
from rerank.text import truncate_words
from rerank.types import Candidates

BackendSpec = Backend | str
PromptSpec = str | Path | PromptTemplate

_CHAT_OVERHEAD = 32
"""Tokens reserved for the chat template's role markers when checking the context budget."""
ONE_DOCUMENT = frozenset({"text", "score", "docid", "index", "label"})
"""Item placeholders that a prefix or suffix may use only in a prompt that shows one document."""
_MIN_WORDS = 8
"""Documents are never cut below this many words to fit a prompt into the context."""
_CHARS_PER_WORD = 20
"""Characters a document keeps per word it may keep: far above natural text, so only a long run
without spaces (Chinese or Thai text, a URL) is cut by it."""


@dataclass(frozen=True)
class Settings:
    """What every LLM family shares. A family's ``defaults`` fill in what the user leaves out.

    Args:
        backend: a :class:`~rerank.backends.base.Backend` or a spec string (``"hf:smollm2"``).
        prompt: a template name (``"listwise/rankgpt"``), a YAML path or a PromptTemplate.
        depth: how many of the top candidates are reranked (None: all); the rest keep their order below.
        batch_size: prompts per backend call.
        max_words: words kept per document (fewer when a prompt would not fit the context).
        max_new_tokens: answer-token cap; default: the template's, else the task's longest
            well-formed answer under the backend's tokenizer.
        temperature: 0 is greedy.
        constrained: decode inside the template's constraint where the backend can
            (:mod:`rerank.constraints`); False lets the model write anything.
        think_tokens: reasoning budget before each answer (:class:`~rerank.rerankers._tasks.Think`); 0: none.
        progress: show a progress bar (None: only in a terminal at INFO level).
    """

    backend: BackendSpec = "hf:smollm2"
    prompt: PromptSpec | None = None
    depth: int | None = None
    batch_size: int = 8
    max_words: int = 100
    max_new_tokens: int | None = None
    temperature: float = 0.0
    constrained: bool = True
    think_tokens: int = 0
    progress: bool | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if isinstance(self.backend, str):
            parse_spec(self.backend)  # a bad spec fails here, not at the first call


SETTINGS = tuple(f.name for f in fields(Settings))
PARTS = ("settings", "strategy", "task")


class LLMReranker(Reranker):
    """A reranker that prompts an LLM: ``task`` x ``strategy`` x ``defaults`` (see the module docstring).

    Declare a family as a subclass setting those three class attributes, or build one directly:
    ``LLMReranker(backend, prompt, task=Rank(), strategy=SinglePass())``.
    """

    task: ClassVar[Task]
    strategy: ClassVar[Strategy]
    defaults: ClassVar[Settings] = Settings()
    aliases: ClassVar[dict[str, str]] = {}
    """Public argument name -> task or strategy field (``scoring`` -> ``read``)."""

    def __init__(self, backend: BackendSpec | None = None, prompt: PromptSpec | None = None, **options: Any):
        self._given = {k: options.pop(k) for k in ("task", "strategy") if k in options}
        task, strategy = (self._given.get(k) or getattr(type(self), k, None) for k in ("task", "strategy"))
        if task is None or strategy is None:
            raise ConfigError(f"{type(self).__name__} needs a task and a strategy (declare them, or pass task= and strategy=)")
        self._declared, self._arguments = _declare(type(self), strategy, task)
        changes: dict[str, dict[str, Any]] = {part: {} for part in PARTS}
        for name, value in {"backend": backend, "prompt": prompt, **options}.items():
            if name not in self._arguments:
                raise ConfigError(f"{type(self).__name__} has no argument {name!r}; arguments: {', '.join(sorted(self._arguments))}")
            if value is not None or name not in SETTINGS[:2]:
                part, field_name = self._arguments[name]
                changes[part][field_name] = value
        try:
            self.settings, self.strategy, self.task = (replace(self._declared[p], **changes[p]) for p in PARTS)
        except ConfigError as e:  # name the family, and an aliased field as the argument the user gave
            parts = "|".join(type(self._declared[p]).__name__ for p in PARTS)
            message = re.sub(rf"^({parts}): ", "", str(e))
            for public, field in self.aliases.items():
                message = re.sub(rf"\b{field}(?=( must|=))", public, message)
            raise ConfigError(f"{type(self).__name__}: {message}") from None
        if isinstance(task, Think) and self.settings.think_tokens == 0 and "think_tokens" not in options:
            raise ConfigError(f"{type(self).__name__}: a Think task needs think_tokens > 0 (think_tokens=0 "
                              "asks the plain task; say so with think_tokens=0)")
        self.asker = Think(self.task) if self.settings.think_tokens > 0 else self.task
        if self.settings.prompt is None:
            raise ConfigError(f"{type(self).__name__} needs a prompt (a template name, YAML path or PromptTemplate)")
        self.template = load_prompt(self.settings.prompt)
        try:
            self.parser = self.task.check(self.template)
        except ConfigError as e:
            raise ConfigError(f"{type(self).__name__}: {e}") from None
        one_each = placeholders(self.template.prefix + self.template.suffix) & ONE_DOCUMENT
        if one_each and self.strategy.takes != "score":  # only a pointwise prompt shows one document
            raise ConfigError(f"{type(self).__name__}: prompt {self.template.name!r} uses {sorted(one_each)} in its prefix "
                              "or suffix, which have a value only when a prompt shows one document; this family shows "
                              "several per prompt: put them in the item section")
        self.progress = self.settings.progress
        self.shows_scores = "score" in placeholders(self.template.prefix + self.template.item)
        self.answer_log = ParseLog(keep_reasoning=False)
        self._budgets: dict[int, int] = {}
        self._backend: Backend | None = self.settings.backend if isinstance(self.settings.backend, Backend) else None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give a declared family a constructor signature listing every argument (for help, and for
        the expression checks of :mod:`rerank.params`)."""
        super().__init_subclass__(**kwargs)
        task, strategy = getattr(cls, "task", None), getattr(cls, "strategy", None)
        if task is None or strategy is None or "__init__" in cls.__dict__:
            return
        declared, arguments = _declare(cls, strategy, task)
        if isinstance(task, Think) and cls.defaults.think_tokens == 0:
            raise ConfigError(f"{cls.__name__}: declares a Think task with no think budget; set think_tokens in its defaults")
        parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        hints: dict[str, Any] = {}
        for name, (part, f) in arguments.items():
            first = name in SETTINGS[:2]
            parameters.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD if first else inspect.Parameter.KEYWORD_ONLY,
                                                default=getattr(declared[part], f)))
            hint = class_hints(type(declared[part])).get(f, Any)
            hints[name] = hint | None if first else hint

        def __init__(self: LLMReranker, backend: Any = None, prompt: Any = None, **options: Any) -> None:
            LLMReranker.__init__(self, backend, prompt, **options)

        __init__.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        __init__.__annotations__ = hints
        cls.__init__ = __init__  # type: ignore[method-assign]

    def __getattr__(self, name: str) -> Any:
        """Every argument reads back by name (``reranker.window``, ``reranker.backend``)."""
        table = self.__dict__.get("_arguments", {})
        if name not in table:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        part, f = table[name]
        return getattr(getattr(self, part), f)

    def params(self) -> dict[str, Any]:
        """Arguments that differ from the family's declaration (drives repr, eq and hash)."""
        changed = dict(self._given)
        for name, (part, f) in self._arguments.items():
            value = getattr(getattr(self, part), f)
            if not _same(value, getattr(self._declared[part], f)):
                changed[name] = value
        return changed

    def __eq__(self, other: object) -> bool:
        """Equal arguments and equal templates (a YAML file edited between two builds differs)."""
        return super().__eq__(other) and self.template == other.template  # type: ignore[attr-defined]

    __hash__ = Reranker.__hash__

    # -- backend ------------------------------------------------------------------------------
    @property
    def llm(self) -> Backend:
        """The backend, loaded on first use when it was given as a spec string."""
        if self._backend is None:
            from rerank.backends import load_backend

            self._backend = load_backend(self.settings.backend)
        return self._backend

    def wrap_backend(self, wrap: Callable[[Backend], Backend]) -> Backend:
        """Route this reranker's calls through ``wrap(backend)`` (a cache, a token meter); returns the wrapper."""
        self._backend = wrap(self.llm)
        return self._backend

    @property
    def constrain_answers(self) -> bool:
        """Whether generated answers are decoded inside the task's language: ``constrained`` is on,
        the template declares a constraint and the task generates its answers."""
        return bool(self.settings.constrained and self.template.constraint and self.task.read == "generate")

    def answer_tokens(self, n: int) -> int:
        """Answer cap about ``n`` documents: ``max_new_tokens``, else the template's, else the task's
        longest well-formed answer in the backend's tokens."""
        if n not in self._budgets:
            self._budgets[n] = (self.settings.max_new_tokens or self.template.max_new_tokens
                                or max(checked_count(self.llm, self.llm.count_tokens(s), f"count_tokens({s[:40]!r})")
                                       for s in self.task.samples(self.template, n)))
        return self._budgets[n]

    def generate(self, prompts: Sequence[Prompt], caps: Sequence[int], constraints: Sequence[Constraint | None],
                 stop: Sequence[str] = ()) -> list[Generation]:
        """Generations, one backend call per batch of prompts sharing a cap and a constraint."""
        return self._batched(prompts, [(cap, c.key() if c else "") for cap, c in zip(caps, constraints)],
                             lambda batch, i: checked_generations(self.llm, self.llm.generate(
                                 batch, max_new_tokens=caps[i], stop=stop, constraint=constraints[i],
                                 temperature=self.settings.temperature), len(batch)))

    def score_options(self, prompts: Sequence[Prompt], options: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Log-probability of each prompt's options, one backend call per batch sharing an option list."""
        return self._batched(prompts, [tuple(o) for o in options], lambda batch, i: checked_scores(
            self.llm, self.llm.score(batch, options[i]), len(batch), len(options[i])))

    def _batched(self, prompts: Sequence[Prompt], kinds: Sequence[Any], call: Callable[[list[Prompt], int], list[Any]]) -> list[Any]:
        """``call(batch, first index)`` over batches of ``batch_size`` prompts of one kind, longest
        prompts first; the results in the prompts' order."""
        by_kind: dict[Any, list[int]] = {}
        for i in sorted(range(len(prompts)), key=lambda i: -len(prompt_text(prompts[i]))):
            by_kind.setdefault(kinds[i], []).append(i)
        out: list[Any] = [None] * len(prompts)
        size = self.settings.batch_size
        for idx in (idx[s : s + size] for idx in by_kind.values() for s in range(0, len(idx), size)):
            for i, made in zip(idx, call([prompts[i] for i in idx], idx[0])):
                out[i] = made
        return out

    def parse(self, gen: Generation, n: int) -> Parsed:
        """Parse a generation with the template's parser, its ``answer_prefix`` put back in front
        (unless the answer repeats it)."""
        return self.parser(with_answer_prefix(gen.text, self.template.answer_prefix), n)

    # -- prompts ------------------------------------------------------------------------------
    def messages(self, cands: Candidates, shown: Sequence[int], scores: Sequence[str] | None = None,
                 cut: set[int] | None = None) -> Messages:
        """Messages showing the candidates at positions ``shown``, each document cut to fit the context.

        Documents start at ``max_words`` words and are cut shorter until the prompt, the reasoning
        budget and the answer fit. ``scores``: the ``{score}`` of every candidate (default: the task's);
        ``cut`` gathers the positions of the documents shown shorter than they are.
        """
        scores = scores if scores is not None else self.task.show_scores(cands.scores)
        answer = self.answer_tokens(len(shown))
        context = checked_count(self.llm, self.llm.max_context, "max_context", low=1)
        budget = context - self.settings.think_tokens - answer - _CHAT_OVERHEAD
        if budget <= 0:
            raise ConfigError(f"{type(self).__name__}: think_tokens ({self.settings.think_tokens}) and the answer cap "
                              f"({answer} tokens: max_new_tokens, the template's or the task's) leave no room for the "
                              f"prompt in the backend's context of {context} tokens; lower them or use a "
                              "longer-context model")
        words = self.settings.max_words
        while True:
            items = [{"index": j + 1, "label": self.task.label(j), "docid": cands.docids[p], "score": scores[p],
                      "text": truncate_words(cands.texts[p], words, words * _CHARS_PER_WORD)} for j, p in enumerate(shown)]
            messages = self.template.render(cands.query, items, **(items[0] if len(items) == 1 else {}))
            text = prompt_text(messages)
            used = checked_count(self.llm, self.llm.count_tokens(text), f"count_tokens({text[:40]!r})")
            if used <= budget:
                if cut is not None:
                    cut.update(p for p, item in zip(shown, items) if item["text"] != cands.texts[p])
                return messages
            if words <= _MIN_WORDS:
                fewer = "show fewer documents per prompt (window, set_size, group_size) or " if len(shown) > 1 else ""
                raise ConfigError(f"{type(self).__name__}: {len(shown)} document(s) do not fit the backend's context of "
                                  f"{context} tokens ({used} prompt tokens, {context - budget} "
                                  f"reserved, even at {words} words per document); {fewer}use a longer-context model")
            words = max(_MIN_WORDS, words * 2 // 3)

    # -- running ------------------------------------------------------------------------------
    def rerank_many(self, batch: Sequence[Candidates]) -> list[Candidates]:
        batch = list(batch)
        depth = self.settings.depth
        tops = [len(c) if depth is None else min(depth, len(c)) for c in batch]
        logs = [ParseLog() for _ in batch]
        cuts: list[set[int]] = [set() for _ in batch]
        scores = [self.task.show_scores(c.scores[:top]) + [""] * (len(c) - top) for c, top in zip(batch, tops)]

        def answer(requests: list[tuple[int, list[list[int]]]]) -> list[list[Any]]:
            flat = [(q, shown) for q, prompts in requests for shown in prompts]
            prompts = [self.messages(batch[q], shown, scores[q], cuts[q]) for q, shown in flat]
            parsed = iter(self.asker.ask(self, prompts, [shown for _, shown in flat]))
            return [[logs[q].add(self.answer_log.add(next(parsed))).value for _ in shown_lists] for q, shown_lists in requests]

        results = lockstep([self.strategy.plan(top) for top in tops], answer, self.progress, repr(self)[:40])
        return [self._finish(c, top, res, log, cut) for c, top, res, log, cut in zip(batch, tops, results, logs, cuts)]

    def _finish(self, cands: Candidates, top: int, result: Any, log: ParseLog, cut: set[int]) -> Candidates:
        """The candidates in the plan's order (or by its scores), the tail below ``top`` unchanged;
        ``cut``: the positions of the documents shown shortened."""
        constrained = self.llm.constrains if self.constrain_answers else "no"  # exact, shape or no
        info: dict[str, Any] = {"parse": log.as_dict(), "constrained": constrained, "truncated": len(cut), **self.strategy.info(log)}
        if log.reasoning:
            info["reasoning"] = list(log.reasoning)
        if isinstance(result, np.ndarray):
            floor = (result.min() if top else 0.0) - 1.0
            return cands.with_scores(np.concatenate([result, floor - np.arange(len(cands) - top)]), **info)
        return cands.reordered(list(result) + list(range(top, len(cands))), **info)


def _declare(cls: type[LLMReranker], strategy: Any, task: Any) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """The declared parts (a ``Think`` task unwrapped), and each public argument name -> (part, field):
    backend, prompt, the strategy's, the task's, the other settings. Refuses parts that are not a
    task, a strategy and Settings, a task whose answers the strategy does not read, and clashing names."""
    if not isinstance(cls.defaults, Settings):
        raise ConfigError(f"{cls.__name__}: defaults must be a Settings object (Settings(prompt=...)), got {cls.defaults!r}")
    for part, value, kind in (("task", task, (Task, Think)), ("strategy", strategy, Strategy)):
        if not (isinstance(value, kind) and is_dataclass(value)):
            raise ConfigError(f"{cls.__name__}: {part} must be a {part} object (a dataclass instance such as "
                              f"{'Rank()' if part == 'task' else 'SinglePass()'}), got {value!r}")
    inner = task.inner if isinstance(task, Think) else task
    gives, takes = getattr(inner, "gives", None), getattr(strategy, "takes", None)
    if gives is None or gives != takes:
        raise ConfigError(f"{cls.__name__}: a {type(inner).__name__} task gives {gives or 'undeclared'} answers, but a "
                          f"{type(strategy).__name__} strategy takes {takes or 'undeclared'} answers "
                          "(Task.gives and Strategy.takes must match)")
    declared = {"settings": cls.defaults, "strategy": strategy, "task": inner}
    rows = [("settings", n) for n in SETTINGS[:2]] + [(part, f.name) for part in PARTS[1:] for f in fields(declared[part])]
    rows += [("settings", n) for n in SETTINGS[2:]]
    names = [f for _, f in rows]
    for public, f in cls.aliases.items():
        if f not in names or public in names:
            raise ConfigError(f"{cls.__name__}: alias {public!r} -> {f!r}: the target must be a task or strategy "
                              "field and the alias a new name")
    renamed = {v: k for k, v in cls.aliases.items()}
    arguments: dict[str, tuple[str, str]] = {}
    for part, f in rows:
        name = renamed.get(f, f)
        if name in arguments:
            raise ConfigError(f"{cls.__name__}: argument {name!r} is a field of both the {arguments[name][0]} "
                              f"and the {part}; rename one, or give one an alias")
        arguments[name] = (part, f)
    return declared, arguments
