"""The plugin test kit (rerank.testing) run on our own rerankers and backends."""

from __future__ import annotations

import pytest

from rerank import get
from rerank.backends.fake import FakeBackend
from rerank.registry import names, resolve
from rerank.rerankers._llm import LLMReranker
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


def even_scores(prompt: str, options: list[str]) -> list[float]:
    return [0.0] * len(options)


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
