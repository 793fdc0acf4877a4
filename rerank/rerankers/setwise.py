"""Setwise reranking (Zhuang et al., SIGIR 2024): the model picks the most relevant document of a
small set (``scoring="generate"`` parses the label it writes, ``"likelihood"`` takes the likeliest
label), and a heapsort or bubblesort over those picks finds the top ``k``.

>>> from rerank.backends.fake import FakeBackend
>>> pick_longest = FakeBackend(generate=lambda p: "B" if "[B] cats cats" in p else "A")
>>> Setwise(pick_longest, k=1, set_size=2).rerank("cats", ["cats", "cats cats"]).docids
['1', '0']
"""

from __future__ import annotations

from rerank.rerankers._llm import LLMReranker, Settings
from rerank.rerankers._strategies import SetSort
from rerank.rerankers._tasks import Pick


class Setwise(LLMReranker):
    """Setwise top-``k``: :class:`~rerank.rerankers._tasks.Pick` (``scoring``) under
    :class:`~rerank.rerankers._strategies.SetSort` (``method``, ``set_size``, ``k``)."""

    task = Pick()
    strategy = SetSort(method="heapsort", set_size=4, k=10)
    defaults = Settings(prompt="setwise/pick", depth=100)
    aliases = {"scoring": "read"}
