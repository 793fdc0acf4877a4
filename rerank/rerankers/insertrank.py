"""InsertRank: listwise reranking with each candidate's first-stage (BM25) score in the prompt.

Seetharaman et al. (2025), "InsertRank: LLMs can reason over BM25 scores to Improve Listwise
Reranking": the prompt lists every passage with its BM25 score and the model ranks them as in
RankGPT. The paper also studies rescaling the scores; ``normalize`` picks how they are shown:

* ``"raw"`` -- the scores as they are;
* ``"minmax"`` -- min-max scaled over the query's reranked candidates to ``score_range``
  (e.g. ``(0, 1)``, ``(0, 10)``, ``(0, 100)``);
* ``"rank"`` -- spaced by first-stage rank only: the top candidate gets ``score_range[1]``, the
  last of the ``depth`` gets ``score_range[0]``.

Scores are rounded to ``decimals`` places.

>>> normalize_scores([10.0, 5.0, 0.0], "minmax", (0, 100))
array([100.,  50.,   0.])
>>> normalize_scores([10.0, 9.0, 1.0], "rank", (0, 1))
array([1. , 0.5, 0. ])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np

from rerank.errors import ConfigError, one_of
from rerank.params import is_finite_number
from rerank.prompts import PromptTemplate
from rerank.rerankers._parsing import Parser
from rerank.rerankers._tasks import Rank
from rerank.rerankers.listwise import Listwise

Normalization = Literal["raw", "minmax", "rank"]
NORMALIZATIONS = get_args(Normalization)


def normalize_scores(scores: Sequence[float] | np.ndarray, method: Normalization, score_range: tuple[float, float]) -> np.ndarray:
    """Scores as shown to the model (see the module docstring)."""
    one_of("normalize", method, NORMALIZATIONS)
    scores = np.asarray(scores, dtype=np.float64)
    if method == "raw" or len(scores) == 0:
        return scores
    if method == "minmax":
        spread = scores.max() - scores.min()
        unit = (scores - scores.min()) / spread if spread > 0 else np.ones_like(scores)
    else:
        unit = 1 - np.argsort(np.argsort(-scores, kind="stable"), kind="stable") / max(len(scores) - 1, 1)
    return score_range[0] + unit * (score_range[1] - score_range[0])


@dataclass(frozen=True)
class RankWithScores(Rank):
    """:class:`~rerank.rerankers._tasks.Rank` whose items show the first-stage score, normalized."""

    normalize: Normalization = "raw"
    score_range: tuple[float, float] = (0.0, 100.0)
    decimals: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "score_range", tuple(self.score_range))  # a list would leave the task unhashable
        if not (all(map(is_finite_number, self.score_range)) and self.score_range[0] < self.score_range[1]):
            raise ConfigError(f"score_range must be finite (low, high) with low < high, got {self.score_range!r}")

    def check(self, template: PromptTemplate) -> Parser:
        if "{score}" not in template.item:
            raise ConfigError(f"prompt {template.name!r} must show {{score}} in its item for a RankWithScores task")
        return super().check(template)

    def show_scores(self, scores: np.ndarray) -> list[str]:
        return [f"{s:.{self.decimals}f}" for s in normalize_scores(scores, self.normalize, self.score_range)]


class InsertRank(Listwise):
    """:class:`Listwise` reranking (every argument, the windows, parsing and repair reports) that also
    shows each candidate's first-stage score (``normalize``, ``score_range``, ``decimals``)."""

    task = RankWithScores()
    defaults = replace(Listwise.defaults, prompt="insertrank/bm25")
