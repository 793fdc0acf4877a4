"""The LLM backend contract. A paradigm receives a backend; a backend knows nothing of paradigms.

Two verbs, both batched: :meth:`Backend.generate` (text) and :meth:`Backend.score` (log-probability
of each option as the continuation of each prompt). A prompt is plain text or chat messages.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rerank.constraints import Constraint

Message = dict[str, str]
Prompt = str | list[Message]


@dataclass(frozen=True)
class Generation:
    text: str
    reasoning: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


class Backend(ABC):
    """Base class of LLM backends (transformers, vLLM, llama.cpp, OpenAI-compatible HTTP)."""

    model: str
    max_context: int = 2048
    constrains: str = "exact"
    """How ``generate`` honours a constraint: ``"exact"`` (token masks), ``"shape"`` (a grammar
    without the each-id-once rule) or ``"no"``."""

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: Sequence[str] = (), constraint: Constraint | None = None) -> list[Generation]:
        """One completion per prompt (greedy by default), inside ``constraint`` when one is given.

        Backends follow the constraint as closely as they can (see :mod:`rerank.constraints`) and
        say how in :attr:`constrains`.
        """

    @abstractmethod
    def score(self, prompts: Sequence[Prompt], options: Sequence[str]) -> np.ndarray:
        """Log-probability of each option as the continuation of each prompt; shape (prompts, options)."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` under the model's tokenizer."""
