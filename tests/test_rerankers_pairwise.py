"""PRP (pairwise ranking prompting): the three variants, order debiasing, batching across queries and
answer parsing on a FakeBackend, then SmolLM2-135M on TREC-DL 2019 (marked slow)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

import rerank.prompts
from rerank import Ranking, get
from rerank.backends.fake import FakeBackend
from rerank.errors import ConfigError
from rerank.rerankers._strategies import PairSort
from rerank.rerankers.pairwise import PRP

PROMPTS = Path(rerank.prompts.__file__).parent

SHUFFLED = [3, 7, 1, 9, 0, 5, 8, 2, 6, 4]


def shown(prompt: str) -> tuple[int, int]:
    """The numbers in passages A and B of a PRP prompt."""
    a = re.search(r"Passage A: doc(\d+)", prompt).group(1)
    b = re.search(r"Passage B: doc(\d+)", prompt).group(1)
    return int(a), int(b)


def larger_wins(prompt: str, options) -> list[float]:
    a, b = shown(prompt)
    return [math.log(0.9), math.log(0.1)] if a > b else [math.log(0.1), math.log(0.9)]


def docs(numbers=SHUFFLED) -> list[str]:
    return [f"doc{n}" for n in numbers]


def ranked_numbers(res) -> list[int]:
    return [int(r.text[3:]) for r in res]


@pytest.mark.parametrize("variant, sorted_head", [("allpair", 10), ("heapsort", 3), ("sliding", 3)])
def test_variants_sort_the_head_by_preference(variant, sorted_head):
    backend = FakeBackend(score=larger_wins)
    res = PRP(backend, variant=variant, top_k=3).rerank("q", docs())
    assert ranked_numbers(res)[:sorted_head] == list(range(9, 9 - sorted_head, -1))
    assert sorted(res.docids, key=int) == [str(i) for i in range(10)]
    assert [r.score for r in res] == sorted((r.score for r in res), reverse=True)
    asked = {shown(p) for p in backend.calls}
    assert all((b, a) in asked for a, b in asked), "every pair is asked in both orders"
    assert res.info["comparisons"] * 2 == len(backend.calls) == len(asked)


def test_heapsort_tail_keeps_input_order_and_costs_fewer_comparisons():
    n = 30
    heap = PRP(FakeBackend(score=larger_wins), variant="heapsort", top_k=5).rerank("q", docs(range(n)))
    assert ranked_numbers(heap)[:5] == [29, 28, 27, 26, 25]
    assert ranked_numbers(heap)[5:] == list(range(25))
    allpair = PRP(FakeBackend(score=larger_wins), variant="allpair").rerank("q", docs(range(n)))
    assert heap.info["comparisons"] < allpair.info["comparisons"] == n * (n - 1) // 2


def test_position_bias_is_cancelled_by_asking_both_orders():
    always_a = FakeBackend(score=lambda p, o: [math.log(0.95), math.log(0.05)])
    for variant in ("allpair", "heapsort", "sliding"):
        res = PRP(always_a, variant=variant).rerank("q", docs())
        assert res.docids == [str(i) for i in range(10)], variant


def test_comparisons_of_all_queries_share_backend_calls():
    sizes: list[int] = []

    class Counting(FakeBackend):
        def score(self, prompts, options):
            sizes.append(len(prompts))
            return super().score(prompts, options)

    inp = Ranking.from_records([(q, "q", f"d{i}", -i) for q in ("a", "b") for i in range(4)])
    inp = inp.assign(text=[f"doc{n}" for n in [1, 3, 0, 2] * 2])
    out = PRP(Counting(score=larger_wins), variant="sliding", top_k=1, batch_size=64)(inp).to_pandas()
    assert sizes == [4, 4, 4]  # 3 sequential steps of one pass, both queries (x 2 orders) per call
    assert out.groupby("qid")["text"].first().tolist() == ["doc3", "doc3"]


def test_generate_method_parses_letters_and_counts_failures():
    def answer(prompt: str) -> str:
        a, b = shown(prompt)
        return "I am not sure" if 0 in (a, b) else (" A" if a > b else " B")

    res = PRP(FakeBackend(generate=answer), variant="allpair", method="generate").rerank("q", docs([2, 0, 1]))
    assert ranked_numbers(res) == [2, 0, 1]  # wins: 2 -> 1.5, 0 -> 0.5 + 0.5 (no preference), 1 -> 0.5
    assert res.info["parse"] == {"answers": 6, "valid": 2, "repaired": 4, "problems": {"empty": 4}}


def test_plans_are_plain_generators():
    def run(plan, prefer):
        try:
            request = next(plan)
            while True:
                request = plan.send([prefer(i, j) for i, j in request])
        except StopIteration as stop:
            return stop.value

    smaller_wins = lambda i, j: float(i < j)
    reverse = lambda i, j: float(i > j)
    plan = lambda variant, n, k=10: PairSort(variant=variant, top_k=k).plan(n)
    assert run(plan("allpair", 4), reverse) == [3, 2, 1, 0]
    assert run(plan("heapsort", 6, 2), reverse)[:2] == [5, 4]
    assert run(plan("sliding", 5, 5), reverse) == [4, 3, 2, 1, 0]
    assert run(plan("sliding", 5, 2), smaller_wins) == [0, 1, 2, 3, 4]
    assert run(plan("allpair", 1), reverse) == [0] and run(plan("heapsort", 0, 3), reverse) == []


def test_config_errors_and_repr(tmp_path):
    backend = FakeBackend(score=larger_wins)
    swapped = tmp_path / "swapped.yaml"  # scored, P(' B') would say "the first is better"; generated, B is the second
    swapped.write_text((PROMPTS / "pairwise__prp.yaml").read_text().replace('options: [" A", " B"]', 'options: [" B", " A"]'))
    with pytest.raises(ConfigError, match="reads option ' A' above ' B'.* the first option to mean the first document"):
        PRP(backend, prompt=str(swapped))
    with pytest.raises(ConfigError, match="choose one of"):
        PRP(backend, variant="bubble")
    with pytest.raises(ConfigError, match="paradigm"):
        PRP(backend, prompt="pointwise/yes_no")
    with pytest.raises(ConfigError, match="top_k"):
        PRP(backend, top_k=0)
    prp = get("reranker", "prp", backend=backend, variant="allpair")
    assert "variant='allpair'" in repr(prp) and prp == PRP(backend, variant="allpair")
    assert len(prp.rerank("q", [])) == 0


@pytest.mark.slow
@pytest.mark.parametrize("variant, params", [("heapsort", {"top_k": 2}), ("sliding", {"top_k": 1}),
                                             ("allpair", {"method": "generate"})])
def test_end_to_end_on_trec_dl(smollm2, dl19_top10, variant, params):
    top = dl19_top10.top(3)
    out = PRP(smollm2, variant=variant, **params)(top)
    frame = out.to_pandas()
    assert len(frame) == 6 and np.isfinite(frame["score"]).all()
    for c, before in zip(out.per_query(), top.per_query()):
        assert sorted(c.docids) == sorted(before.docids)
    assert list(frame["rank"]) == [1, 2, 3] * 2


@pytest.mark.slow
def test_prp_through_llamacpp(llamacpp_smollm2, dl19_top10):
    before_all = list(dl19_top10.top(3).per_query())
    out = PRP(llamacpp_smollm2, variant="sliding", top_k=1).rerank_many(before_all)
    for c, before in zip(out, before_all):
        assert sorted(c.docids) == sorted(before.docids) and c.info["comparisons"] == 2
