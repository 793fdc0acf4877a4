"""Pointwise LLM relevance, one prompt per document: Yes/No (``pointwise/yes_no``) or a 0-10 rating
(``pointwise/fine_grained``; ERank, Cai et al. 2025), read from the options' log-probabilities or,
with ``method="generate"``, parsed from the answer.

>>> from rerank.backends.fake import FakeBackend
>>> judge = YesNo(FakeBackend(score=lambda p, opts: [0.0, -3.0] if "lives" in p else [-3.0, 0.0]))
>>> judge.rerank("flea life cycle", ["Bananas are yellow.", "A flea lives 100 days."]).docids
['1', '0']
"""

from __future__ import annotations

from rerank.rerankers._llm import LLMReranker, Settings
from rerank.rerankers._strategies import Pointwise
from rerank.rerankers._tasks import Score


class YesNo(LLMReranker):
    """Relevance = log P(first option) normalized over the two options ("Yes" vs "No")."""

    task = Score(read="score", combine="first")
    strategy = Pointwise()
    defaults = Settings(prompt="pointwise/yes_no", batch_size=16, max_words=300)
    aliases = {"method": "read"}


class ERank(YesNo):
    """Relevance = expected rating: softmax over the numeric options' log-probs, times their values."""

    task = Score(read="score", combine="expected")
    defaults = Settings(prompt="pointwise/fine_grained", batch_size=16, max_words=300)
