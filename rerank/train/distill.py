"""Distillation targets: a teacher stage's scores over its top documents, kept in the call cache.

The teacher is any pipeline expression (``"bm25 % 100 | dense % 100"``, an LLM reranker on vLLM...).
Its scores for one query are stored under a key made of the teacher's repr, a hash of the corpus
content (and of its shipped runs, which a ``run('bm25')`` teacher reads), the depth, and the query's
id and text (a run answers by id), so a re-run (or another run with the same teacher) costs nothing and changed data never reuses
old scores. A teacher model given as a local folder adds
the folder's :func:`~rerank.models.weights_stamp`, so weights trained again in place are asked anew.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rerank.cache import CallStore, default_path
from rerank.data import Dataset
from rerank.index_cache import dataset_fingerprint
from rerank.models import code_stamps, local_models, resolved_stamps
from rerank.stage import normalized_scores
from rerank.types import Ranking


class TeacherScores:
    """Scores of ``teacher`` (an expression) over its top ``depth`` for queries of ``dataset``'s corpus."""

    def __init__(self, teacher: str, dataset: Dataset, depth: int, cache: str | Path | None = None):
        from rerank.expr import build

        self.expr, self.dataset, self.depth = teacher, dataset, depth
        stage = build(teacher)  # validates the expression without indexing anything
        self.identity = repr(stage)
        self.models = local_models(teacher)  # a teacher model folder trained again gives new scores
        self.stamps = [code_stamps(stage), resolved_stamps(stage)]  # a plugin edited; default weights, a server
        self.store = CallStore(cache or default_path())
        self.fingerprint = dataset_fingerprint(dataset)
        self.runs = dataset.runs_fingerprint  # a shipped run edited in place gives new scores
        self.hits = self.misses = 0

    def _key(self, qid: str, query: str) -> str:
        extra = [part for part in (self.models, self.runs, *self.stamps) if part]  # absent when empty
        blob = json.dumps(["teacher", self.identity, self.fingerprint, self.depth, qid, query, *extra], ensure_ascii=False,
                          sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()

    def scores(self, queries: Mapping[str, str]) -> dict[str, list[tuple[str, float]]]:
        """``{qid: [(docid, score), ...]}``, best first; only queries missing from the cache run the teacher."""
        keys = {qid: self._key(qid, text) for qid, text in queries.items()}
        found = self.store.get_many(list(keys.values()))
        todo = {qid: queries[qid] for qid, k in keys.items() if k not in found}
        self.hits, self.misses = len(queries) - len(todo), len(todo)
        if todo:
            from rerank.expr import build

            ranking = build(self.expr, self.dataset)(Ranking.from_queries(todo)).top(self.depth)
            fresh: dict[str, list[list]] = {keys[qid]: [] for qid in todo}
            frame = ranking.to_pandas()
            for qid, docid, score in zip(frame["qid"], frame["docid"], frame["score"]):
                fresh[keys[str(qid)]].append([str(docid), float(score)])
            self.store.put_many(fresh)
            found.update(fresh)
        return {qid: [(d, float(s)) for d, s in found[k]] for qid, k in keys.items()}


def normalize(scores: Sequence[float], how: str, scale: float) -> list[float]:
    """Per-query teacher scores on a common scale: ``minmax`` to [0, scale], ``zscore`` times scale, or ``none``.

    >>> normalize([3.0, 1.0, 2.0], "minmax", 10.0)
    [10.0, 0.0, 5.0]
    >>> normalize([1e300, 3e300, 2e300], "zscore", 1.0)  # no overflow: scaled by a power of two first
    [-1.224744871391589, 1.224744871391589, 0.0]
    """
    s = np.asarray(scores, dtype=np.float64)
    if how == "none":
        return s.tolist()
    return (normalized_scores(s, {"minmax": "min-max", "zscore": "zmuv"}[how]) * scale).tolist()
