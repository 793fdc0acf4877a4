"""Reasoning rerankers: ReasonRank (Liu et al., 2025), Rank-R1 (Zhuang et al., 2025) and an ERank-style
pointwise one reason within ``think_tokens`` before each answer (:class:`~rerank.rerankers._tasks.Think`;
reasoning kept in ``info["reasoning"]``). Any family reasons when given ``think_tokens > 0``.

>>> from rerank.backends.fake import FakeBackend
>>> fake = FakeBackend(generate=lambda p: "doc 2 is about cats</think>" if p.endswith("<think>\\n") else "2] > [1]")
>>> res = ReasonRank(fake, window=2, step=1).rerank("cats", ["dogs", "cats"])
>>> res.docids, res.info["reasoning"]
(['1', '0'], ['doc 2 is about cats'])
"""

from __future__ import annotations

from dataclasses import replace

from rerank.rerankers._llm import LLMReranker, Settings
from rerank.rerankers._strategies import Pointwise
from rerank.rerankers._tasks import Pick, Rank, Score, Think
from rerank.rerankers.listwise import Listwise
from rerank.rerankers.setwise import Setwise


class ReasonRank(Listwise):
    """Listwise reasoning reranker: ``Think(Rank())`` over a sliding window."""

    task = Think(Rank())
    defaults = replace(Listwise.defaults, prompt="reasoning/reasonrank", think_tokens=1024)


class RankR1(Setwise):
    """Setwise reasoning reranker: ``Think(Pick())`` under setwise heapsort."""

    task = Think(Pick())
    defaults = replace(Setwise.defaults, prompt="reasoning/rank_r1", think_tokens=512)


class ERankThink(LLMReranker):
    """Pointwise reasoning reranker: ``Think(Score())``, a generated 0-10 score per document;
    ties keep the first-stage order."""

    task = Think(Score(read="generate", combine="expected"))
    strategy = Pointwise()
    defaults = Settings(prompt="reasoning/erank", depth=100, max_words=200, think_tokens=512)
