"""Dense retrieval: an :class:`~rerank.encoders.Encoder` and a FAISS index (flat inner product, HNSW or IVF).

Document embeddings are kept with the index, so rescoring given candidates (``bm25 >> dense``) and
later stages that use document embeddings (E2Rank, through :class:`~rerank.encoders.EmbeddingSource`)
reuse them without encoding documents again. A saved index records the encoder settings that made
its embeddings (in its :meth:`index_identity`, the runtime resolved where it was built) and refuses
to load for an encoder that would compute others.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rerank.encoders import DEFAULT_ENCODER, Encoder
from rerank.errors import ConfigError, DataError
from rerank.params import check_count, checked
from rerank.prebuilt import lookup
from rerank.retrievers.base import Retriever, as_docs, check_same_documents
from rerank.types import Doc

logger = logging.getLogger("rerank")

INDEX_TYPES = ("flat", "hnsw", "ivf")
IVF_SEED = 1234  # the training sample and k-means start are fixed, so an IVF index is reproducible
COUNTS = ("hnsw_m", "ef_search", "nprobe", "nlist", "train_size", "batch_size")


@checked("num_results", *COUNTS)  # arguments checked as in a pipeline expression; COUNTS below, num_results by Retriever
class Dense(Retriever):
    """Bi-encoder retrieval. ``index="flat"`` is exact; ``"hnsw"`` is approximate (``hnsw_m``, ``ef_search``);
    ``"ivf"`` clusters the documents into ``nlist`` lists (default ``4 * sqrt(N)``) with k-means trained on
    a sample of ``train_size`` documents (default ``64 * nlist``) and probes ``nprobe`` lists per query.

    ``model``, ``query_prefix``, ``doc_prefix``, ``max_length``, ``runtime``, ``device`` and
    ``batch_size`` configure the :class:`~rerank.encoders.Encoder`.
    """

    kept_as: ClassVar[dict[str, str]] = {"index": "index_type"}  # index() is Retriever's method
    search_settings = ("ef_search", "nprobe", "query_prefix", "batch_size")

    def __init__(self, model: str | os.PathLike[str] = DEFAULT_ENCODER, index: str = "flat", hnsw_m: int = 32, ef_search: int = 256,
                 batch_size: int = 64, query_prefix: str = "", doc_prefix: str = "", max_length: int | None = None,
                 runtime: str = "auto", device: str | None = None, num_results: int = 1000, progress: bool | None = None,
                 nlist: int | None = None, nprobe: int = 16, train_size: int | None = None):
        super().__init__(num_results, progress)
        if index not in INDEX_TYPES:
            raise ConfigError(f"unknown dense index {index!r}; choose one of {INDEX_TYPES}")
        for name, value in zip(COUNTS, (hnsw_m, ef_search, nprobe, nlist, train_size, batch_size)):
            if value is not None:
                check_count("Dense", name, value)  # FAISS crashes on hnsw_m=1
        if nlist is not None and train_size is not None and train_size < nlist:
            raise ConfigError(f"Dense: train_size ({train_size}) must be at least nlist ({nlist}): k-means needs a point per list")
        model = os.fspath(model)  # a folder given as a Path is its text, in the index key too (checked above)
        self.model, self.index_type, self.hnsw_m, self.ef_search = model, index, hnsw_m, ef_search
        self.batch_size, self.query_prefix, self.doc_prefix, self.max_length = batch_size, query_prefix, doc_prefix, max_length
        self.runtime, self.device = runtime, device
        self.nlist, self.nprobe, self.train_size = nlist, nprobe, train_size
        self.encoder = Encoder(model, query_prefix=query_prefix, doc_prefix=doc_prefix, max_length=max_length,
                               runtime=runtime, device=device, batch_size=batch_size, progress=progress)
        self.embeddings: np.ndarray | None = None
        self._faiss = None

    def params(self) -> dict:
        out = super().params()
        out.pop("device", None)  # where it runs, not what it computes
        return out

    def index_identity(self) -> dict[str, Any]:
        """The parameters, and the document encoder with its runtime resolved (``"auto"`` is bf16 on
        one machine and float32 on another: their vectors must not share a cache entry)."""
        own = {k: v for k, v in super().index_identity().items() if k != "runtime"}  # as asked: resolved below
        return {**own, "encoder": self.encoder.identity("doc")}

    def embeddings_for(self, docids: Sequence[str], texts: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Stored embeddings of the indexed documents among ``docids`` (the :class:`EmbeddingSource` protocol);
        with their ``texts``, DataError for one that is not the document indexed under its docid, and only
        those whose text is the one embedded (a document shown cut or without its title is left out)."""
        if self.embeddings is None:
            return {}
        if texts is not None:
            check_same_documents(self, docids, texts)
        pairs = zip(docids, texts) if texts is not None else ((d, None) for d in docids)
        return {d: np.asarray(self.embeddings[self._position[d]]) for d, t in pairs
                if d in self._position and (t is None or t == self._texts[self._position[d]])}

    def _build(self, docs: Sequence[Doc]) -> None:
        """Encode ``docs``, unless :mod:`rerank.prebuilt` holds their embeddings under this encoder's identity."""
        prebuilt = lookup(docs, self.encoder.identity("doc"))
        if prebuilt is None:
            texts = [d.full_text() for d in docs]
            long = sum(map(bool, self.encoder.tokens_over(texts, kind="doc")))
            if long:  # the embedding reads each one's start only: say how many (chunk long documents to use them all)
                logger.warning("%s: %d of %d documents exceed %d tokens; each is embedded from its first %d",
                               self.encoder.model, long, len(docs), self.encoder.max_tokens, self.encoder.max_tokens)
        self.embeddings = prebuilt if prebuilt is not None else self.encoder.encode(texts, kind="doc")
        self._faiss = self._make_index(self.embeddings)

    def index_embeddings(self, docs: Sequence[Doc], embeddings: np.ndarray) -> Dense:
        """Index ``docs`` whose embeddings were computed elsewhere (e.g. on a cluster); returns ``self``.
        The documents are checked as :meth:`index` checks them."""
        docs = as_docs(docs, f"{self!r}")
        if not docs:
            raise DataError(f"{self!r}: the corpus is empty, nothing to index")
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(docs):
            raise DataError(f"{self!r}: {len(docs)} documents but embeddings of shape {embeddings.shape}")
        if not np.isfinite(embeddings).all():
            raise DataError(f"{self!r}: the embeddings hold NaN or infinite values")
        self._set_docs(docs)
        self.embeddings = embeddings
        self._faiss = self._make_index(embeddings)
        return self

    def __getstate__(self) -> dict:
        import faiss

        state = self.__dict__.copy()  # FAISS indexes do not pickle; their serialized bytes do
        if self._faiss is not None:
            state["_faiss"] = faiss.serialize_index(self._faiss)
        return state

    def __setstate__(self, state: dict) -> None:
        import faiss

        if state.get("_faiss") is not None:
            state["_faiss"] = faiss.deserialize_index(state["_faiss"])
        self.__dict__.update(state)

    def _make_index(self, emb: np.ndarray):
        import faiss

        if self.index_type == "flat":
            index = faiss.IndexFlatIP(emb.shape[1])
        elif self.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(emb.shape[1], self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = max(40, 2 * self.hnsw_m)
        else:
            nlist = self.nlist or min(len(emb), max(1, int(4 * np.sqrt(len(emb)))))
            if nlist > len(emb):
                raise ConfigError(f"{self!r}: nlist={nlist} lists for {len(emb)} documents; use nlist <= {len(emb)}")
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(emb.shape[1]), emb.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = IVF_SEED
            size = min(len(emb), self.train_size or 64 * nlist)
            if size < nlist:
                raise ConfigError(f"{self!r}: train_size={size} is below nlist={nlist}; k-means needs a point per list")
            sample = np.random.default_rng(IVF_SEED).choice(len(emb), size, replace=False)
            index.train(emb[np.sort(sample)])
            index.nprobe = self.nprobe
        index.add(emb)
        return index

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Query embeddings; queries longer than the encoder's limit are read up to it, and counted in a warning."""
        long = sum(map(bool, self.encoder.tokens_over(list(queries), kind="query")))
        if long:
            logger.warning("%s: %d of %d queries exceed %d tokens and were truncated by the encoder",
                           self.encoder.model, long, len(queries), self.encoder.max_tokens)
        return self.encoder.encode(list(queries), kind="query")

    def _retrieve(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``k`` best (position, score) pairs per query, equal scores going to the earlier document,
        as BM25's: FAISS picks among ties at random, so a tie across the cut is searched deeper, and
        ``dense % k`` keeps the documents ``dense`` ranks first."""
        vectors = self.encode_queries(queries)
        out = []
        for vector, (positions, scores) in zip(vectors, self._search(vectors, k + 1)):
            depth = k + 1
            while len(positions) == depth < self._faiss.ntotal and scores[k - 1] == scores[-1]:
                depth = min(2 * depth, self._faiss.ntotal)
                positions, scores = self._search(vector[None], depth)[0]
            out.append((positions[:k], scores[:k]))
        return out

    def _search(self, vectors: np.ndarray, depth: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """FAISS's ``depth`` best per vector, sorted by score and then position."""
        if self.index_type == "hnsw":
            self._faiss.hnsw.efSearch = max(self.ef_search, depth)
        elif self.index_type == "ivf":
            self._faiss.nprobe = self.nprobe
        if vectors.shape[1] != self._faiss.d:
            raise DataError(f"{self!r}: the index holds {self._faiss.d}-dimensional embeddings and the encoder gives "
                            f"{vectors.shape[1]}; index embeddings made by this encoder")
        scores, ids = self._faiss.search(vectors, depth)
        hits = [(i[i >= 0], s[i >= 0]) for i, s in zip(ids, scores)]
        return [(i[order], s[order]) for i, s in hits for order in [np.lexsort((i, -s))]]

    def _rescore(self, query: str, positions: np.ndarray) -> np.ndarray:
        return self.embeddings[positions] @ self.encode_queries([query])[0]

    def _save_index(self, path: Path) -> None:
        import faiss

        np.save(path / "embeddings.npy", self.embeddings)
        faiss.write_index(self._faiss, str(path / f"{self.index_type}.faiss"))

    def _load_index(self, path: Path, mmap: bool) -> None:
        import faiss

        self.embeddings = np.load(path / "embeddings.npy", mmap_mode="r" if mmap else None)
        flags = faiss.IO_FLAG_MMAP if mmap and self.index_type == "flat" else 0
        self._faiss = faiss.read_index(str(path / f"{self.index_type}.faiss"), flags)
        if not len(self.embeddings) == self._faiss.ntotal == len(self.docs):
            raise DataError(f"{path}: {len(self.embeddings)} embeddings and {self._faiss.ntotal} indexed vectors for "
                            f"{len(self.docs)} documents; rebuild the index")
