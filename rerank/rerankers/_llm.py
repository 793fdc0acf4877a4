"""What every prompt-based reranker shares: backend and prompt resolution, fitting a prompt into the
context window, batched generation, and turning a backend's answer into parser input."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rerank.backends.base import Backend, Generation, Prompt
from rerank.constraints import Constraint, OneOf, Permutation
from rerank.errors import ConfigError
from rerank.prompts import PromptTemplate
from rerank.prompts import load as load_prompt
from rerank.rerankers._parsing import LABELS, Parsed, ParseLog, get_parser
from rerank.rerankers._windows import truncate_words
from rerank.rerankers.base import Reranker

BackendSpec = Backend | str
PromptSpec = str | Path | PromptTemplate

_CHAT_OVERHEAD = 32
"""Tokens reserved for the chat template's role markers when checking the context budget."""


class LLMReranker(Reranker):
    """Base of rerankers that prompt an LLM backend. Subclasses set ``default_prompt`` and ``paradigms``."""

    default_prompt: ClassVar[str]
    paradigms: ClassVar[tuple[str, ...]]

    def _setup(self, backend: BackendSpec, prompt: PromptSpec | None, max_words: int, batch_size: int,
               max_new_tokens: int | None, temperature: float, progress: bool | None, constrained: bool = True) -> None:
        if not isinstance(backend, (Backend, str)):
            raise ConfigError(f"{type(self).__name__}: backend must be a Backend or a spec string such as 'hf:smollm2', "
                              f"got {type(backend).__name__}")
        if max_words < 1 or batch_size < 1 or (max_new_tokens is not None and max_new_tokens < 1):
            raise ConfigError(f"{type(self).__name__}: max_words, batch_size and max_new_tokens must be positive")
        if temperature < 0:
            raise ConfigError(f"{type(self).__name__}: temperature must be >= 0, got {temperature}")
        self.backend, self.prompt, self.progress = backend, prompt, progress
        self.max_words, self.batch_size = max_words, batch_size
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.template = load_prompt(prompt if prompt is not None else self.default_prompt)
        if self.template.paradigm not in self.paradigms:
            raise ConfigError(f"{type(self).__name__} needs a prompt of paradigm {' or '.join(self.paradigms)}; "
                              f"{self.template.name!r} is {self.template.paradigm!r}")
        self.parser = get_parser(self.template.parser or "permutation")
        self.constrained = constrained
        self.answer_log = ParseLog()
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None

    # -- backend ------------------------------------------------------------------------------
    @property
    def llm(self) -> Backend:
        """The backend, loaded on first use when it was given as a spec string."""
        if self._backend is None:
            from rerank.backends import load_backend

            self._backend = load_backend(self.backend)
        return self._backend

    def wrap_backend(self, wrap: Callable[[Backend], Backend]) -> Backend:
        """Route this reranker's calls through ``wrap(backend)`` (a cache, a token meter); returns the wrapper."""
        self._backend = wrap(self.llm)
        return self._backend

    def token_cap(self, expected: int) -> int:
        """Output-token cap: the user's ``max_new_tokens``, else the template's, else ``expected``."""
        return self.max_new_tokens or self.template.max_new_tokens or expected

    def answer_constraint(self, n: int) -> Constraint | None:
        """What an answer about ``n`` items may be (the template's ``constraint``), or None."""
        kind = self.template.constraint
        if not self.constrained or not kind:
            return None
        if kind == "permutation":
            return Permutation(n, consumed=self.template.answer_prefix.format(num=n))
        if kind == "labels":
            return OneOf(list(LABELS[:n]))
        return OneOf(self.template.options)

    @property
    def constrained_by(self) -> str:
        """How answers are constrained: the backend's ``constrains`` (exact, shape) or ``"no"``."""
        return self.llm.constrains if self.constrained and self.template.constraint else "no"

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int,
                 sizes: Sequence[int] | None = None) -> list[Generation]:
        """Generations in batches of ``batch_size``; ``sizes`` (items per prompt) turns on the answer constraint."""
        constraints = [self.answer_constraint(n) for n in sizes] if sizes is not None else [None] * len(prompts)
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(constraints):
            groups.setdefault(c.key() if c is not None else "", []).append(i)
        out: list[Generation] = [None] * len(prompts)  # type: ignore[list-item]
        for idx in groups.values():
            for s in range(0, len(idx), self.batch_size):
                part = idx[s : s + self.batch_size]
                made = self.llm.generate([prompts[i] for i in part], max_new_tokens=max_new_tokens,
                                         temperature=self.temperature, constraint=constraints[part[0]])
                for i, g in zip(part, made):
                    out[i] = g
        return out

    def score_options(self, prompts: Sequence[Prompt], options: Sequence[str]) -> np.ndarray:
        rows = [self.llm.score(prompts[s : s + self.batch_size], options) for s in range(0, len(prompts), self.batch_size)]
        return np.vstack(rows) if rows else np.zeros((0, len(options)))

    def parse(self, gen: Generation, n: int) -> Parsed:
        """Parse a generation with the template's parser (and count it in :attr:`answer_log`).

        The template's ``answer_prefix`` is put back in front of the answer (unless the answer
        repeats it); reasoning the backend split off (``Generation.reasoning``) is put back as
        ``<think>...</think>`` instead.
        """
        if gen.reasoning is not None:
            return self.answer_log.add(self.parser(f"<think>{gen.reasoning}</think>{gen.text}", n))
        prefix = self.template.answer_prefix
        repeated = prefix.strip() and gen.text.lstrip().startswith(prefix.strip())
        return self.answer_log.add(self.parser(gen.text if repeated else prefix + gen.text, n))

    # -- prompts ------------------------------------------------------------------------------
    def render(self, query: str, texts: Sequence[str], item: Callable[[int, str], dict[str, Any]],
               max_new_tokens: int, **values: Any) -> list[dict[str, str]]:
        """Messages for ``query`` and ``texts``, each document cut to fit the backend's context.

        ``item(i, text)`` gives the item placeholders of document ``i``. Documents start at
        ``max_words`` words and are cut shorter until the prompt plus ``max_new_tokens`` fits.
        """
        budget = self.llm.max_context - max_new_tokens - _CHAT_OVERHEAD
        words = self.max_words
        while True:
            items = [item(i, truncate_words(t, words)) for i, t in enumerate(texts)]
            messages = self.template.render(query, items, **values)
            used = self.llm.count_tokens("\n".join(m["content"] for m in messages))
            if used <= budget:
                return messages
            if words <= 8:
                raise ConfigError(f"{type(self).__name__}: {len(texts)} documents do not fit the backend's context of "
                                  f"{self.llm.max_context} tokens ({used} prompt + {max_new_tokens} answer tokens even at "
                                  f"{words} words per document); use a smaller window/set/group or a longer-context model")
            words = max(8, words * 2 // 3)
