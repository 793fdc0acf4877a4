"""Groupwise reranking (GroupRank, Sun et al., 2025): the query and a group of documents go in
together; the model compares them and returns one relevance score per document (JSON or
``[i]: score`` lines, read by the ``scores`` parser).

Groups are independent, so the groups of all queries go to the backend in batches. Scores from
different groups are made comparable with *anchors*: the first-stage top ``anchors`` documents are
shown in every group of their query, and ``calibrate="anchor"`` shifts each group's scores so its
anchors score the same in every group (an anchor's own score is its mean over the groups).
``calibrate="none"`` uses the raw scores. Documents below ``depth`` keep their order beneath.

>>> from rerank.backends.fake import FakeBackend
>>> fake = FakeBackend(generate=lambda p: '{"1": 5, "2": 9}' if "fish" in p else '{"1": 3, "2": 4}')
>>> gw = Groupwise(fake, group_size=2, anchors=1)
>>> res = gw.rerank("q", ["anchor", "cats", "fish"])
>>> res.docids, [round(r.score, 2) for r in res]
(['2', '1', '0'], [8.0, 5.0, 4.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rerank.errors import ConfigError
from rerank.rerankers._llm import BackendSpec, LLMReranker, PromptSpec
from rerank.rerankers._parsing import ParseLog
from rerank.rerankers._windows import groups
from rerank.types import Candidates

CALIBRATIONS = ("anchor", "none")
TOKENS_PER_SCORE = 6
"""Output tokens budgeted per document (``[12]: 7`` and a newline)."""


class Groupwise(LLMReranker):
    """GroupRank-style reranker: a score per document from groups of ``group_size`` documents.

    Args:
        group_size: documents per prompt, anchors included; anchors: first-stage top documents
            repeated in every group (0 for none); calibrate: ``"anchor"`` or ``"none"``;
        depth: how many first-stage candidates are scored. Other arguments as for every LLM reranker.
    """

    default_prompt = "groupwise/scores"
    paradigms = ("groupwise",)

    def __init__(self, backend: BackendSpec = "hf:smollm2", prompt: PromptSpec | None = None, *, group_size: int = 5,
                 anchors: int = 1, calibrate: str = "anchor", depth: int = 100, max_words: int = 100, batch_size: int = 8,
                 max_new_tokens: int | None = None, temperature: float = 0.0, progress: bool | None = None):
        if calibrate not in CALIBRATIONS:
            raise ConfigError(f"unknown calibration {calibrate!r}; choose one of {CALIBRATIONS}")
        if not 0 <= anchors < group_size:
            raise ConfigError(f"anchors must be >= 0 and smaller than group_size ({group_size}), got {anchors}")
        if calibrate == "anchor" and anchors == 0:
            raise ConfigError("calibrate='anchor' needs anchors >= 1; pass anchors=1 or calibrate='none'")
        if depth < 1:
            raise ConfigError(f"depth must be >= 1, got {depth}")
        self.group_size, self.anchors, self.calibrate, self.depth = group_size, anchors, calibrate, depth
        self._setup(backend, prompt, max_words, batch_size, max_new_tokens, temperature, progress)


    def plan_groups(self, n: int) -> list[list[int]]:
        """Positions shown in each group of a list of ``n``: the anchors, then the next documents."""
        a = min(self.anchors, n)
        rest = groups(n - a, self.group_size - a)
        return [list(range(a)) + [a + p for p in g] for g in rest] or [list(range(a))]

    def rerank_many(self, batch: Sequence[Candidates]) -> list[Candidates]:
        batch = list(batch)
        jobs = [(q, g) for q, c in enumerate(batch) for g in self.plan_groups(min(self.depth, len(c))) if g]
        cap = self.token_cap(TOKENS_PER_SCORE * self.group_size + 8)
        prompts = [self.group_prompt(batch[q], g, cap) for q, g in jobs]
        gens = self.generate(prompts, cap)
        logs = [ParseLog() for _ in batch]
        per_query: list[list[tuple[list[int], np.ndarray]]] = [[] for _ in batch]
        for (q, g), gen in zip(jobs, gens):
            per_query[q].append((g, np.asarray(logs[q].add(self.parse(gen, len(g))).value, dtype=np.float64)))
        return [self._combine(c, parts, log) for c, parts, log in zip(batch, per_query, logs)]

    def group_prompt(self, cands: Candidates, shown: list[int], cap: int) -> list[dict[str, str]]:
        def item(j: int, text: str) -> dict[str, Any]:
            pos = shown[j]
            return {"index": j + 1, "label": str(j + 1), "text": text, "docid": cands.docids[pos], "score": f"{cands.scores[pos]:.2f}"}

        return self.render(cands.query, [cands.texts[p] for p in shown], item, cap)

    def _combine(self, cands: Candidates, parts: list[tuple[list[int], np.ndarray]], log: ParseLog) -> Candidates:
        top = min(self.depth, len(cands))
        a = min(self.anchors, top)
        sums, counts = np.zeros(top), np.zeros(top)
        anchor_mean = np.mean([s[:a].mean() for _, s in parts]) if a and self.calibrate == "anchor" else 0.0
        for shown, s in parts:
            shift = anchor_mean - s[:a].mean() if a and self.calibrate == "anchor" else 0.0
            np.add.at(sums, shown, s + shift)
            np.add.at(counts, shown, 1)
        scores = sums / np.maximum(counts, 1)
        floor = scores.min() - 1.0 if top else 0.0
        tail = floor - np.arange(1, len(cands) - top + 1)
        return cands.with_scores(np.concatenate([scores, tail]), parse=log.as_dict())
