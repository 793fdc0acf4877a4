"""Dense indexing on Ray: the corpus encoded by an actor pool (Ray Data ``map_batches``), one FAISS index.

Each encoding actor loads the model once and encodes the blocks Ray Data hands it; the driver collects
the embeddings in corpus order and builds the index of the :class:`~rerank.retrievers.dense.Dense`
configuration it was given (``index="flat"``, ``"hnsw"``, or ``"ivf"`` trained on a sample).

Memory per worker: one model plus one block of texts and vectors. The driver holds the whole
embedding matrix (``4 * dim`` bytes per document) and the index.

Embeddings equal a one-process encoding up to float rounding: batches hold other texts, hence other
padding, than in one process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from rerank.distributed.cluster import check_ray_amount, connect, fitting, import_ray, shutdown
from rerank.errors import ConfigError, DataError
from rerank.params import check_count, is_finite_number
from rerank.retrievers.base import as_docs
from rerank.retrievers.dense import Dense
from rerank.types import Doc


class EncodeBatch:
    """Ray Data callable class: one per actor, holding the model; encodes a batch of documents."""

    def __init__(self, dense: Dense):
        self.dense = dense

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"i": batch["i"], "embedding": self.dense.encoder.encode(list(batch["text"]), kind="doc")}


def encode_corpus(texts: Sequence[str], dense: Dense, actors: int = 2, *, batch_size: int = 256,
                  num_cpus: float = 1, num_gpus: float = 0, address: str | None = None) -> np.ndarray:
    """Document embeddings of ``texts`` (in order) with ``dense``'s encoder, on ``actors`` Ray Data actors."""
    for name, value in (("actors", actors), ("batch_size", batch_size)):
        check_count("encode_corpus", name, value, 1)
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if not (is_finite_number(value) and value >= 0):
            raise ConfigError(f"encode_corpus: {name} must be a finite number >= 0, got {value!r}")
        check_ray_amount(value, name, "encode_corpus")
    if not texts:
        raise DataError("the corpus is empty, nothing to encode")
    started = connect(address)
    try:
        fitting(actors, num_cpus, num_gpus, "encode_corpus")  # a local cluster without the GPUs asked: now, not never
        ray = import_ray()
        blocks = [pd.DataFrame({"i": np.arange(s, min(s + batch_size, len(texts))), "text": list(texts[s:s + batch_size])})
                  for s in range(0, len(texts), batch_size)]
        encoded = ray.data.from_pandas(blocks).map_batches(
            EncodeBatch, fn_constructor_kwargs={"dense": _unindexed(dense)}, batch_size=batch_size, concurrency=actors,
            num_cpus=num_cpus, num_gpus=num_gpus, batch_format="numpy")
        out: np.ndarray | None = None
        filled = np.zeros(len(texts), dtype=bool)
        for batch in encoded.iter_batches(batch_format="numpy", batch_size=None):
            emb = np.asarray(batch["embedding"], dtype=np.float32)
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[batch["i"]] = emb
            filled[batch["i"]] = True
    finally:
        if started:  # a cluster this call started ends with it
            shutdown()
    if out is None or not filled.all():
        raise DataError(f"Ray Data returned embeddings for {int(filled.sum())} of {len(texts)} documents")
    return out


def build_dense(docs: Sequence[Doc], dense: Dense | None = None, actors: int = 2, **options: Any) -> Dense:
    """``dense`` (default ``Dense()``) indexed on ``docs``, encoded on ``actors`` Ray actors.

    ``options`` go to :func:`encode_corpus` (``batch_size``, ``num_cpus``, ``num_gpus``, ``address``).
    """
    dense = dense if dense is not None else Dense()
    docs = as_docs(docs, "build_dense")
    embeddings = encode_corpus([d.full_text() for d in docs], dense, actors, **options)
    return dense.index_embeddings(docs, embeddings)


def _unindexed(dense: Dense) -> Dense:
    if dense.is_indexed:
        raise ConfigError(f"pass an unindexed Dense configuration to encode with, got an indexed {dense!r}")
    return dense
