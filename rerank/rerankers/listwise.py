"""Listwise reranking: RankGPT's sliding window (generate a permutation) and FIRST (rank by the
logits of the first generated id).

A window of ``window`` documents slides from the bottom of the top ``depth`` to the top, ``step``
positions at a time, so strong documents bubble up; ``passes`` repeats the sweep. Documents below
``depth`` keep their order under the reranked ones. Windows of different queries at the same step
go to the backend in one batch (:meth:`Listwise.rerank_many`).

Answers are parsed by the template's parser (``permutation`` by default), which repairs missing,
duplicate and out-of-range ids; how often that happened is in ``info["parse"]`` of each query,
never hidden::

    >>> from rerank.backends.fake import FakeBackend
    >>> lw = Listwise(FakeBackend(generate=lambda p: "2] > [1]"), window=3, step=2)
    >>> res = lw.rerank("cats", ["dogs", "cats", "fish"])
    >>> res.docids, res.info["parse"]["repaired"]
    (['1', '0', '2'], 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rerank.errors import ConfigError
from rerank.rerankers._llm import BackendSpec, LLMReranker, PromptSpec
from rerank.rerankers._parsing import Parsed, ParseLog
from rerank.rerankers._windows import lockstep, sliding_plan
from rerank.types import Candidates

TOKENS_PER_ID = 6
"""Output tokens budgeted per id of a permutation: ``[12] > `` is six tokens where digits are split
one per token (Qwen, SmolLM, ...); with four, a full 20-id answer was cut short and counted invalid."""


class Listwise(LLMReranker):
    """RankGPT-style listwise reranker over a sliding window.

    Args:
        backend: a :class:`~rerank.backends.base.Backend` or a spec string (``"hf:smollm2"``).
        prompt: a prompt name (``"listwise/rankgpt"``), a YAML path or a PromptTemplate.
        window: documents per prompt; step: how far the window moves up; depth: how many of the
            top candidates are reranked; passes: how many bottom-to-top sweeps.
        max_words: words kept per document (fewer if the prompt would not fit the context).
        batch_size: prompts per backend call; max_new_tokens: output cap (default
            ``6 * window + 4``); temperature: 0 is greedy.
        constrained: decode inside the template's ``constraint`` (a full permutation) where the
            backend can (:mod:`rerank.constraints`); False lets the model write anything.
    """

    default_prompt = "listwise/rankgpt"
    paradigms = ("listwise",)

    def __init__(self, backend: BackendSpec = "hf:smollm2", prompt: PromptSpec | None = None, *, window: int = 20,
                 step: int = 10, depth: int = 100, passes: int = 1, max_words: int = 100, batch_size: int = 8,
                 max_new_tokens: int | None = None, temperature: float = 0.0, progress: bool | None = None,
                 constrained: bool = True):
        if step >= window:
            raise ConfigError(f"{type(self).__name__}: step ({step}) must be smaller than window ({window}) so windows overlap")
        if depth < 1 or passes < 1:
            raise ConfigError(f"{type(self).__name__}: depth and passes must be >= 1, got depth={depth}, passes={passes}")
        self.window, self.step, self.depth, self.passes = window, step, depth, passes
        self._setup(backend, prompt, max_words, batch_size, max_new_tokens, temperature, progress, constrained)

    def rerank_many(self, batch: Sequence[Candidates]) -> list[Candidates]:
        batch = list(batch)
        logs = [ParseLog() for _ in batch]
        shown_scores = [self.shown_scores(c) for c in batch]
        plans = [sliding_plan(min(self.depth, len(c)), self.window, self.step, self.passes) for c in batch]

        def answer(requests: list[tuple[int, list[int]]]) -> list[list[int]]:
            prompts = [self.window_prompt(batch[i], shown, shown_scores[i]) for i, shown in requests]
            parsed = self.rank_windows(prompts, [len(shown) for _, shown in requests])
            return [logs[i].add(p).value for (i, _), p in zip(requests, parsed)]

        orders = lockstep(plans, answer, self.progress, repr(self)[:40])
        return [finish(c, order, log, self.constrained_by) for c, order, log in zip(batch, orders, logs)]

    # -- hooks of the variants ----------------------------------------------------------------
    def shown_scores(self, cands: Candidates) -> list[str]:
        """The ``{score}`` shown for each candidate (first-stage score; InsertRank normalizes)."""
        return [f"{s:.2f}" for s in cands.scores]

    def answer_tokens(self, n: int) -> int:
        """Default output cap for a window of ``n`` ids."""
        return TOKENS_PER_ID * n + 4

    def window_prompt(self, cands: Candidates, shown: list[int], scores: list[str]) -> list[dict[str, str]]:
        def item(j: int, text: str) -> dict[str, Any]:
            pos = shown[j]
            return {"index": j + 1, "text": text, "docid": cands.docids[pos], "score": scores[pos], "label": str(j + 1)}

        return self.render(cands.query, [cands.texts[p] for p in shown], item, self.token_cap(self.answer_tokens(len(shown))))

    def rank_windows(self, prompts: list[list[dict[str, str]]], sizes: list[int]) -> list[Parsed]:
        """One parsed permutation per window prompt."""
        gens = self.generate(prompts, self.token_cap(self.answer_tokens(max(sizes))), sizes)
        return [self.parse(g, n) for g, n in zip(gens, sizes)]


class First(Listwise):
    """FIRST: one forward pass per window; the ids are ranked by the log-probability of each id as
    the first answer token (``backend.score`` over the options), so no permutation is generated.

    The prompt's ``meta.option`` formats each option (default ``"{index}]"`` after an answer prefix
    ``"["``, so ``1]`` and ``10]`` do not share a prefix). Default: one sweep with window 20, step 10.
    """

    default_prompt = "listwise/first"

    def rank_windows(self, prompts: list[list[dict[str, str]]], sizes: list[int]) -> list[Parsed]:
        option = str(self.template.meta.get("option", "{index}]"))
        out: list[Parsed] = [None] * len(prompts)  # type: ignore[list-item]
        for n in sorted(set(sizes)):  # one score call per window size (the options differ)
            idx = [k for k, s in enumerate(sizes) if s == n]
            logprobs = self.score_options([prompts[k] for k in idx], [option.format(index=j + 1) for j in range(n)])
            for k, row in zip(idx, logprobs):
                finite = np.isfinite(row)
                row = np.where(finite, row, -np.inf)
                out[k] = Parsed(np.argsort(-row, kind="stable").tolist(), problems=() if finite.all() else ("not_finite",))
        return out


def finish(cands: Candidates, order: list[int], log: ParseLog, constrained: str = "no") -> Candidates:
    """Candidates in ``order`` (the tail below it unchanged) with the parse report in ``info``."""
    full = order + list(range(len(order), len(cands)))
    info: dict[str, Any] = {"parse": log.as_dict(), "constrained": constrained}
    if log.reasoning:
        info["reasoning"] = list(log.reasoning)
    return cands.reordered(full, **info)
