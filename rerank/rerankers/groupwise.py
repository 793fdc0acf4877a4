"""Groupwise reranking (GroupRank, Sun et al., 2025): the model scores each document of a group, and
anchors shown in every group make the groups' scores comparable.

>>> from rerank.backends.fake import FakeBackend
>>> fake = FakeBackend(generate=lambda p: " 5\\n[2]: 9" if "fish" in p else " 3\\n[2]: 4")
>>> gw = Groupwise(fake, group_size=2, anchors=1)
>>> res = gw.rerank("q", ["anchor", "cats", "fish"])
>>> res.docids, [round(r.score, 2) for r in res]
(['2', '1', '0'], [8.0, 5.0, 4.0])
"""

from __future__ import annotations

from rerank.rerankers._llm import LLMReranker, Settings
from rerank.rerankers._strategies import Groups
from rerank.rerankers._tasks import Scores


class Groupwise(LLMReranker):
    """GroupRank: :class:`~rerank.rerankers._tasks.Scores` under
    :class:`~rerank.rerankers._strategies.Groups` (``group_size``, ``anchors``, ``calibrate``)."""

    task = Scores()
    strategy = Groups(group_size=5, anchors=1, calibrate="anchor")
    defaults = Settings(prompt="groupwise/scores", depth=100)
