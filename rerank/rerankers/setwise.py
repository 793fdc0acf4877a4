"""Setwise reranking (Zhuang et al., SIGIR 2024): the model picks the most relevant document of a
small set, and a sorting algorithm built on that comparison finds the top ``k``.

* ``method="heapsort"`` -- a heap whose nodes have ``set_size - 1`` children; each comparison shows
  a parent and its children. Building the heap and extracting ``k`` documents costs about
  ``(depth + k log depth) / (set_size - 1)`` prompts.
* ``method="bubblesort"`` -- ``k`` sweeps of a set sliding from the bottom up (overlapping by the
  document carried), each sweep moving the best remaining document to the next top position.

``scoring="generate"`` parses the label the model writes; ``scoring="likelihood"`` takes the label
with the highest log-probability (``backend.score``), which never needs repair. Documents outside
the top ``k`` keep their first-stage order below them; an answer naming no document counts as
a pick of the set's document with the best first-stage rank (and is reported in ``info["parse"]``). Sets of all queries at the same step are
batched into one backend call.

>>> from rerank.backends.fake import FakeBackend
>>> pick_longest = FakeBackend(generate=lambda p: "B" if "[B] cats cats" in p else "A")
>>> Setwise(pick_longest, k=1, set_size=2).rerank("cats", ["cats", "cats cats"]).docids
['1', '0']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rerank.errors import ConfigError
from rerank.rerankers._llm import BackendSpec, LLMReranker, PromptSpec
from rerank.rerankers._parsing import LABELS, Parsed, ParseLog
from rerank.rerankers._windows import Plan, lockstep
from rerank.rerankers.listwise import finish
from rerank.types import Candidates

METHODS = ("heapsort", "bubblesort")
SCORINGS = ("generate", "likelihood")


def heapsort_plan(n: int, k: int, set_size: int) -> Plan:
    """Top-``k`` by a ``(set_size - 1)``-ary max-heap; yields candidate sets, receives the pick's index."""
    d, heap = set_size - 1, list(range(n))

    def sift_down(i: int, size: int) -> Plan:
        while True:
            group = [i] + [c for c in range(d * i + 1, d * i + d + 1) if c < size]
            if len(group) == 1:
                return
            best = group[(yield [heap[g] for g in group])]
            if best == i:
                return
            heap[i], heap[best] = heap[best], heap[i]
            i = best

    for parent in reversed(range((n - 2) // d + 1 if n > 1 else 0)):
        yield from sift_down(parent, n)
    top: list[int] = []
    for size in range(n, max(n - k, 0), -1):
        top.append(heap[0])
        if len(top) == k or size == 1:
            break
        heap[0] = heap[size - 1]
        yield from sift_down(0, size - 1)
    chosen = set(top)
    return top + [i for i in range(n) if i not in chosen]


def bubblesort_plan(n: int, k: int, set_size: int) -> Plan:
    """Top-``k`` by ``k`` bottom-up sweeps of a sliding set; yields sets, receives the pick's index."""
    order = list(range(n))
    for top in range(min(k, n - 1)):
        end = n
        while True:
            start = max(top, end - set_size)
            shown = order[start:end]
            pick = yield shown
            order.insert(start, order.pop(start + pick))
            if start == top:
                break
            end = start + 1
    return order


PLANS = {"heapsort": heapsort_plan, "bubblesort": bubblesort_plan}


class Setwise(LLMReranker):
    """Setwise top-``k`` reranker.

    Args:
        backend, prompt: as for every LLM reranker (prompt items use ``{label}``: A, B, C ...).
        method: ``"heapsort"`` or ``"bubblesort"``; scoring: ``"generate"`` or ``"likelihood"``.
        set_size: documents per prompt (2..26); k: how many top documents are sorted;
        depth: how many first-stage candidates take part.
        constrained: with ``scoring="generate"``, decode only a shown label where the backend can.
    """

    default_prompt = "setwise/pick"
    paradigms = ("setwise",)

    def __init__(self, backend: BackendSpec = "hf:smollm2", prompt: PromptSpec | None = None, *, method: str = "heapsort",
                 scoring: str = "generate", set_size: int = 4, k: int = 10, depth: int = 100, max_words: int = 100,
                 batch_size: int = 8, max_new_tokens: int | None = None, temperature: float = 0.0, progress: bool | None = None,
                 constrained: bool = True):
        if method not in METHODS:
            raise ConfigError(f"unknown setwise method {method!r}; choose one of {METHODS}")
        if scoring not in SCORINGS:
            raise ConfigError(f"unknown setwise scoring {scoring!r}; choose one of {SCORINGS}")
        if not 2 <= set_size <= len(LABELS):
            raise ConfigError(f"set_size must be between 2 and {len(LABELS)}, got {set_size}")
        if k < 1 or depth < 1:
            raise ConfigError(f"k and depth must be >= 1, got k={k}, depth={depth}")
        self.method, self.scoring, self.set_size, self.k, self.depth = method, scoring, set_size, k, depth
        self._setup(backend, prompt, max_words, batch_size, max_new_tokens, temperature, progress, constrained)


    def rerank_many(self, batch: Sequence[Candidates]) -> list[Candidates]:
        batch = list(batch)
        logs = [ParseLog() for _ in batch]
        plans = [PLANS[self.method](min(self.depth, len(c)), self.k, self.set_size) for c in batch]

        def answer(requests: list[tuple[int, list[int]]]) -> list[int]:
            prompts = [self.set_prompt(batch[i], shown) for i, shown in requests]
            parsed = self.pick(prompts, [len(shown) for _, shown in requests])
            return [_or_first_stage(logs[i].add(p), shown) for (i, shown), p in zip(requests, parsed)]

        orders = lockstep(plans, answer, self.progress, repr(self)[:40])
        return [finish(c, order, log, self.constrained_by if self.scoring == "generate" else "no")
                for c, order, log in zip(batch, orders, logs)]

    def answer_tokens(self, n: int) -> int:
        """Default output cap: a label such as ``[B]``."""
        return 4

    def set_prompt(self, cands: Candidates, shown: list[int]) -> list[dict[str, str]]:
        def item(j: int, text: str) -> dict[str, Any]:
            pos = shown[j]
            return {"index": j + 1, "label": LABELS[j], "text": text, "docid": cands.docids[pos], "score": f"{cands.scores[pos]:.2f}"}

        return self.render(cands.query, [cands.texts[p] for p in shown], item, self.token_cap(self.answer_tokens(len(shown))))

    def pick(self, prompts: list[list[dict[str, str]]], sizes: list[int]) -> list[Parsed]:
        """The index of the chosen document of each set."""
        if self.scoring == "generate":
            gens = self.generate(prompts, self.token_cap(self.answer_tokens(max(sizes))), sizes)
            return [self.parse(g, n) for g, n in zip(gens, sizes)]
        option = str(self.template.meta.get("option", "{label}"))
        out: list[Parsed] = [None] * len(prompts)  # type: ignore[list-item]
        for n in sorted(set(sizes)):
            idx = [i for i, s in enumerate(sizes) if s == n]
            rows = self.score_options([prompts[i] for i in idx], [option.format(label=LABELS[j], index=j + 1) for j in range(n)])
            for i, row in zip(idx, rows):
                out[i] = Parsed(int(row.argmax()))
        return out


def _or_first_stage(parsed: Parsed, shown: list[int]) -> int:
    """The pick; for an answer naming no document, the one the first stage ranked highest."""
    return shown.index(min(shown)) if "empty" in parsed.problems else parsed.value
