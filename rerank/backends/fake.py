"""A backend that answers from plain functions, for testing a paradigm's parsing and windowing logic.

It never stands in for a model in end-to-end tests; those use the real small model.

>>> b = FakeBackend(generate=lambda p: "[2] > [1]")
>>> b.generate(["rank these"])[0].text
'[2] > [1]'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rerank.backends.base import Backend, Generation, Prompt, check_max_new_tokens, prompt_text
from rerank.constraints import Constraint
from rerank.errors import ConfigError


class FakeBackend(Backend):
    """``generate(prompt_text) -> str`` and ``score(prompt_text, options) -> list[float]`` as functions.

    Constraints are recorded in :attr:`batches`, not enforced (``constrains = "no"``). A generated
    text is cut at the first ``stop`` string, and after ``max_new_tokens`` words (then its
    ``finish_reason`` is ``"length"``), as a model's would be.
    """

    constrains = "no"

    def __init__(self, generate: Callable[[str], str] | None = None,
                 score: Callable[[str, Sequence[str]], Sequence[float]] | None = None,
                 model: str = "fake", max_context: int = 4096):
        self._generate, self._score = generate, score
        self.model, self.max_context = model, max_context
        self.calls: list[str] = []
        self.batches: list[tuple[int, dict]] = []  # (prompts, keyword arguments) of each generate call

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: Sequence[str] = (), constraint: Constraint | None = None) -> list[Generation]:
        check_max_new_tokens(self, max_new_tokens)
        if self._generate is None:
            raise ConfigError("this FakeBackend (a stand-in for tests) was built without a generate function: give "
                              "FakeBackend(generate=...) in Python, or use a model backend (hf:, llamacpp:, vllm:, openai:)")
        texts = [prompt_text(p) for p in prompts]
        self.calls.extend(texts)
        self.batches.append((len(prompts), {"max_new_tokens": max_new_tokens, "temperature": temperature, "stop": stop,
                                            "constraint": constraint}))
        return [_cut(self._generate(t), self.count_tokens(t), max_new_tokens, stop) for t in texts]

    def score(self, prompts: Sequence[Prompt], options: Sequence[str]) -> np.ndarray:
        if self._score is None:
            raise ConfigError("this FakeBackend (a stand-in for tests) was built without a score function: give "
                              "FakeBackend(score=...) in Python, or use a model backend (hf:, llamacpp:, vllm:, openai:)")
        texts = [prompt_text(p) for p in prompts]
        self.calls.extend(texts)
        return np.array([self._score(t, options) for t in texts], dtype=np.float64).reshape(len(prompts), len(options))

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _cut(text: str, prompt_tokens: int, max_new_tokens: int, stop: Sequence[str]) -> Generation:
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    text = text[:min(cuts)] if cuts else text
    words = text.split(" ")
    if len([w for w in words if w.strip()]) <= max_new_tokens:
        return Generation(text, prompt_tokens=prompt_tokens, completion_tokens=len(text.split()))
    kept, seen = [], 0
    for w in words:
        seen += bool(w.strip())
        if seen > max_new_tokens:
            break
        kept.append(w)
    return Generation(" ".join(kept), prompt_tokens=prompt_tokens, completion_tokens=max_new_tokens, finish_reason="length")
