"""Contract tests for third-party rerankers and backends (like PyTerrier's ``TransformerTestCase``).

Subclass a contract in your own test file, name the subclass ``Test...`` so pytest collects it, and
build the object under test in ``make``; every ``test_`` method of the contract then runs on it::

    from rerank.testing import RerankerContract

    class TestMyReranker(RerankerContract):
        def make(self):
            return MyReranker(batch_size=4)

rerank's own tests use the same classes (``tests/test_contracts.py``).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from rerank.backends.base import Backend, Generation, backend_id
from rerank.constraints import OneOf
from rerank.errors import DataError
from rerank.rerankers.base import position_scores
from rerank.types import Candidates, Ranking

_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


class RerankerContract:
    """What every :class:`~rerank.rerankers.base.Reranker` must do. Override :meth:`make`."""

    query = "how long does a flea live"
    docs = ["A flea lives for about three months.", "Paris is the capital of France.",
            "Fleas are small insects that feed on blood.", "Bananas are yellow."]
    other_query = "what is the capital of France"
    other_docs = ["Berlin is the capital of Germany.", "Paris is the capital of France.", "Cats sleep a lot."]
    """A second query with other documents: a batch of the two tells a reranker that mixes queries up."""

    def make(self) -> Any:
        """The reranker under test (a fresh one per call)."""
        raise NotImplementedError("subclass the contract and return your reranker from make()")

    def candidates(self, qid: str = "q1", other: bool = False) -> Candidates:
        """The candidates of :attr:`query` (``other``: of :attr:`other_query`, with docids of their own)."""
        query, docs, prefix = (self.other_query, self.other_docs, "o") if other else (self.query, self.docs, "d")
        return Candidates(qid, query, [f"{prefix}{i}" for i in range(len(docs))], list(docs), position_scores(len(docs)))

    def batch(self) -> list[Candidates]:
        return [self.candidates("a"), self.candidates("b", other=True)]

    def test_reorders_every_candidate_once_with_falling_scores(self) -> None:
        batch = self.batch()
        out = self.make().rerank_many(batch)
        assert [c.qid for c in out] == ["a", "b"]
        for given, c in zip(batch, out):
            assert sorted(c.docids) == sorted(given.docids)
            assert c.query == given.query and dict(zip(c.docids, c.texts)) == dict(zip(given.docids, given.texts)), \
                f"query {given.qid!r}: return the query as given and move each text with its docid (cands.reordered, cands.with_scores)"
            assert np.isfinite(c.scores).all() and list(c.scores) == sorted(c.scores, reverse=True)

    def test_a_batch_answers_each_query_as_alone(self) -> None:
        batch = self.batch()
        together = self.make().rerank_many(batch)
        for given, made in zip(batch, together):
            alone = self.make().rerank_many([given])[0]
            scores = dict(zip(alone.docids, alone.scores))
            assert np.allclose([scores.get(d, np.nan) for d in made.docids], made.scores, rtol=1e-4, atol=1e-5), \
                f"query {given.qid!r} is answered otherwise in a batch ({made.docids}) than alone ({alone.docids}): are queries mixed up?"

    def test_empty_input_gives_empty_output(self) -> None:
        reranker = self.make()
        assert len(reranker.rerank(self.query, [])) == 0
        assert len(reranker(Ranking.from_candidates([self.candidates()]).select([]))) == 0

    def test_one_document(self) -> None:
        assert self.make().rerank(self.query, self.docs[:1], scores=[1.0]).docids == ["0"]

    def test_input_is_not_changed(self) -> None:
        ranking = Ranking.from_candidates([self.candidates()])
        before = ranking.to_pandas().copy()
        self.make()(ranking)
        assert ranking.to_pandas().equals(before)
        batch = self.batch()
        given = [_contents(c) for c in batch]
        self.make().rerank_many(batch)
        assert [_contents(c) for c in batch] == given, "rerank_many changed the Candidates it was given in place"

    def test_empty_query_is_refused(self) -> None:
        try:
            self.make().rerank("  ", self.docs)
        except DataError:
            return
        raise AssertionError("an empty query must raise DataError")

    def test_same_input_gives_same_output(self) -> None:
        a, b = (self.make().rerank_many([self.candidates()])[0] for _ in range(2))
        assert a.docids == b.docids and np.array_equal(a.scores, b.scores), \
            f"two runs on the same input differ: {a.docids} vs {b.docids} (caches and resume rely on repeatable answers)"

    def test_identity_is_stable_and_names_no_memory_address(self) -> None:
        a, b = self.make(), self.make()
        assert repr(a) == repr(b) and a == b and hash(a) == hash(b), \
            f"two make() calls must give equal stages with one repr and hash: {a!r} vs {b!r}"
        assert not _ADDRESS.search(repr(a)), f"repr names a memory address: {a!r}"


def _contents(cands: Candidates) -> tuple:
    """What ``cands`` hold, as plain values to compare."""
    return cands.qid, cands.query, list(cands.docids), list(cands.texts), cands.scores.tolist(), cands.titles and list(cands.titles)


class BackendContract:
    """What every :class:`~rerank.backends.base.Backend` must do. Override :meth:`make`."""

    prompts = ["Is Paris in France? Answer Yes or No.", [{"role": "user", "content": "Name a colour."}]]

    def make(self) -> Backend:
        """The backend under test (may be shared: the contract does not close it)."""
        raise NotImplementedError("subclass the contract and return your backend from make()")

    def test_generate_gives_one_generation_per_prompt(self) -> None:
        backend = self.make()
        out = backend.generate(self.prompts, max_new_tokens=4)
        assert len(out) == len(self.prompts) and all(isinstance(g, Generation) and isinstance(g.text, str) for g in out)
        assert all(g.finish_reason in ("stop", "length") for g in out)
        assert backend.generate([], max_new_tokens=4) == []

    def test_scores_are_log_probabilities_one_row_per_prompt(self) -> None:
        options = [" Yes", " No", " Maybe"]
        rows = np.asarray(self.make().score(self.prompts, options), dtype=np.float64)
        assert rows.shape == (len(self.prompts), len(options)), f"shape {rows.shape}, not (prompts, options)"
        assert np.isfinite(rows).all() and (rows <= 1e-6).all(), f"log-probabilities are finite and <= 0: {rows}"

    def test_count_tokens(self) -> None:
        backend = self.make()
        count = backend.count_tokens("two words")
        assert isinstance(count, int | np.integer) and not isinstance(count, bool) and count >= 1, \
            f"count_tokens gives a whole number of tokens: {count!r}"
        assert isinstance(backend.max_context, int | np.integer) and backend.max_context > 0, \
            f"max_context is a whole number of tokens: {backend.max_context!r}"

    def test_constraints_are_honest(self) -> None:
        backend = self.make()
        assert backend.constrains in ("exact", "shape", "no")
        if backend.constrains == "exact":
            for options in ([" Yes", " No"], [" 7", " 8", " 9"]):
                for g in backend.generate(self.prompts[:1], max_new_tokens=4, constraint=OneOf(options)):
                    assert g.text in options, f"{backend!r} claims exact constraints but answered {g.text!r} to {options}"

    def test_cache_identity_is_stable(self) -> None:
        a, b = backend_id(self.make()), backend_id(self.make())
        assert a == b and not _ADDRESS.search(a), \
            f"the call cache keys on {a!r} and {b!r}: give the backend a cache_id naming every setting that changes its answers"

    def test_identity_names_no_memory_address(self) -> None:
        backend = self.make()
        assert getattr(backend, "model", None) and not _ADDRESS.search(repr(backend)), repr(backend)
