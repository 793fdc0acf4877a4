"""Pointwise LLM relevance: one prompt per (query, document), scored from the backend's log-probs.

* :class:`YesNo` -- "is the document relevant? Yes/No"; the score is log P(Yes) normalized over
  the two options (prompt ``pointwise/yes_no``).
* :class:`ERank` -- fine-grained 0-10 relevance; the score is the expected value of the options
  under the softmax of their log-probabilities (prompt ``pointwise/fine_grained``; ERank, Cai et
  al. 2025).

With ``method="generate"`` (backends without log-probs) the answer is parsed instead: yes/no as
1/0, the rating as its number; unparseable answers are counted in ``info["parse"]``. Pairs of all
queries are batched together (``batch_size`` prompts per backend call).

>>> from rerank.backends.fake import FakeBackend
>>> judge = YesNo(FakeBackend(score=lambda p, opts: [0.0, -3.0] if "lives" in p else [-3.0, 0.0]))
>>> judge.rerank("flea life cycle", ["Bananas are yellow.", "A flea lives 100 days."]).docids
['1', '0']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar

import numpy as np

from rerank.errors import ConfigError
from rerank.rerankers._llm import BackendSpec, LLMReranker, PromptSpec
from rerank.rerankers._parsing import Parsed, ParseLog, register_parser
from rerank.rerankers._windows import truncate_words
from rerank.rerankers.base import PointwiseReranker
from rerank.types import Candidates

METHODS = ("score", "generate")


@register_parser("yes_no")
def parse_yes_no(text: str, n: int = 1) -> Parsed:
    """1.0 for an answer starting with yes, 0.0 for no; anything else 0.5 (problem ``"empty"``)."""
    m = re.search(r"\b(yes|no)\b", text, re.IGNORECASE)
    if m is None:
        return Parsed(0.5, problems=("empty",))
    return Parsed(1.0 if m.group(1).lower() == "yes" else 0.0)


@register_parser("rating")
def parse_rating(text: str, n: int = 1) -> Parsed:
    """The first number of the answer; none gives 0.0 (problem ``"empty"``)."""
    m = re.search(r"-?\d+(?:\.\d+)?", text)
    if m is None:
        return Parsed(0.0, problems=("empty",))
    return Parsed(float(m.group()))


class LLMPointwise(LLMReranker, PointwiseReranker):
    """Base of pointwise LLM rerankers; subclasses turn option log-probs into one score per prompt.

    Args:
        backend: a Backend or a spec string (``"hf:smollm2"``).
        prompt: template name, YAML path or PromptTemplate (paradigm ``pointwise``; ``{query}`` and
            ``{text}`` in ``prefix``, the answer options in ``options``).
        method: ``"score"`` (option log-probs) or ``"generate"`` (parse the answer).
        max_words: documents are cut to this many words (counted in ``info["truncated"]``).
        batch_size: prompts per backend call.
        max_new_tokens: answer length in ``"generate"`` mode (default: the template's).
        progress: show a progress bar (``None``: only in a terminal at INFO level).
    """

    paradigms: ClassVar[tuple[str, ...]] = ("pointwise",)

    def __init__(self, backend: BackendSpec = "hf:smollm2", prompt: PromptSpec | None = None, method: str = "score",
                 max_words: int = 300, batch_size: int = 16, max_new_tokens: int | None = None,
                 progress: bool | None = None):
        if method not in METHODS:
            raise ConfigError(f"method={method!r}; choose one of {METHODS}")
        self.method = method
        self._setup(backend, prompt, max_words, batch_size, max_new_tokens, 0.0, progress)
        self._check_options(self.template.options)

    def _check_options(self, options: Sequence[str]) -> None:
        """Raise ConfigError when the template's options do not suit this scorer."""

    def combine(self, logprobs: np.ndarray) -> np.ndarray:
        """One score per row of option log-probabilities (shape ``(prompts, options)``)."""
        raise NotImplementedError

    def _prompts(self, queries: Sequence[str], texts: Sequence[str]) -> list[list[dict[str, str]]]:
        return [self.template.render(q, text=truncate_words(t, self.max_words)) for q, t in zip(queries, texts)]

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        return self.combine(self.score_options(self._prompts(queries, texts), self.template.options))

    def rerank_many(self, batch: Sequence[Candidates]) -> list[Candidates]:
        truncated = [sum(len(t.split()) > self.max_words for t in c.texts) for c in batch]
        if self.method == "score":
            out = super().rerank_many(batch)
            return [replace(c, info={**c.info, "truncated": n}) for c, n in zip(out, truncated)]
        queries = [c.query for c in batch for _ in c.texts]
        gens = self.generate(self._prompts(queries, [t for c in batch for t in c.texts]), self.token_cap(8))
        out, start = [], 0
        for c, n in zip(batch, truncated):
            log = ParseLog()
            scores = [log.add(self.parse(g, 1)).value for g in gens[start : start + len(c)]]
            out.append(c.with_scores(scores, truncated=n, parse=log.as_dict()))
            start += len(c)
        return out


class YesNo(LLMPointwise):
    """Relevance = log P(first option) normalized over the two options ("Yes" vs "No")."""

    default_prompt = "pointwise/yes_no"

    def _check_options(self, options: Sequence[str]) -> None:
        if len(options) != 2:
            raise ConfigError(f"YesNo needs a prompt with two options (relevant first), {self.template.name!r} has {list(options)}")

    def combine(self, logprobs: np.ndarray) -> np.ndarray:
        return logprobs[:, 0] - np.logaddexp(logprobs[:, 0], logprobs[:, 1])


class ERank(LLMPointwise):
    """Relevance = expected rating: softmax over the numeric options' log-probs, times their values."""

    default_prompt = "pointwise/fine_grained"

    def _check_options(self, options: Sequence[str]) -> None:
        try:
            self.values = np.array([float(o) for o in options])
        except ValueError:
            raise ConfigError(f"ERank needs numeric options, {self.template.name!r} has {list(options)}") from None
        if len(options) < 2:
            raise ConfigError(f"ERank needs at least two rating options, {self.template.name!r} has {list(options)}")

    def combine(self, logprobs: np.ndarray) -> np.ndarray:
        weights = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
        return (weights / weights.sum(axis=1, keepdims=True)) @ self.values
