"""Listwise reranking: RankGPT (Sun et al., 2023) generates a permutation of each window; FIRST
(Reddy et al., 2024) ranks a window by each id's log-probability as the first answer token.
Repaired answers are counted in ``info["parse"]``:

    >>> from rerank.backends.fake import FakeBackend
    >>> lw = Listwise(FakeBackend(generate=lambda p: "2] > [1]"), window=3, step=2)
    >>> res = lw.rerank("cats", ["dogs", "cats", "fish"])
    >>> res.docids, res.info["parse"]["repaired"]
    (['1', '0', '2'], 1)
"""

from __future__ import annotations

from dataclasses import replace

from rerank.rerankers._llm import LLMReranker, Settings
from rerank.rerankers._strategies import SlidingWindow
from rerank.rerankers._tasks import Rank


class Listwise(LLMReranker):
    """RankGPT: :class:`~rerank.rerankers._tasks.Rank` over a
    :class:`~rerank.rerankers._strategies.SlidingWindow` (``window``, ``step``, ``passes``);
    every :class:`~rerank.rerankers._llm.Settings` field is an argument too."""

    task = Rank()
    strategy = SlidingWindow(window=20, step=10)
    defaults = Settings(prompt="listwise/rankgpt", depth=100)


class First(Listwise):
    """FIRST: one forward pass per window; the ids are ranked by the log-probability of each id as
    the first answer token (the prompt's ``meta.option``, default ``"{index}]"`` after ``"["``)."""

    task = Rank(read="score")
    defaults = replace(Listwise.defaults, prompt="listwise/first")
