"""Training data without labels (DUQGen): cluster the corpus, sample diverse documents, generate queries,
keep the queries whose source document a first stage ranks in its top k, and mine hard negatives.

Only the corpus is read: neither the queries nor the qrels of the dataset are touched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from rerank.errors import DataError
from rerank.stage import Stage
from rerank.train.negatives import ranked_docids
from rerank.train.querygen import PseudoQuery
from rerank.types import Doc

logger = logging.getLogger("rerank")


def sample_documents(docs: Sequence[Doc], embeddings: np.ndarray, n: int, clusters: int, min_words: int,
                     rng: np.random.Generator, seed: int) -> tuple[list[Doc], dict[str, int]]:
    """About ``n`` documents spread over ``clusters`` k-means clusters (FAISS, spherical) of ``embeddings``.

    Small corpora get fewer clusters (39 documents per cluster at least). Each cluster gives ``ceil(n / clusters)`` documents at most, drawn at random; documents with fewer
    than ``min_words`` words are skipped. Returns the sample (corpus order) and counts.
    """
    import faiss

    if len(docs) != len(embeddings):
        raise DataError(f"{len(docs)} documents but {len(embeddings)} embeddings")
    eligible = np.array([len(d.full_text().split()) >= min_words for d in docs])
    if not eligible.any():
        raise DataError(f"no document of the corpus has {min_words} words or more; lower min_words")
    idx = np.flatnonzero(eligible)
    k = max(1, min(clusters, len(idx) // 39))  # FAISS wants 39 points per centroid or more
    vectors = np.ascontiguousarray(embeddings[idx], dtype=np.float32)
    faiss_seed = seed % (int(np.iinfo(np.int32).max) + 1)  # FAISS takes a C int; seeds up to 2**32-1 are valid settings
    kmeans = faiss.Kmeans(vectors.shape[1], k, niter=20, seed=faiss_seed, spherical=True, verbose=False)
    kmeans.train(vectors)
    _, assign = kmeans.index.search(vectors, 1)
    per_cluster = -(-n // k)
    chosen: list[int] = []
    for c in range(k):
        members = idx[assign[:, 0] == c]
        if len(members):
            chosen.extend(rng.choice(members, size=min(per_cluster, len(members)), replace=False).tolist())
    chosen = sorted(chosen)
    if len(chosen) > n:
        chosen = sorted(rng.choice(chosen, size=n, replace=False).tolist())
    counts = {"corpus": len(docs), "too_short": int((~eligible).sum()), "clusters": k, "sampled_documents": len(chosen)}
    return [docs[i] for i in chosen], counts


def roundtrip_filter(queries: Sequence[PseudoQuery], stage: Stage, k: int, depth: int
                     ) -> tuple[list[tuple[PseudoQuery, list[str]]], dict[str, int]]:
    """Keep the queries whose source document is in ``stage``'s top ``k`` (InPars-style consistency).

    Duplicate query texts are dropped first. Each kept query comes with the stage's top ``depth``
    docids, the pool its hard negatives are drawn from.
    """
    unique: dict[str, PseudoQuery] = {}
    for q in queries:
        unique.setdefault(q.query.strip().lower(), q)
    duplicates = len(queries) - len(unique)
    kept_queries = list(unique.values())
    ranked = ranked_docids(stage, {f"syn{i}": q.query for i, q in enumerate(kept_queries)}, max(k, depth))
    kept = [(q, ranked[f"syn{i}"][:depth]) for i, q in enumerate(kept_queries) if q.docid in ranked[f"syn{i}"][:k]]
    counts = {"duplicate_queries": duplicates, "roundtrip_dropped": len(kept_queries) - len(kept), "roundtrip_kept": len(kept)}
    return kept, counts
