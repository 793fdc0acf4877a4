"""Reasoning rerankers: the model thinks first (``<think>...</think>``), then answers in the format
it was trained on (``<answer>...</answer>``). The reasoning text of every call is kept in
``info["reasoning"]`` of each query (in call order), next to the parse report ``info["parse"]``.

* :class:`ReasonRank` -- listwise (Liu et al., 2025): ``<answer>[3] > [1] > [2]</answer>`` over a
  sliding window (20, step 10), as :class:`~rerank.rerankers.listwise.Listwise`.
* :class:`RankR1` -- setwise (Zhuang et al., 2025): ``<answer>[B]</answer>``, the most relevant of
  a set, sorted as :class:`~rerank.rerankers.setwise.Setwise`.
* :class:`ERankThink` -- pointwise, ERank-style: ``<answer>7</answer>``, an integer relevance
  score per document after the reasoning; all documents of all queries are one batch (the
  log-probability variant without reasoning is :class:`~rerank.rerankers.pointwise.ERank`).

Backends that return reasoning separately (``Generation.reasoning``, e.g. an OpenAI-compatible
server with a reasoning parser) are handled too: the reasoning is put back before parsing.

>>> from rerank.backends.fake import FakeBackend
>>> fake = FakeBackend(generate=lambda p: "<think>doc 2 is about cats</think><answer>[2] > [1]</answer>")
>>> res = ReasonRank(fake, window=2, step=1).rerank("cats", ["dogs", "cats"])
>>> res.docids, res.info["reasoning"]
(['1', '0'], ['doc 2 is about cats'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rerank.errors import ConfigError
from rerank.rerankers._llm import BackendSpec, LLMReranker, PromptSpec
from rerank.rerankers._parsing import ParseLog
from rerank.rerankers.listwise import Listwise
from rerank.rerankers.setwise import Setwise
from rerank.types import Candidates


class ReasonRank(Listwise):
    """Listwise reasoning reranker; ``think_tokens`` is added to the output cap of each window."""

    default_prompt = "reasoning/reasonrank"
    paradigms = ("reasoning", "listwise")

    def __init__(self, backend: BackendSpec = "hf:smollm2", prompt: PromptSpec | None = None, *, think_tokens: int = 1024,
                 window: int = 20, step: int = 10, depth: int = 100, passes: int = 1, max_words: int = 100,
                 batch_size: int = 8, max_new_tokens: int | None = None, temperature: float = 0.0, progress: bool | None = None):
        if think_tokens < 0:
            raise ConfigError(f"think_tokens must be >= 0, got {think_tokens}")
        self.think_tokens = think_tokens
        super().__init__(backend, prompt, window=window, step=step, depth=depth, passes=passes, max_words=max_words,
                         batch_size=batch_size, max_new_tokens=max_new_tokens, temperature=temperature, progress=progress)

    def answer_tokens(self, n: int) -> int:
        return self.think_tokens + super().answer_tokens(n) + 4


class RankR1(Setwise):
    """Setwise reasoning reranker (always ``scoring="generate"``: the answer follows the reasoning)."""

    default_prompt = "reasoning/rank_r1"
    paradigms = ("reasoning", "setwise")

    def __init__(self, backend: BackendSpec = "hf:smollm2", prompt: PromptSpec | None = None, *, think_tokens: int = 512,
                 method: str = "heapsort", set_size: int = 4, k: int = 10, depth: int = 100, max_words: int = 100,
                 batch_size: int = 8, max_new_tokens: int | None = None, temperature: float = 0.0, progress: bool | None = None):
        if think_tokens < 0:
            raise ConfigError(f"think_tokens must be >= 0, got {think_tokens}")
        self.think_tokens = think_tokens
        super().__init__(backend, prompt, method=method, scoring="generate", set_size=set_size, k=k, depth=depth,
                         max_words=max_words, batch_size=batch_size, max_new_tokens=max_new_tokens,
                         temperature=temperature, progress=progress)

    def answer_tokens(self, n: int) -> int:
        return self.think_tokens + 12


class ERankThink(LLMReranker):
    """Pointwise reasoning reranker: think, then a relevance score (the template's scale, 0-10 by
    default); ties keep the first-stage order. Documents below ``depth`` stay under the scored ones."""

    default_prompt = "reasoning/erank"
    paradigms = ("reasoning",)

    def __init__(self, backend: BackendSpec = "hf:smollm2", prompt: PromptSpec | None = None, *, think_tokens: int = 512,
                 depth: int = 100, max_words: int = 200, batch_size: int = 8, max_new_tokens: int | None = None,
                 temperature: float = 0.0, progress: bool | None = None):
        if think_tokens < 0 or depth < 1:
            raise ConfigError(f"think_tokens must be >= 0 and depth >= 1, got {think_tokens}, {depth}")
        self.think_tokens, self.depth = think_tokens, depth
        self._setup(backend, prompt, max_words, batch_size, max_new_tokens, temperature, progress)
        if self.template.parser != "think_score":
            raise ConfigError(f"ERankThink needs a prompt with parser: think_score; {self.template.name!r} has {self.template.parser!r}")


    def rerank_many(self, batch: Sequence[Candidates]) -> list[Candidates]:
        batch = list(batch)
        cap = self.token_cap(self.think_tokens + 12)
        jobs = [(q, i) for q, c in enumerate(batch) for i in range(min(self.depth, len(c)))]

        def item(c: Candidates, i: int) -> Any:
            return lambda _j, text: {"index": 1, "label": "A", "text": text, "docid": c.docids[i], "score": f"{c.scores[i]:.2f}"}

        prompts = [self.render(batch[q].query, [batch[q].texts[i]], item(batch[q], i), cap) for q, i in jobs]
        gens = self.generate(prompts, cap)
        logs = [ParseLog() for _ in batch]
        scores = [[float("-inf")] * len(c) for c in batch]
        for (q, i), g in zip(jobs, gens):
            scores[q][i] = logs[q].add(self.parse(g, 1)).value
        out = []
        for c, s, log in zip(batch, scores, logs):
            tail = len(c) - min(self.depth, len(c))
            floor = min(s[: len(c) - tail], default=0.0) - 1.0
            ranked = [v if i < len(c) - tail else floor - i for i, v in enumerate(s)]
            out.append(c.with_scores(ranked, parse=log.as_dict(), reasoning=list(log.reasoning)))
        return out
