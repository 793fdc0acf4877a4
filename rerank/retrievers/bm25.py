"""BM25 with scores precomputed at index time into a sparse term-by-document matrix.

Each stored entry is the full contribution ``idf(t) * tf_part(t, d)`` of one term to one document,
so a batch of queries is scored by one sparse product (query term counts times the matrix) and a
partial top-k over the documents that match. Variants (``method``):

* ``"lucene"`` (default): ``idf = ln(1 + (N - n + 0.5) / (n + 0.5))``,
  ``tf_part = tf / (tf + k1 * (1 - b + b * dl / avgdl))``; defaults ``k1=0.9, b=0.4`` (Anserini).
* ``"robertson"``: ``idf = ln((N - n + 0.5) / (n + 0.5))`` (negative for terms in more than half
  the documents), ``tf_part = tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))``.
* ``"rank_bm25"``: exactly ``rank_bm25.BM25Okapi``: the Robertson formula, with negative idfs
  replaced by ``0.25 * mean(idf)``; defaults ``k1=1.5, b=0.75``. Feed it the same tokens
  (``pattern="whitespace", lowercase=False, stopwords=None, stemmer=None`` gives ``str.split()``).

``N`` is the number of documents, ``n`` the number containing the term, ``dl`` the document's
length in terms (after stopword removal) and ``avgdl`` the mean length. A repeated query term
counts once per occurrence. Only documents sharing a term with the query are returned, so a query
made only of stopwords or unknown terms gives no results.

>>> from rerank.types import Doc
>>> bm25 = BM25().index([Doc("d1", "cats purr"), Doc("d2", "dogs bark at cats"), Doc("d3", "birds sing")])
>>> bm25.search("barking dogs", k=5).docids
['d2']
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from rerank.errors import ConfigError, DataError
from rerank.params import checked
from rerank.retrievers.base import Retriever
from rerank.text import WORD_PATTERN, Tokenizer, resolve_stopwords
from rerank.types import Doc

METHODS = ("lucene", "robertson", "rank_bm25")
DEFAULT_K1_B = {"lucene": (0.9, 0.4), "robertson": (0.9, 0.4), "rank_bm25": (1.5, 0.75)}
RANK_BM25_EPSILON = 0.25
QUERY_BATCH = 512  # queries scored per sparse product (bounds the size of the result matrix)
SIGN_BIT, LAST_POSITION = 0x8000_0000, 0xFFFF_FFFF  # 32-bit masks used by _top_k
INDEX_FILES = ("scores.data.npy", "scores.indices.npy", "scores.indptr.npy", "vocab.json")


@checked("num_results")  # arguments checked as in a pipeline expression; num_results by Retriever, in its words
class BM25(Retriever):
    """Okapi BM25 over ``title + text``.

    Args:
        k1, b: saturation (0 to 1000) and length normalization (0 to 1); ``None`` takes the method's
            default (0.9 and 0.4, or 1.5 and 0.75 for ``method="rank_bm25"``).
        method: ``"lucene"``, ``"robertson"`` or ``"rank_bm25"`` (see the module docstring).
        pattern, lowercase, stopwords, stemmer: the :class:`~rerank.text.Tokenizer` settings,
            applied to documents and queries alike.
        num_results: results per query when retrieving.
    """

    def __init__(self, k1: float | None = None, b: float | None = None, method: str = "lucene",
                 pattern: str = WORD_PATTERN, lowercase: bool = True,
                 stopwords: str | Collection[str] | None = "en", stemmer: str | None = "english",
                 num_results: int = 1000, progress: bool | None = None):
        super().__init__(num_results=num_results, progress=progress)
        if method not in METHODS:
            raise ConfigError(f"unknown BM25 method {method!r}; choose one of {METHODS}")
        self.k1, self.b, self.method = k1, b, method
        default_k1, default_b = DEFAULT_K1_B[method]
        self._k1 = float(default_k1 if k1 is None else k1)
        self._b = float(default_b if b is None else b)
        self.pattern, self.lowercase, self.stemmer = pattern, lowercase, stemmer
        if stopwords is not None and not isinstance(stopwords, str):  # as matched (the index key); a set in one order
            words = resolve_stopwords(tuple(stopwords), lowercase)
            stopwords = words if isinstance(stopwords, Sequence) else tuple(sorted(words))
        self.stopwords = stopwords
        self.tokenizer = Tokenizer(pattern, lowercase, self.stopwords, stemmer)
        self._vocab: dict[str, int] = {}
        self._scores: sp.csr_matrix | None = None  # terms x documents, float32

    def index_identity(self) -> dict[str, Any]:
        """As :meth:`Retriever.index_identity`, with ``k1`` and ``b`` resolved: ``BM25(k1=0.9, b=0.4)``
        builds the index ``BM25()`` does."""
        return {**super().index_identity(), "k1": self._k1, "b": self._b}

    # -- indexing -----------------------------------------------------------------------------
    def _build(self, docs: Sequence[Doc]) -> None:
        vocab, tf, lengths = self._count(docs)
        if not vocab:
            raise DataError(f"{self!r}: none of the {len(docs)} documents has an index term after tokenization; "
                            "check the tokenizer pattern and stopwords")
        self._vocab = vocab
        self._scores = self._weigh(tf, lengths)

    def _count(self, docs: Sequence[Doc]) -> tuple[dict[str, int], sp.csr_matrix, np.ndarray]:
        """Tokenize ``docs``: the vocabulary (term -> row, in order of first appearance), the
        term-by-document count matrix and the document lengths."""
        vocab: dict[str, int] = {}
        term_ids: list[int] = []
        lengths = np.empty(len(docs), dtype=np.int64)
        for i, d in enumerate(docs):
            ids = [vocab.setdefault(t, len(vocab)) for t in self.tokenizer(d.full_text())]
            term_ids.extend(ids)
            lengths[i] = len(ids)
        rows = np.asarray(term_ids, dtype=np.int64)
        cols = np.repeat(np.arange(len(docs), dtype=np.int64), lengths)
        tf = sp.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(vocab), len(docs)))
        tf.sum_duplicates()
        return vocab, tf, lengths

    def _idf(self, df: np.ndarray, n_docs: int) -> np.ndarray:
        """Inverse document frequency of each term from its document frequency ``df`` (float64)."""
        if self.method == "lucene":
            idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        else:
            idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
        if self.method == "rank_bm25":
            idf[idf < 0] = RANK_BM25_EPSILON * idf.mean()
        return idf

    def _weigh(self, tf: sp.csr_matrix, lengths: np.ndarray, idf: np.ndarray | None = None,
               avgdl: float | None = None) -> sp.csr_matrix:
        """Turn a term-by-document count matrix into per-(term, document) BM25 scores.

        ``idf`` and ``avgdl`` default to this matrix's own statistics; an index built in shards
        passes the whole corpus's, so each shard holds exactly the columns of the unsharded matrix.
        """
        idf = self._idf(np.diff(tf.indptr).astype(np.float64), tf.shape[1]) if idf is None else idf
        avgdl = lengths.mean() if avgdl is None else avgdl
        norm = self._k1 * (1 - self._b + self._b * lengths / avgdl)
        counts = tf.data
        part = counts / (counts + norm[tf.indices])
        if self.method != "lucene":
            part *= self._k1 + 1
        data = (np.repeat(idf, np.diff(tf.indptr)) * part).astype(np.float32)
        return sp.csr_matrix((data, tf.indices, tf.indptr), shape=tf.shape)

    # -- scoring ------------------------------------------------------------------------------
    def _query_matrix(self, queries: Sequence[str]) -> sp.csr_matrix:
        """Counts of known query terms, one row per query."""
        indptr, indices = [0], []
        for q in queries:
            indices.extend(i for i in map(self._vocab.get, self.tokenizer(q)) if i is not None)
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float32)
        m = sp.csr_matrix((data, np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
                          shape=(len(queries), len(self._vocab)))
        m.sum_duplicates()
        return m

    def _matrix(self) -> sp.csr_matrix:
        if self._scores is None:
            raise ConfigError(f"{self!r} has no index yet: call .index(docs) or BM25.load(path)")
        return self._scores

    def _retrieve(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        scores = self._matrix()
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, len(queries), QUERY_BATCH):
            hits = (self._query_matrix(queries[start:start + QUERY_BATCH]) @ scores).tocsr()
            out.extend(_top_k(hits, k))
        return out

    def _rescore(self, query: str, positions: np.ndarray) -> np.ndarray:
        q = self._query_matrix([query])
        sub = self._matrix()[q.indices][:, positions]
        return np.asarray(sub.T @ q.data, dtype=np.float64).ravel()

    # -- persistence --------------------------------------------------------------------------
    def _save_index(self, path: Path) -> None:
        m = self._matrix()
        np.save(path / "scores.data.npy", m.data)
        np.save(path / "scores.indices.npy", m.indices)
        np.save(path / "scores.indptr.npy", m.indptr)
        terms = sorted(self._vocab, key=self._vocab.__getitem__)
        (path / "vocab.json").write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")

    def _load_index(self, path: Path, mmap: bool) -> None:
        missing = [f for f in INDEX_FILES if not (path / f).exists()]
        if missing:
            raise DataError(f"{path} is not a complete BM25 index: missing {missing}")
        mode = "r" if mmap else None
        data, indices, indptr = (np.load(path / f"scores.{part}.npy", mmap_mode=mode) for part in ("data", "indices", "indptr"))
        terms = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
        self._vocab = {t: i for i, t in enumerate(terms)}
        shape = (len(terms), len(self.docs))
        if len(indptr) != shape[0] + 1:
            raise DataError(f"{path}: the score matrix has {len(indptr) - 1} rows but vocab.json lists {shape[0]} terms")
        if not (len(data) == len(indices) == indptr[-1] and indptr[0] == 0 and (np.diff(indptr) >= 0).all()
                and (not len(indices) or 0 <= indices.min() <= indices.max() < shape[1])):
            raise DataError(f"{path}: the score matrix's arrays do not describe {shape[0]} terms x {shape[1]} documents")
        self._scores = sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)


def _top_k(hits: sp.csr_matrix, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row of ``hits`` (queries x documents): the ``k`` best (position, score) pairs, best first,
    equal scores going to the earlier document.

    Each hit becomes one unique 64-bit key, the score's bits in an order-preserving form above the
    inverted position, so a plain partition and sort of the keys select and order the hits.
    """
    keys = (_ordered_bits(hits.data.astype(np.float32)) << np.uint64(32)) | (np.uint64(LAST_POSITION) - hits.indices.astype(np.uint64))
    tops = []
    for row in range(hits.shape[0]):
        row_keys = keys[hits.indptr[row]:hits.indptr[row + 1]]
        if len(row_keys) > k:
            row_keys = np.partition(row_keys, len(row_keys) - k)[len(row_keys) - k:]
        tops.append(np.sort(row_keys)[::-1])
    best = np.concatenate(tops) if tops else np.empty(0, dtype=np.uint64)
    positions = (np.uint64(LAST_POSITION) - (best & np.uint64(LAST_POSITION))).astype(np.int64)
    scores = _float_from_ordered_bits(best >> np.uint64(32)).astype(np.float64)
    bounds = np.cumsum([len(t) for t in tops])[:-1]
    return list(zip(np.split(positions, bounds), np.split(scores, bounds)))


def _ordered_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> uint64 holding 32 bits whose unsigned order is the float order
    (flip the sign bit of a non-negative float, every bit of a negative one)."""
    bits = values.view(np.uint32)
    flip = (bits.view(np.int32) >> 31).view(np.uint32) | np.uint32(SIGN_BIT)
    return (bits ^ flip).astype(np.uint64)


def _float_from_ordered_bits(bits: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_ordered_bits`."""
    bits = bits.astype(np.uint32)
    flip = (~bits.view(np.int32) >> 31).view(np.uint32) | np.uint32(SIGN_BIT)
    return (bits ^ flip).view(np.float32)
