"""The model side of the server: which part of a pipeline answers which endpoint, and the batched calls.

* Rerank endpoints run the pipeline's *reranking part*: the stages after its leading retrieval
  stages (``bm25 % 100 >> cross-encoder`` reranks with ``cross-encoder``). A pipeline of rerankers
  and cut-offs qualifies; one that rescores with a retriever (``bm25 >> dense``) does not, since a
  retriever only rescores documents of its own index.
* ``/v1/search`` runs the whole pipeline; it must start with a retriever indexed on a corpus
  (``--dataset``, or ``--index`` for a saved index).

Each request's documents become one :class:`~rerank.types.Candidates` with docids ``"0"``, ``"1"``,
... and the first-stage scores ``reranker.rerank(query, docs)`` uses
(:func:`~rerank.rerankers.base.position_scores`), so a served answer equals the in-process one.
Many requests go through one ``rerank_many`` call.

A NaN or infinite score raises :class:`NonFiniteScore` (JSON has no such numbers; no order can be
made of them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rerank.encoders import Encoder, without_embeddings
from rerank.errors import ConfigError
from rerank.index_cache import read_index_header
from rerank.rerankers.base import Reranker, position_scores, starts_with_retrieval
from rerank.params import constructor_arguments
from rerank.retrievers.base import Retriever, check_class
from rerank.stage import Cutoff, Pipeline, Stage, leaves
from rerank.types import Candidates, RankedResults, Ranking

logger = logging.getLogger("rerank")


class NonFiniteScore(Exception):
    """The model scored a document NaN or infinite."""


@dataclass(frozen=True)
class RerankJob:
    query: str
    texts: list[str]


@dataclass(frozen=True)
class SearchJob:
    query: str
    top_n: int


def rerank_part(pipeline: Stage) -> Stage | None:
    """The stages after the leading retrieval stages, when they are rerankers and cut-offs only. They
    take no document embeddings from those stages (``dense % 20 >> e2rank``): a request's documents
    are not the index's, and their docids (positions) name other documents there."""
    stages = list(pipeline.stages) if isinstance(pipeline, Pipeline) else [pipeline]
    first = next((i for i, s in enumerate(stages) if isinstance(s, Reranker)), None)
    if first is None:
        return None
    rest = without_embeddings(stages[first:])
    if not all(isinstance(s, (Reranker, Cutoff)) for s in rest):
        return None
    return rest[0] if len(rest) == 1 else Pipeline(rest)


def with_index(pipeline: Stage, path: str | Path) -> Stage:
    """``pipeline`` with the index saved at ``path`` read into its first stage, a retriever of the index's
    class: one written with arguments keeps them (those that change the index must be the index's); a
    bare one (``bm25``) takes the index's settings, with a warning naming them."""
    meta = read_index_header(Path(path))
    stages = list(pipeline.stages) if isinstance(pipeline, Pipeline) else [pipeline]
    first = stages[0]
    if not isinstance(first, Retriever):
        raise ConfigError(f"--index needs a pipeline that starts with a retriever, e.g. "
                          f"'{meta['class'].rpartition(':')[2].lower()} % 100 >> {pipeline!r}'")
    check_class(meta, type(first), Path(path))
    runs = ("num_results", "progress", *first.search_settings)  # how it searches, not what it indexed (params() has no device)
    if set(first.params()) - set(runs):
        stages[0] = first.read_index(path, meta=meta)
    else:
        given = {name: getattr(first, kept) for name, (_, kept) in constructor_arguments(first).items() if kept}
        taking = type(first)(**{**given, **{k: v for k, v in meta["params"].items() if k not in runs}})
        if taking.index_identity() != first.index_identity():
            logger.warning("--index: %s was built with %r; the pipeline's %r takes its settings", path, taking, first)
        stages[0] = taking.read_index(path, meta=meta)
    return stages[0] if len(stages) == 1 else Pipeline(stages)


class Engine:
    """Runs batches of jobs through the pipeline (called from the model thread only)."""

    def __init__(self, pipeline: Stage, searchable: bool):
        self.pipeline = pipeline
        part = rerank_part(pipeline)
        stages = part.stages if isinstance(part, Pipeline) else [part]
        self.shows_scores = next((s for s in stages if getattr(s, "shows_scores", False)), None)
        """A reranker of the part that shows the model first-stage scores, which rerank requests lack."""
        self.reranker = part if self.shows_scores is None else None
        self.searcher = pipeline if searchable and starts_with_retrieval(pipeline) else None

    def rerank(self, jobs: Sequence[RerankJob]) -> list[Candidates]:
        """One reranked :class:`Candidates` per job (docids are the input positions as strings)."""
        cands = [Candidates(f"r{i}", j.query, [str(k) for k in range(len(j.texts))], list(j.texts),
                            position_scores(len(j.texts)), titles=[""] * len(j.texts))
                 for i, j in enumerate(jobs)]
        return _rerank(self.reranker.stages if isinstance(self.reranker, Pipeline) else [self.reranker], cands)

    def search(self, jobs: Sequence[SearchJob]) -> list[RankedResults]:
        """The top ``top_n`` of the whole pipeline per job. The retrieval stages run on a Ranking, the
        rerankers after them on Candidates (as :meth:`rerank`), so their ``info`` reaches the answer;
        ``info["query_tokens_cut"]`` also counts the query tokens a retriever's encoder cut."""
        queries = {f"s{i}": j.query for i, j in enumerate(jobs)}
        stages = self.searcher.compile().stages if isinstance(self.searcher, Pipeline) else [self.searcher]
        split = next((i for i, s in enumerate(stages) if isinstance(s, Reranker)), len(stages))
        if not all(isinstance(s, (Reranker, Cutoff)) for s in stages[split:]):
            split = len(stages)
        ranking = Ranking.from_queries(queries)
        for stage in stages[:split]:
            ranking = stage(ranking)
        if split < len(stages) and len(ranking):
            stages[split].check_columns(ranking)
        found = {c.qid: c for c in _rerank(stages[split:], list(ranking.per_query()) if len(ranking) else [])}
        cut = _query_tokens_cut(stages[:split], list(queries.values()))
        out = []
        for (qid, query), j, n in zip(queries.items(), jobs, cut):
            if qid not in found:
                out.append(RankedResults(query, [], {"query_tokens_cut": n} if n else {}))
                continue
            res = found[qid].top(j.top_n).to_results()
            n = max(n, res.info.get("query_tokens_cut", 0))
            out.append(replace(res, info={**res.info, "query_tokens_cut": n}) if n else res)
        return out


def _rerank(stages: Sequence[Stage], cands: list[Candidates]) -> list[Candidates]:
    """Rerankers and cut-offs run on Candidates, so every stage's info (repairs, truncations) is kept;
    a non-finite score raises :class:`NonFiniteScore`."""
    for stage in stages:
        cands = stage.rerank_checked(cands) if isinstance(stage, Reranker) else [c.top(stage.k) for c in cands]
    for c in cands:
        _check_finite(c)
    return cands


def _query_tokens_cut(stages: Sequence[Stage], queries: list[str]) -> list[int]:
    """Per query, the most tokens any encoder of ``stages`` (a dense retriever's) cuts from it."""
    cut = [0] * len(queries)
    encoders = {id(e): e for s in stages for leaf in leaves(s) if isinstance(e := getattr(leaf, "encoder", None), Encoder)}
    for encoder in encoders.values():
        cut = [max(c, n) for c, n in zip(cut, encoder.tokens_over(queries, kind="query"))]
    return cut


def _check_finite(cands: Candidates) -> None:
    """Raise :class:`NonFiniteScore` naming the first NaN or infinite score and how many there are."""
    bad = cands.non_finite()
    if len(bad):
        raise NonFiniteScore(f"the model gave {len(bad)} non-finite score(s), e.g. {cands.scores[bad[0]]} for "
                             f"documents[{cands.docids[bad[0]]}]")
