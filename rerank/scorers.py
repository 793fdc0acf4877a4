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

from rerank.encoders import DEFAULT_ENCODER, Encoder
from rerank.errors import ConfigError, DataError, require
from rerank.params import checked
from rerank.types import NotNumbers, number_array

BatchedScorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def batched_scorer(scorer: Any) -> BatchedScorer:
    """``scorer`` (name, object with ``score_pairs``, or pairwise callable) as ``f(queries, docs) -> array``."""
    if isinstance(scorer, str):
        scorer = resolve_scorer(scorer)
    if isinstance(scorer, CountingScorer):
        return scorer
    if hasattr(scorer, "predict") and hasattr(scorer, "score_pairs"):  # a PointwiseReranker: batched, length-sorted
        raw = lambda qs, ds: scorer.predict(list(zip(qs, ds)))
    elif hasattr(scorer, "score_pairs"):
        raw = lambda qs, ds: scorer.score_pairs(list(qs), list(ds))
    elif callable(scorer):
        raw = lambda qs, ds: [scorer(q, d) for q, d in zip(qs, ds)]
    else:
        raise ConfigError(f"a scorer must be a name, an object with score_pairs(queries, docs) or a callable (query, doc) -> float; "
                          f"got {type(scorer).__name__}")

    def numbers(queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        """The scores as floats, one per pair (a column of them too, as ``CrossEncoder.predict`` may give);
        DataError naming the scorer otherwise."""
        scores = raw(queries, docs)
        try:
            try:
                out = number_array(scores)
            except NotNumbers:
                raise
            except (TypeError, ValueError, RuntimeError):  # e.g. bfloat16 or GPU tensors: one float each
                out = np.asarray([float(s) for s in scores], dtype=np.float64)
        except (TypeError, ValueError, RuntimeError):
            raise DataError(f"the scorer {scorer!r:.60} gave scores that are not numbers: {scores!r:.80}") from None
        if out.size != len(queries) or out.ndim > 2:
            raise DataError(f"the scorer {scorer!r:.60} gave scores of shape {out.shape} for {len(queries)} pairs")
        return out.reshape(len(queries))

    return numbers


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


@checked()  # arguments checked as in a pipeline expression
class MaxSim:
    """Late-interaction relevance over a sentence-transformers model's token embeddings.

    Args:
        model: sentence-transformers hub id or folder; default: the offline all-MiniLM-L6-v2
            (texts are cut at its 256 tokens).
        batch_size: texts per encoder batch.
        pair_batch: documents per matrix product when scoring.
        runtime: encoder runtime (:data:`rerank.encoders.RUNTIMES`); float32 by default (bf16's
            loss on token-level scores is not measured yet).
        device: torch device; default: sentence-transformers' choice.

    Token embeddings are L2-normalized and memoized per text (float32, about 0.4 MB for a
    256-token text), so scoring many pairs that share documents costs one encoding per distinct
    text. The pairs of one query are scored ``pair_batch`` documents at a time with one matrix
    product over their zero-padded token embeddings (padding masked out of the max); the padded
    documents of the last call are kept, so many queries against one document list pad it once.
    """

    def __init__(self, model: str = DEFAULT_ENCODER, batch_size: int = 32, pair_batch: int = 256, runtime: str = "torch",
                 device: str | None = None):
        if batch_size < 1 or pair_batch < 1:
            raise ConfigError("batch_size and pair_batch must be positive")
        self.model, self.batch_size, self.pair_batch, self.runtime, self.device = model, batch_size, pair_batch, runtime, device
        self.encoder = Encoder(model, runtime=runtime, device=device, batch_size=batch_size)
        self._tokens: dict[str, Any] = {}  # text -> torch tensor, tokens x dim
        self._last_padded: tuple[tuple[str, ...], Any, Any] | None = None

    def __repr__(self) -> str:
        args = [repr(self.model)] if self.model != DEFAULT_ENCODER else []
        args += [f"runtime={self.runtime!r}"] if self.runtime != "torch" else []
        return f"MaxSim({', '.join(args)})"

    def __call__(self, query: str, doc: str) -> float:
        return float(self.score_pairs([query], [doc])[0])

    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        if len(queries) != len(docs):
            raise ConfigError(f"{len(queries)} queries for {len(docs)} documents; score_pairs takes aligned lists")
        torch = require("torch", "dense")
        self._encode([*queries, *docs])
        groups: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(q, []).append(i)
        out = np.zeros(len(docs), dtype=np.float64)
        for query, rows in groups.items():
            padded, mask = self._padded(tuple(docs[i] for i in rows))
            q = self._tokens[query].T
            for start in range(0, len(rows), self.pair_batch):
                part = slice(start, start + self.pair_batch)
                sims = torch.matmul(padded[part], q)  # documents x document tokens x query tokens
                sims.masked_fill_(~mask[part, :, None], -torch.inf)
                out[rows[part]] = sims.amax(dim=1).sum(dim=1).double().numpy()
        return out

    def _padded(self, texts: tuple[str, ...]) -> tuple[Any, Any]:
        """Token embeddings of ``texts`` zero-padded to the longest, and the mask of real tokens.

        The last result is kept: scoring many queries against the same documents pads them once.
        """
        if self._last_padded is None or self._last_padded[0] != texts:
            torch = require("torch", "dense")
            embs = [self._tokens[t] for t in texts]
            lengths = torch.tensor([len(e) for e in embs])
            padded = torch.zeros(len(embs), int(lengths.max()), embs[0].shape[1])
            for row, emb in zip(padded, embs):  # faster than pad_sequence on a busy CPU
                row[: len(emb)] = emb
            self._last_padded = (texts, padded, torch.arange(padded.shape[1])[None, :] < lengths[:, None])
        return self._last_padded[1], self._last_padded[2]

    def _encode(self, texts: Sequence[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self._tokens]
        if not todo:
            return
        torch = require("torch", "dense")
        for text, emb in zip(todo, self.encoder.token_embeddings(todo, kind="doc")):
            self._tokens[text] = torch.nn.functional.normalize(torch.from_numpy(emb), dim=1)
