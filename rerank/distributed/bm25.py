"""BM25 built in shards with the whole corpus's statistics; merged, or searched by scatter-gather.

Building (:func:`build_bm25`), with one actor per shard:

1. each shard tokenizes its documents (a contiguous slice of the corpus, or one corpus file) and
   reports its terms in order of first appearance, their document frequencies, its length sum and size;
2. the driver merges them into the global statistics: the vocabulary (in the corpus's first-appearance
   order, exactly as one process would number it), document frequencies, ``N`` and ``avgdl``;
3. each shard weighs its counts with the global ``idf`` and ``avgdl``.

Each shard then holds exactly its columns of the unsharded score matrix, so scores and top-k equal one
unsharded :class:`~rerank.retrievers.bm25.BM25` (ties go to the earlier document, as there).

Repeated docids are treated as the one-process path treats them: in a list of documents they are a
:class:`DataError`, as for ``BM25().index(docs)``; in corpus files, as when a dataset loads its corpus,
an exact repeat of an earlier record (same id, title and text) is dropped with one warning that counts
them, and two different records with one id are a :class:`DataError`.

Searching: :meth:`ShardedBM25.merge` joins the shards into one in-process ``BM25`` (the driver then
needs the memory of the whole index); or :class:`ShardedBM25` itself is a retriever stage that sends
each query batch to every shard actor and merges their top-k (memory per worker: its shard only).

Memory per worker while building: the shard's documents, its token ids (8 bytes per token) and its
count matrix, about 1/N of a one-process build, plus the worker process itself (a few hundred MB); the driver holds the
vocabulary and document frequencies only.
"""

from __future__ import annotations

import copy
import hashlib
import resource
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rerank.data.base import unique_records
from rerank.distributed.cluster import check_ray_amount, connect, fitting, import_ray, ray_reason, ray_share, shutdown
from rerank.errors import ConfigError, DataError, RerankError
from rerank.params import is_finite_number, is_integer
from rerank.retrievers.base import as_docs, check_unique_docids
from rerank.retrievers.bm25 import QUERY_BATCH, BM25, _top_k
from rerank.stage import Stage, callable_directly, check_query_texts
from rerank.types import Doc, Ranking

CorpusPart = Sequence[Doc] | str | Path


class BM25Shard:
    """One shard's documents and score columns (runs as a Ray actor)."""

    def __init__(self, config: BM25, part: Any):
        self.bm25, self.part_given = config, part
        self.offset = 0
        self.scores: sp.csr_matrix | None = None

    def read(self) -> int:
        """Read and count the shard's documents (a method, not the constructor, so that what goes wrong
        comes back as the error itself); returns how many there are."""
        self.docs = _read_part(self.part_given)
        self._vocab, self._tf, self._lengths = self.bm25._count(self.docs)
        self.part_given = None
        return len(self.docs)

    def stats(self) -> tuple[list[str], np.ndarray, int, int]:
        """Terms (first-appearance order), their document frequencies, the length sum, the size."""
        return list(self._vocab), np.diff(self._tf.indptr), int(self._lengths.sum()), len(self.docs)

    def docid_digests(self) -> np.ndarray:
        """A 64-bit digest of each docid, to find repeated ids across shards without moving the ids."""
        return np.array([int.from_bytes(hashlib.blake2b(d.docid.encode(), digest_size=8).digest(), "little")
                         for d in self.docs], dtype=np.uint64)

    def drop(self, positions: np.ndarray) -> None:
        """Drop the documents at these positions of the shard (before :meth:`weigh`)."""
        keep = np.ones(len(self.docs), dtype=bool)
        keep[positions] = False
        self.docs = [d for d, k in zip(self.docs, keep) if k]
        self._tf, self._lengths = self._tf[:, keep], self._lengths[keep]

    def weigh(self, rows: np.ndarray, n_terms: int, idf: np.ndarray, avgdl: float, offset: int) -> int:
        """Number this shard's terms globally (``rows``), weigh with the global statistics; returns stored entries."""
        coo = self._tf.tocoo()
        tf = sp.csr_matrix((coo.data, (rows[coo.row], coo.col)), shape=(n_terms, len(self.docs)))
        tf.sum_duplicates()
        self.scores = self.bm25._weigh(tf, self._lengths, idf=idf, avgdl=avgdl)
        self.offset, self._tf, self._vocab = offset, None, {}
        return int(self.scores.nnz)

    def search(self, queries: sp.csr_matrix, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query row: global positions and scores of this shard's top ``k``."""
        hits = (queries @ self.scores).tocsr()
        return [(pos + self.offset, sc) for pos, sc in _top_k(hits, k)]

    def documents(self, positions: np.ndarray) -> list[Doc]:
        """The documents at these global positions (all in this shard)."""
        return [self.docs[i] for i in np.asarray(positions) - self.offset]

    def part(self) -> tuple[list[Doc], sp.csr_matrix]:
        return self.docs, self.scores

    def peak_memory(self) -> int:
        """Peak resident memory of this worker process, in bytes."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ShardedBM25(Stage):
    """A BM25 index kept in shard actors; retrieves by scatter-gather top-k over the shards.

    Built by :func:`build_bm25`. As a stage it retrieves for a query set (``% k`` sets the depth);
    to rescore given candidates, :meth:`merge` it into one :class:`BM25` first.
    """

    requires = ("qid", "query")

    def __init__(self, config: BM25, shards: Sequence[Any], vocab: dict[str, int], sizes: Sequence[int],
                 num_results: int = 1000, owns_cluster: bool = False):
        self.config, self.shards, self.sizes, self.num_results = config, list(shards), list(sizes), num_results
        self.owns_cluster = owns_cluster  # build_bm25 started the local cluster: close() stops it
        self._head = copy.copy(config)  # tokenizes queries against the global vocabulary
        self._head._vocab = vocab

    def __enter__(self) -> ShardedBM25:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShardedBM25({self.config!r}, shards={len(self.shards)})"

    def with_num_results(self, k: int) -> ShardedBM25:
        other = copy.copy(self)
        other.num_results = k
        return other

    def _open(self) -> Any:
        """Ray, once this index is known to be open (a closed one would start or join a cluster anew)."""
        if not self.shards:
            raise ConfigError(f"{self!r} is closed (its shard actors were stopped); build it again")
        return import_ray()

    def _gather(self, refs: list[Any]) -> list[Any]:
        """The shards' answers; a shard actor that died is one :class:`RerankError` line (it held its part
        of the index, so the index cannot answer any more)."""
        ray = import_ray()
        try:
            return ray.get(refs)
        except ray.exceptions.RayActorError as e:
            raise RerankError(f"{self!r}: a shard actor died and its part of the index with it ({ray_reason(e)}); "
                              "build the index again") from None

    @callable_directly
    def transform(self, inp: Ranking) -> Ranking:
        if not inp.is_query_set:
            raise ConfigError(f"{self!r} retrieves for a query set; to rescore given candidates use its .merge()")
        check_query_texts(inp, self)
        self._open()
        queries = inp.queries()
        k = min(self.num_results, sum(self.sizes))
        texts = list(queries.values())
        qids, hits = list(queries), []
        for start in range(0, len(texts), QUERY_BATCH):  # scatter the queries, gather each shard's top k
            per_shard = self._gather([s.search.remote(self._head._query_matrix(texts[start:start + QUERY_BATCH]), k)
                                      for s in self.shards])
            for j in range(len(per_shard[0])):
                pos = np.concatenate([r[j][0] for r in per_shard])
                scores = np.concatenate([r[j][1] for r in per_shard])
                best = np.lexsort((pos, -scores))[:k]  # as one index: score, then the earlier document
                hits.append((pos[best], scores[best]))
        if not hits:
            return Ranking.empty()
        positions = np.concatenate([p for p, _ in hits])
        docs = self._documents(positions) if len(positions) else []  # none found: the columns of a local BM25's
        frame = pd.DataFrame({"qid": np.repeat(qids, [len(p) for p, _ in hits]),
                              "query": np.repeat([queries[q] for q in qids], [len(p) for p, _ in hits]),
                              "score": np.concatenate([s for _, s in hits]).astype(np.float64),
                              "docid": [d.docid for d in docs], "text": [d.full_text() for d in docs],
                              "title": [d.title for d in docs]})
        return Ranking(frame)

    def _documents(self, positions: np.ndarray) -> list[Doc]:
        """Documents at global positions, each fetched once from the shard that holds it."""
        unique, inverse = np.unique(positions, return_inverse=True)
        bounds = np.cumsum(self.sizes)
        owner = np.searchsorted(bounds, unique, side="right")
        asked = [(i, unique[owner == i]) for i in range(len(self.shards)) if (owner == i).any()]
        fetched = self._gather([self.shards[i].documents.remote(p) for i, p in asked])
        found = dict(zip(np.concatenate([p for _, p in asked]).tolist(), [d for part in fetched for d in part]))
        return [found[p] for p in unique[inverse].tolist()]

    def merge(self) -> BM25:
        """One in-process :class:`BM25` equal to an unsharded build (needs the whole index's memory)."""
        self._open()
        parts = self._gather([s.part.remote() for s in self.shards])
        merged = copy.copy(self.config).with_num_results(self.num_results)
        merged._set_docs([d for docs, _ in parts for d in docs])
        merged._vocab = dict(self._head._vocab)
        merged._scores = sp.hstack([m for _, m in parts], format="csr")
        return merged

    def peak_memory(self) -> list[int]:
        """Peak resident memory of each shard's worker process, in bytes."""
        self._open()
        return self._gather([s.peak_memory.remote() for s in self.shards])

    def close(self) -> None:
        """Stop the shard actors, and the local cluster when :func:`build_bm25` started it (then anything
        else that joined that cluster in this process, such as a later ``RayExecutor``, stops with it)."""
        _stop(self.shards, self.owns_cluster)
        self.shards, self.owns_cluster = [], False


def build_bm25(corpus: Sequence[Doc] | Sequence[str | Path], bm25: BM25 | None = None, shards: int | None = None,
               *, num_cpus: float | None = None, address: str | None = None) -> ShardedBM25:
    """Build ``bm25``'s index (default ``BM25()``) in ``shards`` actors with global statistics.

    ``corpus`` is a list of :class:`Doc` (cut into ``shards`` contiguous slices, default 2) or a
    list of corpus files in BEIR ``corpus.jsonl[.gz]`` layout, one shard each (the driver then
    never holds the documents; on a local cluster a missing file fails before it starts, and a file
    with no documents is a :class:`DataError`). Each shard actor reserves ``num_cpus`` (default: 1, or
    the free CPUs' share when fewer are free than shards, none when none is, so that every shard can
    start; a local cluster refuses shards that cannot). A repeated docid is a :class:`DataError` in a
    list of documents; in corpus files an exact repeat is dropped with a counted warning, as when a
    dataset loads its corpus (module docstring). A closed index refuses to search or merge.

    >>> build_bm25([], shards=2)
    Traceback (most recent call last):
    ...
    rerank.errors.DataError: the corpus is empty, nothing to index
    """
    if not len(corpus):
        raise DataError("the corpus is empty, nothing to index")
    config = bm25 if bm25 is not None else BM25()
    if config.is_indexed:
        raise ConfigError(f"build_bm25 takes an unindexed BM25 configuration, got an indexed {config!r}")
    parts = _parts(corpus, shards, config)
    if num_cpus is not None and not (is_finite_number(num_cpus) and num_cpus >= 0):
        raise ConfigError(f"build_bm25: num_cpus must be a finite number >= 0, got {num_cpus!r}")
    if num_cpus is not None:
        check_ray_amount(num_cpus, "num_cpus", "build_bm25")
    if address is None:  # files a local cluster would read: missing ones fail here, before it starts
        missing = [str(p) for p in parts if isinstance(p, (str, Path)) and not Path(p).is_file()]
        if missing:
            raise DataError(f"corpus file {missing[0]} not found" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    started = connect(address)
    ray = import_ray()
    handles: list[Any] = []
    try:
        if num_cpus is None:  # the free CPUs' share (none free: actors that take no CPU)
            num_cpus = ray_share(min(1.0, ray.available_resources().get("CPU", 0) / len(parts)))
        fitting(len(parts), num_cpus, 0, "build_bm25")
        actor = ray.remote(BM25Shard).options(num_cpus=num_cpus)
        handles = [actor.remote(config, ray.put(p) if not isinstance(p, (str, Path)) else p) for p in parts]
        ray.get([h.read.remote() for h in handles])
        if isinstance(parts[0], (str, Path)):
            _drop_repeats(handles, _files_name(parts))
        return _weighed(config, handles, owns_cluster=started)
    except ray.exceptions.RayError as e:  # a shard could not read, tokenize or weigh its part
        _stop(handles, started)
        raise DataError(f"a BM25 shard failed: {ray_reason(e)}") from None
    except BaseException:  # a bad corpus, or Ctrl-C: no actor (and no cluster started here) outlives the build
        _stop(handles, started)
        raise


def _weighed(config: BM25, handles: list[Any], owns_cluster: bool) -> ShardedBM25:
    """Collect the shards' statistics, give every shard the global ones, and wrap them as one index."""
    ray = import_ray()
    stats = ray.get([h.stats.remote() for h in handles])
    vocab: dict[str, int] = {}
    shard_rows = [np.array([vocab.setdefault(t, len(vocab)) for t in terms], dtype=np.int64) for terms, *_ in stats]
    if not vocab:
        raise DataError(f"{config!r}: no document has an index term after tokenization; check the tokenizer settings")
    df = np.zeros(len(vocab), dtype=np.float64)
    for rows, (_, shard_df, _, _) in zip(shard_rows, stats):
        np.add.at(df, rows, shard_df)
    sizes = [n for *_, n in stats]
    n_docs, total = sum(sizes), sum(length for _, _, length, _ in stats)
    idf, avgdl = config._idf(df, n_docs), np.float64(total) / n_docs
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    ray.get([h.weigh.remote(rows, len(vocab), idf, avgdl, off) for h, rows, off in zip(handles, shard_rows, offsets)])
    return ShardedBM25(config, handles, vocab, sizes, config.num_results, owns_cluster=owns_cluster)


def _drop_repeats(handles: list[Any], where: str) -> None:
    """Drop from the shards each exact repeat of an earlier record, with the counted warning of a dataset's
    corpus (the first copy stays); :class:`DataError` for two different records with one id."""
    ray = import_ray()
    digests = ray.get([h.docid_digests.remote() for h in handles])
    ids, counts = np.unique(np.concatenate(digests), return_counts=True)
    if (counts == 1).all():
        return
    positions = [np.flatnonzero(np.isin(d, ids[counts > 1])) for d in digests]  # records that may share an id
    fetched = ray.get([h.documents.remote(p) for h, p in zip(handles, positions)])  # before weigh: shard positions
    kept = {id(d) for d in unique_records([d for docs in fetched for d in docs], where, "document")}
    repeats = [p[np.array([id(d) not in kept for d in docs], dtype=bool)] for p, docs in zip(positions, fetched)]
    ray.get([h.drop.remote(r) for h, r in zip(handles, repeats) if len(r)])


def _files_name(files: Sequence[str | Path]) -> str:
    """How messages name the corpus files: the file, or the first and how many."""
    return str(files[0]) if len(files) == 1 else f"{files[0]} and {len(files) - 1} more corpus files"


def _stop(actors: Sequence[Any], cluster: bool) -> None:
    """Kill ``actors``; also stop the local cluster when ``cluster`` (this process started it for them)."""
    ray = import_ray()
    for a in actors:
        ray.kill(a)
    if cluster:
        shutdown()


def _parts(corpus: Sequence[Any], shards: int | None, config: BM25) -> list[Any]:
    if isinstance(corpus, str | Path):
        raise ConfigError(f"build_bm25 takes a list of corpus files (one per shard) or documents, got one path {str(corpus)!r}")
    if shards is not None and not is_integer(shards):
        raise ConfigError(f"build_bm25: shards must be an integer, got {shards!r}")
    if all(isinstance(c, (str, Path)) for c in corpus):
        if shards is not None and shards != len(corpus):
            raise ConfigError(f"{len(corpus)} corpus files make {len(corpus)} shards, not {shards}")
        return list(corpus)
    docs = as_docs(corpus, "build_bm25")
    check_unique_docids(docs, repr(config))  # as BM25().index(docs)
    n = 2 if shards is None else shards
    if not is_integer(n) or n < 1 or n > len(docs):
        raise ConfigError(f"cannot cut {len(docs)} documents into {n} shards")
    return [docs[i * len(docs) // n:(i + 1) * len(docs) // n] for i in range(n)]


def _read_part(part: Any) -> list[Doc]:
    if isinstance(part, (str, Path)):
        from rerank.io import read_corpus

        docs = read_corpus(part)  # the checks and null handling of the one-process path
        if not docs:
            raise DataError(f"{part}: the corpus file holds no documents (a shard would be empty)")
        return docs
    return list(part)
