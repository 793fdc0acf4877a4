"""Pairwise ranking prompting (PRP, Qin et al. 2024): the LLM says which of two passages is better.

Every pair is asked in both orders (A/B and B/A) and the two answers are averaged into a
preference ``p(i over j)`` in [0, 1], which cancels the model's position bias: a model that always
answers "A" prefers nothing (0.5). With ``method="score"`` an answer is the probability of the
first option among the two; with ``method="generate"`` it is the parsed letter (an unparseable
answer counts as no preference and is reported in ``info["parse"]``).

Variants (``variant=``):

* ``"allpair"`` -- all n(n-1)/2 pairs, documents sorted by their summed preferences; one batch;
* ``"heapsort"`` -- heap sort for the first ``top_k`` positions, O(n + k log n) comparisons;
* ``"sliding"`` -- ``top_k`` bubble-sort passes from the bottom to the top (PRP-Sliding-K).

Documents below the sorted head keep their input order. The comparisons of all queries are
batched together in every round, and a pair is never asked twice for the same query.

>>> from rerank.backends.fake import FakeBackend
>>> def judge(prompt):  # a stand-in for an LLM: the passage mentioning fleas wins
...     first = prompt.split("Passage A:")[1].split("Passage B:")[0]
...     return " A" if "flea" in first else " B"
>>> prp = PRP(FakeBackend(generate=judge), variant="allpair", method="generate")
>>> prp.rerank("flea life cycle", ["Bananas are yellow.", "Paris is big.", "A flea lives 3 months."]).docids
['2', '0', '1']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from rerank.errors import ConfigError
from rerank.rerankers._llm import BackendSpec, LLMReranker, PromptSpec
from rerank.rerankers._parsing import LABELS, ParseLog
from rerank.rerankers._windows import Plan, lockstep
from rerank.types import Candidates

VARIANTS = ("allpair", "heapsort", "sliding")
METHODS = ("score", "generate")
Pair = tuple[int, int]
TIE = 1e-9
"""Preferences this close to 0.5 are ties (a model that always answers "A" gives 0.5 +- rounding)."""


class PRP(LLMReranker):
    """Pairwise ranking prompting with both orders of every pair.

    Args:
        backend: a Backend or a spec string (``"hf:smollm2"``).
        prompt: template name, YAML path or PromptTemplate (paradigm ``pairwise``; two ``item``\\ s
            labelled ``{label}`` A and B; two ``options``, the first meaning "A is better").
        variant: ``"allpair"``, ``"heapsort"`` or ``"sliding"``.
        top_k: positions sorted by ``heapsort`` and ``sliding``.
        method: ``"score"`` (option log-probs) or ``"generate"`` (parse the answer).
        max_words: each passage starts at this many words (cut shorter if a prompt does not fit).
        batch_size: prompts per backend call.
        max_new_tokens: answer length in ``"generate"`` mode (default: the template's).
        progress: show a progress bar (``None``: only in a terminal at INFO level).
        constrained: in ``"generate"`` mode, decode only the template's options where the backend can.
    """

    default_prompt: ClassVar[str] = "pairwise/prp"
    paradigms: ClassVar[tuple[str, ...]] = ("pairwise",)

    def __init__(self, backend: BackendSpec = "hf:smollm2", prompt: PromptSpec | None = None, variant: str = "heapsort",
                 top_k: int = 10, method: str = "score", max_words: int = 100, batch_size: int = 16,
                 max_new_tokens: int | None = None, progress: bool | None = None, constrained: bool = True):
        if variant not in VARIANTS:
            raise ConfigError(f"variant={variant!r}; choose one of {VARIANTS}")
        if method not in METHODS:
            raise ConfigError(f"method={method!r}; choose one of {METHODS}")
        if top_k < 1:
            raise ConfigError(f"top_k must be positive, got {top_k}")
        self.variant, self.top_k, self.method = variant, top_k, method
        self._setup(backend, prompt, max_words, batch_size, max_new_tokens, 0.0, progress, constrained)
        if method == "score" and len(self.template.options) != 2:
            raise ConfigError(f"PRP scoring needs a prompt with two options (A first), {self.template.name!r} has "
                              f"{list(self.template.options)}; add options or use method='generate'")

    # -- one query's plan -----------------------------------------------------------------------
    def _plan(self, n: int) -> Plan:
        if self.variant == "allpair":
            return allpair_plan(n)
        if self.variant == "heapsort":
            return heapsort_plan(n, self.top_k)
        return sliding_plan(n, self.top_k)

    def rerank_many(self, batch: Sequence[Candidates]) -> list[Candidates]:
        known: list[dict[Pair, float]] = [{} for _ in batch]
        logs = [ParseLog() for _ in batch]

        def answer(requests: list[tuple[int, list[Pair]]]) -> list[list[float]]:
            todo = list(dict.fromkeys((q, i, j) for q, pairs in requests for i, j in pairs
                                      if (i, j) not in known[q]))
            prefs = self._compare([(batch[q], i, j) for q, i, j in todo], [logs[q] for q, _, _ in todo])
            for (q, i, j), p in zip(todo, prefs):
                known[q][(i, j)], known[q][(j, i)] = p, 1.0 - p
            return [[known[q][pair] for pair in pairs] for q, pairs in requests]

        orders = lockstep([self._plan(len(c)) for c in batch], answer, self.progress, f"PRP-{self.variant}")
        out = []
        for c, order, seen, log in zip(batch, orders, known, logs):
            info: dict[str, Any] = {"comparisons": len(seen) // 2}
            if self.method == "generate":
                info.update(parse=log.as_dict(), constrained=self.constrained_by)
            out.append(c.reordered(order, **info))
        return out

    # -- comparisons ----------------------------------------------------------------------------
    def _compare(self, triples: Sequence[tuple[Candidates, int, int]], logs: Sequence[ParseLog]) -> list[float]:
        """``p(i over j)`` for each ``(candidates, i, j)``, from both presentation orders."""
        if not triples:
            return []
        cap = self.token_cap(8)
        prompts = []
        for c, i, j in triples:
            for a, b in ((i, j), (j, i)):
                prompts.append(self.render(c.query, [c.texts[a], c.texts[b]], _label_item, cap))
        if self.method == "score":
            logp = self.score_options(prompts, self.template.options)
            first = 1.0 / (1.0 + np.exp(logp[:, 1] - logp[:, 0]))  # P(first option | one of the two)
        else:
            first = np.array([self._vote(g, log) for g, log in zip(self.generate(prompts, cap, [2] * len(prompts)), [log for log in logs for _ in (0, 1)])])
        return ((first[0::2] + 1.0 - first[1::2]) / 2.0).tolist()

    def _vote(self, gen: Any, log: ParseLog) -> float:
        """1.0 when the answer picks the first passage, 0.0 the second, 0.5 when it names neither."""
        parsed = log.add(self.parse(gen, 2))
        return 0.5 if "empty" in parsed.problems else float(parsed.value == 0)


def _label_item(i: int, text: str) -> dict[str, Any]:
    return {"label": LABELS[i], "text": text, "index": i + 1}


# -- plans: yield a list of (i, j) pairs, receive p(i over j) for each, return the new order ------
def allpair_plan(n: int) -> Plan:
    """Ask every pair once; sort by summed preference (ties keep the input order)."""
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    prefs = (yield pairs) if pairs else []
    wins = np.zeros(n)
    for (i, j), p in zip(pairs, prefs):
        wins[i] += p
        wins[j] += 1.0 - p
    return np.argsort(-np.round(wins / TIE) * TIE, kind="stable").tolist()


def heapsort_plan(n: int, k: int) -> Plan:
    """Build a max-heap by pairwise preference and pop the best ``k``; the rest keep input order.

    Ties go to the document that came first, so a model without preferences keeps the input order.
    """
    heap = list(range(n))

    def beats(a: int, b: int):
        p = (yield [(a, b)])[0]
        return p > 0.5 + TIE or (abs(p - 0.5) <= TIE and a < b)

    def sift_down(root: int, end: int):
        while (child := 2 * root + 1) < end:
            if child + 1 < end and (yield from beats(heap[child + 1], heap[child])):
                child += 1
            if not (yield from beats(heap[child], heap[root])):
                return
            heap[root], heap[child] = heap[child], heap[root]
            root = child

    for start in range(n // 2 - 1, -1, -1):
        yield from sift_down(start, n)
    top: list[int] = []
    for end in range(n - 1, max(n - 1 - k, -1), -1):
        top.append(heap[0])
        heap[0] = heap[end]
        if len(top) < k:
            yield from sift_down(0, end)
    chosen = set(top)
    return top + [i for i in range(n) if i not in chosen]


def sliding_plan(n: int, k: int) -> Plan:
    """``k`` bubble-sort passes from the bottom up; after pass ``p`` position ``p`` is final."""
    order = list(range(n))
    for p in range(min(k, n - 1)):
        for pos in range(n - 2, p - 1, -1):
            lower, upper = order[pos + 1], order[pos]
            if (yield [(lower, upper)])[0] > 0.5 + TIE:
                order[pos], order[pos + 1] = lower, upper
    return order
