"""ANNCUR: k-NN search for an expensive pairwise scorer through a CUR factorization.

Yadav et al. 2022, "Efficient Nearest Neighbor Search for Cross-Encoder Models using Matrix
Factorization" (EMNLP), with the adaptive anchor rounds of Yadav et al. 2023.

Indexing scores ``num_anchor_queries`` anchor queries against every item: ``R`` (anchors x items).
Its columns are the item embeddings. A test query is scored exactly against ``k_i`` anchor items
``I`` only; all item scores are approximated as ``s_I @ pinv(R[:, I]) @ R``. The best approximated
items are then scored exactly with what is left of the per-query ``budget`` of scorer calls, and the
exactly scored items come first in the output (the approximated rest follow, in their order).

* ``anchor_items="random"``: one fixed random set of items for every query (``pinv`` computed once);
  ``"retriever"``: the first-stage retriever's top items for the query (``first_stage``, e.g. BM25).
* ``rounds > 1``: the anchor items are chosen in rounds; after the first, each round takes the best
  approximated items not yet scored, and the approximation is recomputed (adaptive ANNCUR).
* Anchor queries: given to :meth:`ANNCUR.index` (training queries), else pseudo-queries sampled from
  the documents (a title, or the first words of the text).

The scorer is any pairwise scorer (:mod:`rerank.scorers`): a name (``"cross-encoder"``,
``"maxsim"``, ``"yes-no"``), a pointwise reranker, or ``f(query, doc) -> float``.

>>> from rerank.types import Doc
>>> def overlap(q, d): return float(len(set(q.split()) & set(d.split())))
>>> docs = [Doc(str(i), f"w{i} w{i+1} w{i+2}") for i in range(30)]
>>> cur = ANNCUR(overlap, num_anchor_queries=8, num_anchor_items=10, budget=15).index(docs)
>>> cur.search("w5 w6", k=3).docids[0] in {"4", "5"}
True
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from rerank.errors import ConfigError, DataError, one_of
from rerank.params import checked
from rerank.retrievers.base import Retriever, as_docs
from rerank.scorers import batched_scorer
from rerank.types import Doc

ANCHOR_STRATEGIES = ("random", "retriever")


@checked("num_results")  # arguments checked as in a pipeline expression; num_results by Retriever, in its words
class ANNCUR(Retriever):
    """Approximate top-k under a pairwise scorer with a fixed budget of scorer calls per query.

    Args:
        scorer: scorer name, object with ``score_pairs`` or callable ``(query, doc) -> float``.
        num_anchor_queries: rows of ``R`` (scorer calls at indexing: this times the corpus size).
        num_anchor_items: items scored exactly per query to embed it (``k_i``).
        budget: scorer calls per query in all (anchor items plus exact re-scoring); at least
            ``num_anchor_items``.
        rounds: anchor-item rounds (1: plain ANNCUR; more: adaptive).
        anchor_items: ``"random"`` or ``"retriever"`` (first round from ``first_stage``).
        first_stage: registry name of the retriever used by ``anchor_items="retriever"``.
        seed: random seed for anchor items and sampled anchor queries.
        num_results: results per query.
        progress: show a progress bar (``None``: only in a terminal at INFO level).
    """

    search_settings = ("num_anchor_items", "budget", "rounds")

    def __init__(self, scorer: Any = "cross-encoder", num_anchor_queries: int = 50, num_anchor_items: int = 50,
                 budget: int = 100, rounds: int = 1, anchor_items: str = "random", first_stage: str = "bm25",
                 seed: int = 0, num_results: int = 1000, progress: bool | None = None):
        super().__init__(num_results, progress)
        one_of("anchor_items", anchor_items, ANCHOR_STRATEGIES)
        if rounds > num_anchor_items:
            raise ConfigError(f"rounds={rounds} must be at most num_anchor_items={num_anchor_items}: each round scores an item")
        if budget < num_anchor_items:
            raise ConfigError(f"budget={budget} cannot pay for num_anchor_items={num_anchor_items} exact scores; raise it")
        from rerank import registry  # first_stage checked now (also where unread: a typo is no setting), not after scoring

        first = registry.resolve("retriever", first_stage)
        if not issubclass(first, Retriever) or issubclass(first, ANNCUR):  # 'run' indexes nothing; ANNCUR needs anchors itself
            raise ConfigError(f"first_stage={first_stage!r} is not a retriever that indexes documents on its own (bm25, dense)")
        self.scorer, self.num_anchor_queries, self.num_anchor_items = scorer, num_anchor_queries, num_anchor_items
        self.budget, self.rounds, self.anchor_items, self.first_stage, self.seed = budget, rounds, anchor_items, first_stage, seed
        self._score = batched_scorer(scorer)
        self.anchor_queries: list[str] = []
        self.matrix: np.ndarray | None = None  # R: anchor queries x items
        self._first: Retriever | None = None
        self._pinv: tuple[np.ndarray, tuple[int, ...], np.ndarray] | None = None  # (matrix, anchor items, pinv)

    def params(self) -> dict[str, Any]:
        out = super().params()
        if not isinstance(self.scorer, str):
            out["scorer"] = repr(self.scorer)
        return out

    # -- indexing ---------------------------------------------------------------------------------
    def index(self, docs: Iterable[Doc], anchor_queries: Sequence[str] | None = None) -> Self:
        """Score the anchor queries (given, else sampled from ``docs``) against every document."""
        docs = as_docs(docs, f"{self!r}")
        if anchor_queries is not None:
            if isinstance(anchor_queries, str) or not all(isinstance(q, str) for q in anchor_queries):
                raise ConfigError(f"anchor_queries must be a list of query strings, got {anchor_queries!r:.80}")
            anchor_queries = [q for q in anchor_queries if q.strip()]
            if not anchor_queries:
                raise DataError("anchor_queries is empty")
            self.anchor_queries = list(anchor_queries[: self.num_anchor_queries])
        else:
            self.anchor_queries = sample_pseudo_queries(docs, self.num_anchor_queries, self.seed)
        return super().index(docs)

    def _build(self, docs: Sequence[Doc]) -> None:
        if self.num_anchor_items > len(docs):
            raise ConfigError(f"num_anchor_items={self.num_anchor_items} exceeds the {len(docs)} documents")
        texts = [d.full_text() for d in docs]
        rows = [self._score([q] * len(texts), texts) for q in self.anchor_queries]
        self.matrix = np.asarray(rows, dtype=np.float32)
        if not np.isfinite(self.matrix).all():
            raise DataError(f"{self!r}: the scorer gave NaN or infinite scores for the anchor queries")
        if self.anchor_items == "retriever":
            from rerank import registry

            self._first = registry.get("retriever", self.first_stage).index(docs)

    # -- search -----------------------------------------------------------------------------------
    def _retrieve(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if self.num_anchor_items > len(self.docs):  # a search setting: a saved index may be read with any
            raise ConfigError(f"num_anchor_items={self.num_anchor_items} exceeds the {len(self.docs)} indexed documents")
        return [self.search_positions(q, k) for q in queries]

    def search_positions(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item positions and scores for ``query``, spending exactly ``min(budget, n)`` scorer calls."""
        texts = [d.full_text() for d in self.docs]
        n = len(texts)
        exact: dict[int, float] = {}

        def score(positions: Sequence[int]) -> None:
            new = [int(p) for p in positions if int(p) not in exact]
            exact.update(zip(new, self._score([query] * len(new), [texts[p] for p in new]).tolist()))

        sizes = [len(part) for part in np.array_split(np.arange(self.num_anchor_items), self.rounds)]
        anchors = self._first_anchors(query, sizes[0])
        score(anchors)
        approx = self._approximate(anchors, exact)
        for size in sizes[1:]:
            more = _best_unscored(approx, exact, size)
            score(more)
            anchors = [*anchors, *more]
            approx = self._approximate(anchors, exact)
        score(_best_unscored(approx, exact, min(self.budget, n) - len(exact)))
        return _merge(exact, approx, k)

    def _first_anchors(self, query: str, size: int) -> list[int]:
        if self.anchor_items == "retriever":
            positions, _ = self._first._retrieve([query], size)[0]
            chosen = [int(p) for p in positions]
            taken = set(chosen)
            shuffled = random.Random(self.seed).sample(range(len(self.docs)), len(self.docs))
            return chosen + [p for p in shuffled if p not in taken][: size - len(chosen)]  # a short list is topped up at random
        return self._random_items(size)

    def _random_items(self, size: int) -> list[int]:
        return sorted(random.Random(self.seed).sample(range(len(self.docs)), size))

    def _approximate(self, anchors: Sequence[int], exact: dict[int, float]) -> np.ndarray:
        """CUR approximation of every item's score from the exact scores of the anchor items."""
        memo = self._pinv  # kept with the matrix itself: an index built or read anew is another
        if memo is not None and memo[0] is self.matrix and memo[1] == tuple(anchors):
            pinv = memo[2]
        else:
            pinv = np.linalg.pinv(self.matrix[:, list(anchors)].astype(np.float64))  # (items I) x (anchor queries)
            if self.anchor_items == "random" and self.rounds == 1:
                self._pinv = (self.matrix, tuple(anchors), pinv)  # the same anchor items for every query: keep it
        s_anchor = np.array([exact[a] for a in anchors])
        if not np.isfinite(s_anchor).all():
            raise DataError(f"{self!r}: the scorer gave a NaN or infinite score")
        return (s_anchor @ pinv) @ self.matrix

    def _rescore(self, query: str, positions: np.ndarray) -> np.ndarray:
        return self._score([query] * len(positions), [self.docs[int(p)].full_text() for p in positions])

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        if not isinstance(self.scorer, str):
            raise ConfigError("only an ANNCUR index with a named scorer can be saved; pass scorer= by name "
                              "or save the matrix yourself (ANNCUR.matrix, ANNCUR.anchor_queries)")
        super().save(path)

    def _save_index(self, path: Path) -> None:
        np.save(path / "anchor_scores.npy", self.matrix)
        (path / "anchor_queries.json").write_text(json.dumps(self.anchor_queries), encoding="utf-8")
        if self._first is not None:
            self._first.save(path / "first_stage")

    def _load_index(self, path: Path, mmap: bool) -> None:
        self.matrix = np.load(path / "anchor_scores.npy", mmap_mode="r" if mmap else None)
        self.anchor_queries = json.loads((path / "anchor_queries.json").read_text(encoding="utf-8"))
        if self.matrix.shape != (len(self.anchor_queries), len(self.docs)):
            raise DataError(f"{path}: an anchor matrix of shape {self.matrix.shape} for {len(self.anchor_queries)} anchor "
                            f"queries and {len(self.docs)} documents; rebuild the index")
        if self.anchor_items == "retriever":
            self._first = Retriever.load(path / "first_stage", mmap=mmap)
            if self._first.corpus_fingerprint != self.corpus_fingerprint:  # both as their headers record them
                raise DataError(f"{path}/first_stage indexes other documents than the ANNCUR index; rebuild the index")


def sample_pseudo_queries(docs: Sequence[Doc], n: int, seed: int = 0, max_words: int = 16) -> list[str]:
    """``n`` pseudo-queries from random documents: the title, else the first ``max_words`` words
    (documents with neither give none)."""
    pseudo = [q for d in docs if (q := d.title.strip() or " ".join(d.text.split()[:max_words]))]
    if not pseudo:
        raise DataError("no document has a title or text to make an anchor query from; give anchor_queries")
    return random.Random(seed).sample(pseudo, min(n, len(pseudo)))


def _best_unscored(approx: np.ndarray, exact: dict[int, float], size: int) -> list[int]:
    if size <= 0:
        return []
    masked = approx.copy()
    masked[list(exact)] = -np.inf
    size = min(size, len(masked) - len(exact))
    top = np.argpartition(-masked, size - 1)[:size] if size else np.zeros(0, dtype=np.int64)
    return [int(i) for i in top[np.argsort(-masked[top], kind="stable")]]


def _merge(exact: dict[int, float], approx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exactly scored items first (by exact score), then the rest by approximate score, placed below."""
    scored = sorted(exact, key=lambda p: -exact[p])
    positions, scores = scored[:k], [exact[p] for p in scored[:k]]
    if len(positions) < k:
        rest = _best_unscored(approx, exact, k - len(positions))
        floor = min(scores) if scores else 0.0
        positions += rest
        scores += [floor - 1.0 - i for i in range(len(rest))]  # rank-preserving, below every exact score
    return np.asarray(positions, dtype=np.int64), np.asarray(scores, dtype=np.float64)
