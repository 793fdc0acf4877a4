"""The reranker contract.

A :class:`Reranker` is a pipeline stage and a plain object: ``reranker.rerank(query, docs)``
returns :class:`~rerank.types.RankedResults`. Families implement one of two hooks:

* :meth:`Reranker.rerank_candidates` -- reorder one query's :class:`~rerank.types.Candidates`
  (listwise, pairwise, setwise ...); use ``cands.reordered(order)`` or ``cands.with_scores(s)``;
* :meth:`PointwiseReranker.score_pairs` -- one relevance score per (query, text) pair; batching
  across queries, length-sorted batches and sorting are done here.

A user's own reranker is one subclass (see ``tests/test_custom_reranker.py``)::

    class Overlap(PointwiseReranker):
        def score_pairs(self, queries, texts):
            return np.array([len(set(q.split()) & set(t.split())) for q, t in zip(queries, texts)], float)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from rerank._progress import progress_bar
from rerank.errors import ConfigError, ContractError, DataError
from rerank.stage import Cutoff, Pipeline, Stage, callable_directly, check_query, check_query_texts
from rerank.types import Candidates, Doc, RankedResults, Ranking, as_scores, doc_from, number_array


class Reranker(Stage):
    """Base class of rerankers: needs ``qid, query, docid, text``; writes new ``score`` and ``rank``."""

    requires = ("qid", "query", "docid", "text")
    progress: bool | None = None
    shows_scores = False
    """Whether the model is shown each document's first-stage score: ``rerank()`` then needs ``scores=``."""

    def rerank_candidates(self, cands: Candidates) -> Candidates:
        """Rerank one query's candidates; return them in the new order with new scores.

        Families that batch across queries override :meth:`rerank_many` instead; this then calls it.
        """
        if type(self).rerank_many is Reranker.rerank_many:
            raise NotImplementedError(f"{type(self).__name__} must implement rerank_candidates() or rerank_many()")
        return self.rerank_many([cands])[0]

    def rerank_many(self, batch: Sequence[Candidates]) -> list[Candidates]:
        """Rerank many queries; override to batch model calls across queries."""
        return [self.rerank_candidates(c) for c in progress_bar(batch, repr(self)[:40], self.progress, unit="query")]

    def rerank(self, query: str, docs: Iterable[Any], scores: Sequence[float] | None = None) -> RankedResults:
        """Rerank ``docs`` for ``query``: texts, :class:`Doc` records, ``(docid, text[, title])`` tuples or
        dicts with an id and a text, as :meth:`Retriever.index` takes; ``scores`` are optional first-stage
        scores, which order the documents as a pipeline's candidates are (best first, ties in input
        order). Plain-text documents get docids ``"0"``, ``"1"``, ... in input order.
        """
        check_query(query, "rerank")
        if isinstance(docs, pd.DataFrame):
            docs = docs.to_dict("records")
        if isinstance(docs, str | bytes | Mapping) or not isinstance(docs, Iterable):
            raise ConfigError(f"rerank takes a list of documents (texts, Doc records, (docid, text) tuples or dicts), "
                              f"got {type(docs).__name__}: {docs!r:.60}")
        docs = list(docs)
        if not docs:
            return RankedResults(query, [])
        owner = f"{type(self).__name__}.rerank"
        records = [doc_from(d if isinstance(d, Doc | Mapping | tuple | list) else Doc(str(i), d), owner)  # else a text
                   for i, d in enumerate(docs)]
        twice = next((docid for docid, n in Counter(d.docid for d in records).items() if n > 1), None)
        if twice is not None:
            raise DataError(f"each document needs its own docid; {twice!r} is given twice")
        if scores is None and self.shows_scores:
            raise ConfigError(f"{type(self).__name__} shows the model each document's first-stage score; pass them "
                              "as scores= (e.g. BM25's), or it would show made-up ones")
        first = _first_stage_scores(scores, len(docs)) if scores is not None else position_scores(len(docs))
        order = np.argsort(-first, kind="stable")  # best first, as a Ranking holds them: depth and ties read it
        records, first = [records[i] for i in order], first[order]
        cands = Candidates("q", query, [d.docid for d in records], [d.full_text() for d in records], first,
                           titles=[d.title for d in records])
        return self._finite(self.rerank_checked([cands]))[0].to_results()

    def check_columns(self, ranking: Ranking) -> None:
        if ranking.is_query_set:
            raise DataError(f"{self!r} reranks candidates and was given queries only; put a retriever in front "
                            "(bm25 >> reranker) or call reranker.rerank(query, docs)")
        super().check_columns(ranking)

    @callable_directly
    def transform(self, inp: Ranking) -> Ranking:
        check_query_texts(inp, self)
        return Ranking.from_candidates(self._finite(self.rerank_checked(list(inp.per_query())))).with_columns_of(inp)

    def rerank_checked(self, batch: Sequence[Candidates]) -> list[Candidates]:
        """:meth:`rerank_many`, its answer held to the contract: one Candidates per query in order, each
        with the query's documents once each, its query and each docid's text and title unchanged
        (else :class:`DataError` naming this stage), and sorted by
        score (ties keep the reranker's order) where the reranker left scores out of order, as a
        Ranking would sort them. The input is checked as it was before the call, so a reranker that
        changes its Candidates' lists in place (lower-cases the texts) is refused too."""
        batch = list(batch)
        given_batch = [_copied(c) for c in batch]
        out = self.rerank_many(batch)
        name = type(self).__name__
        if not isinstance(out, list) or len(out) != len(batch):
            got = f"{len(out)} results" if isinstance(out, (list, tuple)) else f"a {type(out).__name__}"
            raise ContractError(f"{name}.rerank_many returned {got} for {len(batch)} queries (a list of Candidates, one per query)")
        checked = []
        for given, made in zip(given_batch, out):
            if not isinstance(made, Candidates) or made.qid != given.qid:
                raise ContractError(f"{name}.rerank_many answered query {given.qid!r} with {made!r:.80} (its Candidates, in order)")
            if sorted(made.docids) != sorted(given.docids):
                lost, new = set(given.docids) - set(made.docids), set(made.docids) - set(given.docids)
                twice = {d for d, n in Counter(made.docids).items() if n > 1}
                what = ", ".join(f"{verb} {len(ids)} (e.g. {min(ids)!r})" for verb, ids in
                                 (("dropped", lost), ("added", new), ("repeated", twice)) if ids) or "repeated some"
                raise ContractError(f"{name} must return every candidate of query {given.qid!r} once; it {what} "
                                f"of its {len(given)} documents")
            _check_pairs(name, given, made)
            checked.append(replace(made, scores=_returned_scores(name, given.qid, made.scores, len(made))))
        return [c if not len(c) or (np.diff(c.scores) <= 0).all() or not np.isfinite(c.scores).all()
                else c.with_scores(c.scores) for c in checked]

    def _finite(self, batch: list[Candidates]) -> list[Candidates]:
        """``batch``, refused (DataError naming this stage, the document and the query) when a score is NaN or infinite."""
        for c in batch:
            bad = c.non_finite()
            if len(bad):
                raise DataError(f"{type(self).__name__} gave a non-finite score ({c.scores[bad[0]]}) to document "
                                f"{c.docids[bad[0]]!r} of query {c.query!r:.80} ({len(bad)} such scores)")
        return batch


def _copied(cands: Candidates) -> Candidates:
    """``cands`` with lists of their own: what a reranker was given, whatever it does to its input."""
    return replace(cands, docids=list(cands.docids), texts=list(cands.texts),
                   titles=None if cands.titles is None else list(cands.titles))


def _returned_scores(name: str, qid: str, scores: Any, n: int) -> np.ndarray:
    """The ``scores`` reranker ``name`` returned for query ``qid`` as one float per document, else
    DataError (text, booleans, None: what :func:`~rerank.types.number_array` refuses, as for score_pairs)."""
    try:
        array = number_array(scores)
    except (TypeError, ValueError):
        raise ContractError(f"{name} returned scores {scores!r:.80} for query {qid!r}, not numbers") from None
    if array.shape != (n,):
        raise ContractError(f"{name} returned scores of shape {array.shape} for the {n} documents of query {qid!r}")
    return array


def _check_pairs(name: str, given: Candidates, made: Candidates) -> None:
    """DataError naming reranker ``name`` when ``made`` changed the query of ``given``, dropped its titles
    or pairs a docid with another text or title than ``given`` does (a reranker that reordered docids but
    not texts)."""
    if made.query != given.query:
        raise ContractError(f"{name} changed the text of query {given.qid!r} ({given.query!r:.60} to {made.query!r:.60}); "
                        "a reranker returns its input's query")
    if made.titles is None and any(given.titles or ()):  # a later stage reading titles would go on without them
        raise ContractError(f"{name} returned the documents of query {given.qid!r} without their titles; a reranker keeps "
                        "them (as cands.reordered(order) and cands.with_scores(scores) do)")
    texts = dict(zip(given.docids, given.texts))
    titles = dict(zip(given.docids, given.titles)) if given.titles is not None and made.titles is not None else {}
    for docid, text, title in zip(made.docids, made.texts, made.titles or made.texts):
        what = "text" if text != texts[docid] else "title" if titles and title != titles[docid] else None
        if what:
            raise ContractError(f"{name} returned document {docid!r} of query {given.qid!r} with another {what} than it was "
                            "given; a reranker moves each document's text and title with its docid (as "
                            "cands.reordered(order) and cands.with_scores(scores) do)")


def starts_with_retrieval(pipeline: Stage) -> bool:
    """Whether the pipeline can answer a bare query (its first stage retrieves)."""
    first = pipeline.stages[0] if isinstance(pipeline, Pipeline) else pipeline
    return not isinstance(first, (Reranker, Cutoff))


def position_scores(n: int) -> np.ndarray:
    """Stand-in first-stage scores ``n, n-1, ..., 1`` of documents given without any: their input order."""
    return np.arange(n, 0, -1, dtype=np.float64)


def _first_stage_scores(scores: Any, n: int) -> np.ndarray:
    """``scores`` as one finite float per document, else DataError."""
    shape = np.shape(np.asarray(scores, dtype=object)) if not isinstance(scores, str | bytes | Mapping) else ()
    if shape != (n,):
        raise DataError(f"scores must be one number per document: {n} documents, scores of shape {shape}")
    first = as_scores(pd.Series(list(scores)), "scores").to_numpy()  # as a Ranking reads them: no booleans, no 1_000
    if not np.isfinite(first).all():
        bad = int(np.flatnonzero(~np.isfinite(first))[0])
        raise DataError(f"scores must be finite; score {bad} is {first[bad]}")
    return first


class PointwiseReranker(Reranker):
    """A reranker that scores each (query, document) pair on its own.

    Subclasses implement :meth:`score_pairs`. Pairs of all queries are scored together in batches
    of ``batch_size``, longest first (less padding), and the order is restored afterwards.
    """

    batch_size: int = 32

    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Relevance of ``texts[i]`` to ``queries[i]``; higher is more relevant."""
        raise NotImplementedError(f"{type(self).__name__} must implement score_pairs()")

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Scores of ``(query, text)`` pairs, batched and length-sorted (as CrossEncoder.predict)."""
        if not pairs:
            return np.zeros(0)
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        out = np.empty(len(pairs), dtype=np.float64)
        starts = range(0, len(order), self.batch_size)
        for s in progress_bar(starts, repr(self)[:40], self.progress, unit="batch"):
            idx = order[s : s + self.batch_size]
            made = self.score_pairs([pairs[i][0] for i in idx], [pairs[i][1] for i in idx])
            try:
                scores = number_array(made)
            except (TypeError, ValueError):
                raise ContractError(f"{type(self).__name__}.score_pairs returned {made!r:.80}, not numbers") from None
            if scores.shape != (len(idx),):
                raise ContractError(f"{type(self).__name__}.score_pairs returned shape {scores.shape} for {len(idx)} pairs")
            out[idx] = scores
        return out

    def rerank_many(self, batch: Sequence[Candidates]) -> list[Candidates]:
        scores = self.predict([(c.query, t) for c in batch for t in c.texts])
        out, start = [], 0
        for c in batch:
            out.append(c.with_scores(scores[start : start + len(c)]))
            start += len(c)
        return out
