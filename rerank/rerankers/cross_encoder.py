"""Cross-encoder reranking with sentence-transformers' ``CrossEncoder`` (monoBERT / MiniLM style).

Documents longer than the model's window are never cut silently. ``truncation`` says what happens:

* ``"maxp"`` (default) -- split the document into overlapping passages that fit next to the query,
  score each and keep the maximum (MaxP, Dai & Callan 2019);
* ``"truncate"`` -- keep the head of the document; a warning is logged and the number of truncated
  documents is reported in the results' ``info["truncated"]``.

Either way ``info["long_documents"]`` counts the documents that did not fit.

>>> ce = CrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L-6-v2")   # doctest: +SKIP
>>> ce.rerank("what is a flea", ["Fleas are insects.", "Bananas are yellow."]).docids  # doctest: +SKIP
['0', '1']
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from typing import Any

import numpy as np

from rerank._locks import model_lock
from rerank.encoders import RUNTIMES, resolve_encoder, resolve_runtime, runtime_kwargs
from rerank.errors import ConfigError, one_of, require
from rerank.models import check_device, check_kind, check_positions, loading
from rerank.params import checked
from rerank.rerankers.base import PointwiseReranker
from rerank.types import Candidates

logger = logging.getLogger("rerank")
TRUNCATION_MODES = ("maxp", "truncate")


@checked(ranges={"max_length": (8, None), "stride": (1, None)})  # arguments checked as in a pipeline expression
class CrossEncoderReranker(PointwiseReranker):
    """Score each (query, document) pair jointly with a cross-encoder.

    Args:
        model: hub id or local folder of a sentence-transformers CrossEncoder.
        batch_size: pairs per forward pass (pairs of all queries are batched together, longest first).
        max_length: tokens per (query, passage) input; default: the model's own limit.
        truncation: ``"maxp"`` or ``"truncate"`` (see the module docstring).
        stride: in ``"maxp"`` mode, tokens between the starts of consecutive passages; default: half a
            passage (50% overlap). Where it is longer than a passage (next to a long query), passages
            start a passage apart instead, with a warning, so that no text goes unread.
        runtime: one of :data:`rerank.encoders.RUNTIMES`; float32 ``"torch"`` by default (no trained
            cross-encoder is at hand here to measure what bf16 costs in effectiveness).
        device: torch device (``"cpu"``, ``"cuda"``); default: sentence-transformers' choice.
        progress: show a progress bar (``None``: only in a terminal at INFO level).
    """

    def __init__(self, model: str = "cross-encoder/ms-marco-MiniLM-L-6-v2", batch_size: int = 32,
                 max_length: int | None = None, truncation: str = "maxp", stride: int | None = None,
                 runtime: str = "torch", device: str | None = None, progress: bool | None = None):
        one_of("truncation", truncation, TRUNCATION_MODES)
        one_of("runtime", runtime, RUNTIMES)
        self.runtime = runtime
        self.model, self.batch_size, self.max_length = model, batch_size, max_length
        self.truncation, self.stride, self.device, self.progress = truncation, stride, device, progress
        self._stride_warned = False

    @cached_property
    def encoder(self) -> Any:
        """The loaded ``sentence_transformers.CrossEncoder`` (loaded on first use)."""
        st = require("sentence_transformers", "cross-encoder")
        check_device(self.device)
        kwargs, source = runtime_kwargs(resolve_runtime(self.runtime, self.device)), resolve_encoder(self.model)
        with loading("cross-encoder model", self.model, source):
            ce = st.CrossEncoder(source, device=self.device, max_length=self.max_length, **kwargs)
        check_kind(self.model, "cross-encoder", "cross-encoder", source)  # after loading: a hub id's files are cached now
        if ce.num_labels != 1:
            raise ConfigError(f"{self.model} has {ce.num_labels} output labels; a reranker needs a model with one relevance score")
        positions = getattr(ce.config, "max_position_embeddings", None)
        if self.max_length and isinstance(positions, int):
            check_positions(self.max_length, positions, self.model)
        return ce

    @property
    def window(self) -> int:
        """Tokens of one model input, special tokens included."""
        return self.max_length or self.encoder.max_seq_length

    # -- scoring ----------------------------------------------------------------------------------
    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        if self.truncation == "truncate":
            return self._predict(list(zip(queries, texts)))
        owners, pairs = [], []
        for i, (q, t) in enumerate(zip(queries, texts)):
            for passage in self._passages(q, t):
                owners.append(i)
                pairs.append((q, passage))
        scores = self._predict(pairs)
        best = np.full(len(texts), -np.inf)
        np.maximum.at(best, np.asarray(owners, dtype=np.int64), scores)
        return best

    def _predict(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        with model_lock(self.encoder):
            out = self.encoder.predict(pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_tensor=True)
        return out.double().cpu().numpy().reshape(len(pairs))

    def _room(self, query: str) -> int:
        """Document tokens that fit next to ``query`` in one input."""
        tok = self.encoder.tokenizer
        with model_lock(self.encoder):
            used = len(tok(query, add_special_tokens=False)["input_ids"]) + tok.num_special_tokens_to_add(pair=True)
        room = self.window - used
        if room < 8:
            raise ConfigError(f"the query takes {used} of the {self.window} tokens of {self.model}; shorten it or raise max_length")
        return room

    def _passages(self, query: str, text: str) -> list[str]:
        """``text`` itself when it fits, else overlapping passages cut at token boundaries."""
        room = self._room(query)
        with model_lock(self.encoder):
            offsets = self.encoder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                                             verbose=False)["offset_mapping"]
        if len(offsets) <= room:
            return [text]
        if self.stride and self.stride > room and not self._stride_warned:  # a long query leaves less room
            self._stride_warned = True
            logger.warning("%s: stride=%d is longer than a passage next to a query of this length (%d tokens); its "
                           "passages start %d tokens apart, so that no text goes unread", self.model, self.stride, room, room)
        stride = min(self.stride or max(1, room // 2), room)
        starts = list(range(0, len(offsets) - room, stride)) + [len(offsets) - room]
        return [text[offsets[s][0] : offsets[s + room - 1][1]] for s in starts]

    # -- reporting --------------------------------------------------------------------------------
    def rerank_many(self, batch: Sequence[Candidates]) -> list[Candidates]:
        long_docs = [self._count_long(c) for c in batch]
        total = sum(long_docs)
        if total and self.truncation == "truncate":
            logger.warning("%s: %d of %d documents exceed %d tokens and were truncated; use truncation='maxp' to score them whole",
                           self.model, total, sum(map(len, batch)), self.window)
        out = super().rerank_many(batch)
        truncated = long_docs if self.truncation == "truncate" else [0] * len(batch)
        return [replace(c, info={**c.info, "long_documents": n, "truncated": t}) for c, n, t in zip(out, long_docs, truncated)]

    def _count_long(self, cands: Candidates) -> int:
        if not len(cands):
            return 0
        room = self._room(cands.query)
        with model_lock(self.encoder):
            lengths = self.encoder.tokenizer(list(cands.texts), add_special_tokens=False, verbose=False)["input_ids"]
        return sum(len(ids) > room for ids in lengths)
