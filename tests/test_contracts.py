"""The plugin test kit (rerank.testing) run on our own rerankers and backends."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rerank import DataError, get
from rerank.backends.fake import FakeBackend
from rerank.registry import names, resolve
from rerank.rerankers._llm import LLMReranker
from rerank.rerankers.base import Reranker
from rerank.testing import BackendContract, RerankerContract

LLM_FAMILIES = [n for n in names("reranker") if issubclass(resolve("reranker", n), LLMReranker)]


def any_answer_fake() -> FakeBackend:
    """Answers every task with something parseable (repairs are fine: the contract checks mechanics)."""
    return FakeBackend(generate=lambda p: "1", score=lambda p, options: [-float(i) for i in range(len(options))])


@pytest.fixture(params=LLM_FAMILIES)
def family(request):
    return request.param


class TestLLMFamilies(RerankerContract):
    @pytest.fixture(autouse=True)
    def _family(self, family):
        self.name = family

    def make(self):
        return get("reranker", self.name, backend=any_answer_fake(), think_tokens=2)


class SwappedBatch(Reranker):
    """Scores each query's documents by their words in common with the next query of the batch (an off-by-one)."""

    def rerank_many(self, batch):
        queries = [c.query for c in batch[1:] + batch[:1]]
        return [c.with_scores([len(set(q.split()) & set(t.split())) for t in c.texts]) for c, q in zip(batch, queries)]


class TextsLeftBehind(Reranker):
    def rerank_candidates(self, cands):
        return replace(cands, docids=cands.docids[::-1], scores=np.arange(len(cands), 0, -1.0))


class TextsChangedInPlace(Reranker):
    def rerank_candidates(self, cands):
        cands.texts[:] = [t.upper() for t in cands.texts]
        return cands.reordered(range(len(cands))[::-1])


def failed_contract_tests(make) -> list[str]:
    kit = RerankerContract()
    kit.make = make
    failed = []
    for name in [n for n in dir(kit) if n.startswith("test_")]:
        try:
            getattr(kit, name)()
        except (AssertionError, DataError):
            failed.append(name)
    return failed


@pytest.mark.parametrize("cls, failing", [
    (SwappedBatch, ["test_a_batch_answers_each_query_as_alone"]),
    (TextsLeftBehind, ["test_input_is_not_changed", "test_reorders_every_candidate_once_with_falling_scores"]),
    (TextsChangedInPlace, ["test_input_is_not_changed", "test_one_document"]),  # passed every test (review helper-91)
])
def test_the_kit_fails_a_reranker_that_mixes_up_queries_or_texts(cls, failing):
    """Two queries of one text and one set of documents let an off-by-one batch pass every test (review helper-80)."""
    assert failed_contract_tests(cls) == failing


def even_scores(prompt: str, options: list[str]) -> list[float]:
    return [0.0] * len(options)


def test_the_kit_fails_a_backend_that_counts_tokens_in_fractions():
    """len(text) / 4 passed the kit, then every LLM family failed on it (review helper-91)."""
    class Estimating(FakeBackend):
        def count_tokens(self, text):
            return len(text) / 4

    kit = BackendContract()
    kit.make = lambda: Estimating(generate=str.upper, score=even_scores)
    with pytest.raises(AssertionError, match="whole number of tokens: 2.25"):
        kit.test_count_tokens()


class TestFakeBackend(BackendContract):
    def make(self):
        return FakeBackend(generate=str.upper, score=even_scores)


@pytest.mark.slow
class TestHFBackend(BackendContract):
    @pytest.fixture(autouse=True)
    def _model(self, smollm2):
        self.backend = smollm2

    def make(self):
        return self.backend
