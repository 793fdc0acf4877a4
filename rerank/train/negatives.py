"""Hard negatives mined with any pipeline stage: its top ``depth`` for the query, minus the positives.

>>> import numpy as np
>>> ranked = ["d1", "d2", "d3", "d4"]
>>> picked = sample_negatives(ranked, {"d2"}, 2, np.random.default_rng(0))
>>> len(picked), "d2" in picked, picked == sorted(picked, key=ranked.index)
(2, False, True)
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

from rerank.stage import Stage
from rerank.types import Ranking


def ranked_docids(stage: Stage, queries: Mapping[str, str], depth: int) -> dict[str, list[str]]:
    """``{qid: docids}``: the stage's top ``depth`` for each query (an empty list when it finds nothing)."""
    if not queries:
        return {}
    out = stage(Ranking.from_queries(dict(queries))).top(depth)
    ranked: dict[str, list[str]] = {qid: [] for qid in queries}
    frame = out.to_pandas()
    for qid, docid in zip(frame["qid"], frame["docid"]):
        ranked[str(qid)].append(str(docid))
    return ranked


def sample_negatives(ranked: Sequence[str], positives: Collection[str], n: int, rng: np.random.Generator) -> list[str]:
    """Up to ``n`` docids of ``ranked`` that are not positives, drawn without replacement, in rank order."""
    pool = [d for d in ranked if d not in positives]
    if len(pool) <= n:
        return pool
    picked = np.sort(rng.choice(len(pool), size=n, replace=False))
    return [pool[i] for i in picked]
