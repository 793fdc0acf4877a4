"""Pairwise ranking prompting (PRP, Qin et al. 2024): the LLM says which of two passages is better,
by the two options' log-probabilities (``method="score"``) or a generated letter (``"generate"``);
pairs are asked in both orders and sorted as :class:`~rerank.rerankers._strategies.PairSort` says.

>>> from rerank.backends.fake import FakeBackend
>>> def judge(prompt):  # a stand-in for an LLM: the passage mentioning fleas wins
...     first = prompt.split("Passage A:")[1].split("Passage B:")[0]
...     return " A" if "flea" in first else " B"
>>> prp = PRP(FakeBackend(generate=judge), variant="allpair", method="generate")
>>> prp.rerank("flea life cycle", ["Bananas are yellow.", "Paris is big.", "A flea lives 3 months."]).docids
['2', '0', '1']
"""

from __future__ import annotations

from rerank.rerankers._llm import LLMReranker, Settings
from rerank.rerankers._strategies import PairSort
from rerank.rerankers._tasks import Prefer


class PRP(LLMReranker):
    """PRP: :class:`~rerank.rerankers._tasks.Prefer` (``method``) under
    :class:`~rerank.rerankers._strategies.PairSort` (``variant``, ``top_k``)."""

    task = Prefer(read="score")
    strategy = PairSort(variant="heapsort", top_k=10)
    defaults = Settings(prompt="pairwise/prp", batch_size=16)
    aliases = {"method": "read"}
