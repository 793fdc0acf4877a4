"""InsertRank: listwise reranking with each candidate's first-stage (BM25) score in the prompt.

Seetharaman et al. (2025), "InsertRank: LLMs can reason over BM25 scores to Improve Listwise
Reranking": the prompt lists every passage with its BM25 score and the model ranks them as in
RankGPT. The paper also studies rescaling the scores; ``normalize`` picks how they are shown:

* ``"raw"`` -- the scores as they are;
* ``"minmax"`` -- min-max scaled over the query's reranked candidates to ``score_range``
  (e.g. ``(0, 1)``, ``(0, 10)``, ``(0, 100)``);
* ``"rank"`` -- spaced by first-stage rank only: the top candidate gets ``score_range[1]``, the
  last of the ``depth`` gets ``score_range[0]``.

Scores are rounded to ``decimals`` places. Everything else (windows, parsing, repair reports) is
:class:`~rerank.rerankers.listwise.Listwise`.

>>> normalize_scores([10.0, 5.0, 0.0], "minmax", (0, 100))
array([100.,  50.,   0.])
>>> normalize_scores([10.0, 9.0, 1.0], "rank", (0, 1))
array([1. , 0.5, 0. ])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rerank.errors import ConfigError
from rerank.rerankers._llm import BackendSpec, PromptSpec
from rerank.rerankers.listwise import Listwise
from rerank.types import Candidates

NORMALIZATIONS = ("raw", "minmax", "rank")


def normalize_scores(scores: Sequence[float] | np.ndarray, method: str, score_range: tuple[float, float]) -> np.ndarray:
    """Scores as shown to the model (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    lo, hi = score_range
    if method == "raw" or len(scores) == 0:
        return scores
    if method == "minmax":
        spread = scores.max() - scores.min()
        unit = (scores - scores.min()) / spread if spread > 0 else np.ones_like(scores)
        return lo + unit * (hi - lo)
    if method == "rank":
        ranks = np.argsort(np.argsort(-scores, kind="stable"), kind="stable")
        unit = 1 - ranks / max(len(scores) - 1, 1)
        return lo + unit * (hi - lo)
    raise ConfigError(f"unknown score normalization {method!r}; choose one of {NORMALIZATIONS}")


class InsertRank(Listwise):
    """Listwise reranking that shows each candidate's first-stage score (``{score}`` in the item).

    Args (beyond :class:`Listwise`): normalize: ``"raw"``, ``"minmax"`` or ``"rank"``;
    score_range: the target range of ``minmax`` and ``rank``; decimals: rounding of shown scores.
    """

    default_prompt = "insertrank/bm25"
    paradigms = ("insertrank", "listwise")

    def __init__(self, backend: BackendSpec = "hf:smollm2", prompt: PromptSpec | None = None, *, normalize: str = "raw",
                 score_range: tuple[float, float] = (0.0, 100.0), decimals: int = 2, window: int = 20, step: int = 10,
                 depth: int = 100, passes: int = 1, max_words: int = 100, batch_size: int = 8,
                 max_new_tokens: int | None = None, temperature: float = 0.0, progress: bool | None = None,
                 constrained: bool = True):
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"unknown score normalization {normalize!r}; choose one of {NORMALIZATIONS}")
        if len(score_range) != 2 or score_range[0] >= score_range[1]:
            raise ConfigError(f"score_range must be (low, high) with low < high, got {score_range!r}")
        if decimals < 0:
            raise ConfigError(f"decimals must be >= 0, got {decimals}")
        self.normalize, self.score_range, self.decimals = normalize, tuple(score_range), decimals
        super().__init__(backend, prompt, window=window, step=step, depth=depth, passes=passes, max_words=max_words,
                         batch_size=batch_size, max_new_tokens=max_new_tokens, temperature=temperature, progress=progress,
                         constrained=constrained)
        if "{score}" not in self.template.item:
            raise ConfigError(f"InsertRank needs a prompt whose item shows {{score}}; {self.template.name!r} does not")

    def shown_scores(self, cands: Candidates) -> list[str]:
        top = min(self.depth, len(cands))
        shown = normalize_scores(cands.scores[:top], self.normalize, self.score_range)
        return [f"{s:.{self.decimals}f}" for s in shown] + [""] * (len(cands) - top)
