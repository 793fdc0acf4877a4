"""Pairwise relevance scorers: anything that scores (query, document) pairs one by one.

A *scorer* is what ANNCUR (``rerank/retrievers/cur.py``) factorizes and what it spends its budget
on. Two shapes are accepted and turned into one batched function by :func:`batched_scorer`:

* an object with ``score_pairs(queries, docs) -> array`` -- every
  :class:`~rerank.rerankers.base.PointwiseReranker` (cross-encoder, LLM yes/no) and :class:`MaxSim`;
* a plain callable ``scorer(query, doc) -> float``, called once per pair.

A name works too: ``"maxsim"`` (the offline MiniLM's token embeddings) or any pointwise reranker
of the registry (``"cross-encoder"``, ``"yes-no"``).

:class:`MaxSim` is late interaction (ColBERT's MaxSim): the relevance of a document is the sum over
query tokens of the best cosine similarity with any document token. Unlike a bi-encoder score it is
not an inner product of two fixed vectors, so a CUR factorization of its score matrix is an
approximation -- a real, cheap stand-in for a cross-encoder.

>>> def overlap(q, d): return float(len(set(q.split()) & set(d.split())))
>>> count = CountingScorer(overlap)
>>> count(["a b", "a"], ["a b c", "c"]).tolist(), count.calls
([2.0, 0.0], 2)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rerank.encoders import DEFAULT_ENCODER, load_sentence_transformer
from rerank.errors import ConfigError

BatchedScorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def batched_scorer(scorer: Any) -> BatchedScorer:
    """``scorer`` (name, object with ``score_pairs``, or pairwise callable) as ``f(queries, docs) -> array``."""
    if isinstance(scorer, str):
        scorer = resolve_scorer(scorer)
    if isinstance(scorer, CountingScorer):
        return scorer
    if hasattr(scorer, "predict") and hasattr(scorer, "score_pairs"):  # a PointwiseReranker: batched, length-sorted
        return lambda qs, ds: np.asarray(scorer.predict(list(zip(qs, ds))), dtype=np.float64)
    if hasattr(scorer, "score_pairs"):
        return lambda qs, ds: np.asarray(scorer.score_pairs(list(qs), list(ds)), dtype=np.float64)
    if callable(scorer):
        return lambda qs, ds: np.array([float(scorer(q, d)) for q, d in zip(qs, ds)], dtype=np.float64)
    raise ConfigError(f"a scorer must be a name, an object with score_pairs(queries, docs) or a callable (query, doc) -> float; "
                      f"got {type(scorer).__name__}")


def resolve_scorer(name: str) -> Any:
    """``"maxsim"`` or a pointwise reranker's registry name, instantiated with its defaults."""
    if name == "maxsim":
        return MaxSim()
    from rerank import registry

    scorer = registry.get("reranker", name)
    if not hasattr(scorer, "score_pairs"):
        raise ConfigError(f"reranker {name!r} is not pointwise (no score_pairs); a scorer must score pairs one by one")
    return scorer


class CountingScorer:
    """A batched scorer that counts the pairs it has scored (``calls``)."""

    def __init__(self, scorer: Any):
        self.scorer, self.calls = batched_scorer(scorer), 0

    def __call__(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries for {len(docs)} documents")
        self.calls += len(queries)
        return self.scorer(queries, docs) if len(queries) else np.zeros(0)


class MaxSim:
    """Late-interaction relevance over a sentence-transformers model's token embeddings.

    Args:
        model: sentence-transformers hub id or folder; default: the offline all-MiniLM-L6-v2
            (texts are cut at its 256 tokens).
        batch_size: texts per encoder batch.
        device: torch device; default: sentence-transformers' choice.

    Token embeddings are L2-normalized and memoized per text, so scoring many pairs that share
    documents costs one encoding per distinct text plus one small matrix product per pair.
    """

    def __init__(self, model: str = DEFAULT_ENCODER, batch_size: int = 32, device: str | None = None):
        self.model, self.batch_size, self.device = model, batch_size, device
        self._tokens: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"MaxSim({self.model!r})" if self.model != DEFAULT_ENCODER else "MaxSim()"

    def __call__(self, query: str, doc: str) -> float:
        return float(self.score_pairs([query], [doc])[0])

    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        self._encode([*queries, *docs])
        return np.array([float((self._tokens[q] @ self._tokens[d].T).max(axis=1).sum()) for q, d in zip(queries, docs)])

    def _encode(self, texts: Sequence[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self._tokens]
        if not todo:
            return
        st = load_sentence_transformer(self.model, self.device)
        out = st.encode(todo, batch_size=self.batch_size, output_value="token_embeddings", show_progress_bar=False)
        for text, emb in zip(todo, out):
            emb = np.asarray(emb.float().cpu().numpy() if hasattr(emb, "cpu") else emb, dtype=np.float32)
            self._tokens[text] = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
