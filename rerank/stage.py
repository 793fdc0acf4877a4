"""Stages and the operators that compose them.

Every retriever and reranker is a :class:`Stage`: it maps a :class:`~rerank.types.Ranking` to a new
one. Stages compose with three operators:

* ``a >> b`` -- :class:`Pipeline`: feed ``a``'s output to ``b`` (nested pipelines are flattened);
* ``a % k``  -- ``a >> Cutoff(k)``: keep the first ``k`` candidates per query. Note that in Python
  ``%`` binds tighter than ``>>``, so ``bm25 >> ce % 10`` cuts the reranked list;
* ``a | b``  -- :class:`Fuse`: reciprocal rank fusion of both outputs. ``|`` is *fusion*, not set
  union; ``Fuse([a, b], method="wsum", norm="min-max")`` gives normalized score fusion.

A stage declares the columns it ``requires``; they are checked before any work, an empty input gives
an empty output, and the input is never modified. ``repr`` is stable (it names runs and keys caches)
and equality and hashing follow it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from rerank.encoders import lend_embeddings
from rerank.errors import ConfigError, DataError
from rerank.params import constructor_arguments, is_finite_number, is_integer, refuse_catchall
from rerank.types import RANK_COLUMNS, Query, RankedResults, Ranking, half_surrogate, is_blank

logger = logging.getLogger("rerank")

StageInput = Ranking | pd.DataFrame | str | Sequence[Query] | Mapping[str, str]


def callable_directly(transform: Callable[[Any, Ranking], Ranking]) -> Callable[[Any, StageInput], Ranking]:
    """Let a stage's ``transform`` be called directly, as PyTerrier users do, with anything a call of the
    stage takes (a DataFrame, ``{qid: text}``, an empty Ranking): such input goes through the call's
    checks and conversion first."""

    @functools.wraps(transform)
    def checked(self: Stage, inp: StageInput) -> Ranking:
        if isinstance(inp, Ranking) and len(inp) and all(c in inp.columns for c in self.requires):
            return transform(self, inp)
        return self(inp)  # converts and checks, then comes back here with a valid, non-empty Ranking

    return checked


class Stage:
    """Base class of every pipeline stage. Subclasses implement :meth:`transform`."""

    requires: ClassVar[tuple[str, ...]] = ("qid", "query")

    def __new__(cls, *args: Any, **kwargs: Any) -> Stage:
        """Refuse a class whose constructor takes ``**`` arguments that :meth:`params` cannot see."""
        if cls.params is Stage.params:
            refuse_catchall(cls, "override params()")
        return super().__new__(cls)

    def transform(self, inp: Ranking) -> Ranking:
        """Map a validated, non-empty input to a new Ranking."""
        raise NotImplementedError(f"{type(self).__name__} must implement transform()")

    # -- running ------------------------------------------------------------------------------
    def __call__(self, inp: StageInput) -> Ranking:
        ranking = as_ranking(inp)
        self.check_columns(ranking)
        if len(ranking) == 0:
            return ranking if "docid" in ranking.columns else Ranking.empty()
        return self.transform(ranking)

    def check_columns(self, ranking: Ranking) -> None:
        """DataError unless ``ranking`` has the columns this stage :attr:`requires`."""
        missing = [c for c in self.requires if c not in ranking.columns]
        if missing:
            raise DataError(f"{self!r} needs columns {list(self.requires)}; the input lacks {missing} (columns: {list(ranking.columns)})")

    def search(self, query: str, k: int = 10) -> RankedResults:
        """Answer one query: the top ``k`` results with ids, scores and text (a retriever asked for more
        than its ``num_results`` retrieves ``k``)."""
        check_query(query, "search")
        if not is_integer(k) or k < 1:
            raise ConfigError(f"k must be a positive number of results, got {k!r}")
        k = int(k)
        stage = self.with_num_results(k) if k > getattr(self, "num_results", k) and hasattr(self, "with_num_results") else self
        out = stage(Ranking.from_queries({"q": query})).top(k)
        return out.results("q") if len(out) else RankedResults(query, [])

    # -- composition --------------------------------------------------------------------------
    def __rshift__(self, other: Stage) -> Pipeline:
        return Pipeline([self, _check_stage(other)])

    def __mod__(self, k: int) -> Pipeline:
        return Pipeline([self, Cutoff(k)])

    def __or__(self, other: Stage) -> Fuse:
        return Fuse([self, _check_stage(other)])

    # -- identity -----------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Constructor arguments that differ from their defaults (drives repr, eq and hash), each read
        back from the attribute of its name (or ``_name``, or the one the class's ``kept_as`` maps it to:
        ``{"index": "index_type"}``). An argument kept under none is a
        :class:`ConfigError`: two stages built with different values would pass for one, and a run or
        cache of one would answer for the other; so is a constructor taking ``**`` arguments, when the
        stage is built. Override ``params`` when identity needs more."""
        out = {}
        for name, (p, kept) in constructor_arguments(self).items():
            if kept is None:
                raise ConfigError(f"{type(self).__name__} keeps its argument {name!r} under no attribute self.{name} "
                                  f"(or self._{name}): store it there, or override params(), so that stages built "
                                  "with other values differ")
            value = getattr(self, kept)
            if p.default is inspect.Parameter.empty or not _same(value, p.default):
                out[name] = value
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time this process meets it (a pipeline compiles per run)."""
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


class Pipeline(Stage):
    """Stages run in order; nested pipelines are flattened."""

    def __init__(self, stages: Sequence[Stage]):
        flat: list[Stage] = []
        for s in stages:
            flat.extend(s.stages if isinstance(s, Pipeline) else [_check_stage(s)])
        if not flat:
            raise ConfigError("a Pipeline needs at least one stage")
        self.stages = lend_embeddings(flat)  # E2Rank after Dense reuses its document embeddings
        self.requires = flat[0].requires

    def transform(self, inp: Ranking) -> Ranking:
        for stage in self.compile().stages:
            inp = stage(inp)
        return inp

    def check_columns(self, ranking: Ranking) -> None:
        """The first stage's check: its message names what it needs."""
        self.stages[0].check_columns(ranking)

    def compile(self) -> Pipeline:
        """Let a retriever take the cut-off that follows it as its ``num_results`` (``bm25 % 100``
        retrieves 100). The cut-off stays: a retriever given candidates rescores all of them, so
        ``bm25 % 100 >> dense % 3`` needs it to keep 3."""
        out: list[Stage] = []
        for s in self.stages:
            prev = out[-1] if out else None
            if isinstance(s, Cutoff) and prev is not None and hasattr(prev, "with_num_results"):
                if s.k > prev.num_results and len(out) == 1:  # a later retriever rescores what it is given
                    _warn_once(f"{prev!r} retrieves at most its num_results={prev.num_results} per query, fewer than "
                               f"the cut-off {s.k} keeps; give it num_results={s.k}")
                out[-1] = prev.with_num_results(min(s.k, prev.num_results))
            out.append(s)
        return Pipeline.__new_flat(out)

    @classmethod
    def __new_flat(cls, stages: list[Stage]) -> Pipeline:
        p = object.__new__(cls)
        p.stages, p.requires = stages, stages[0].requires
        return p

    def __repr__(self) -> str:
        return " >> ".join(_wrap(s) for s in self.stages)


class Cutoff(Stage):
    """Keep the first ``k`` candidates of each query."""

    requires = ("qid", "query", "docid", "score")

    def __init__(self, k: int):
        if not is_integer(k) or k < 1:
            raise ConfigError(f"a cut-off needs a positive integer, got {k!r}")
        self.k = int(k)

    @callable_directly
    def transform(self, inp: Ranking) -> Ranking:
        return inp.top(self.k)

    def __repr__(self) -> str:
        return f"Cutoff({self.k})"


_COMBINE: dict[str, Callable[[list[float]], float]] = {
    "combsum": sum, "combmnz": lambda s: sum(s) * len(s), "max": max, "min": min,
}
"""How a document's normalized scores in the rankings that hold it combine (CombSUM and CombMNZ keep
their names from the literature)."""
FUSION_METHODS = ("rrf", "wsum", *_COMBINE)
FUSION_NORMS = (None, "min-max", "max", "sum", "zmuv", "rank")
MAX_RRF_K = 10**9
"""The largest rrf ``k``: beyond it ``1 / (k + rank)`` no longer tells long rankings' ranks apart."""
_NORMS: dict[str, Callable[[np.ndarray], tuple[float, float]]] = {
    "min-max": lambda s: (s.min(), np.ptp(s)), "max": lambda s: (0.0, s.max()),
    "sum": lambda s: (s.min(), np.sum(s - s.min())), "zmuv": lambda s: (s.mean(), s.std()),
}
"""What each score norm subtracts from a query's scores and divides them by (``rank`` reads
positions only)."""


class Fuse(Stage):
    """Fuse the rankings of several stages run on the same input (see :func:`fuse`).

    ``method="rrf"`` (default, ``k=60``) is reciprocal rank fusion; ``method="wsum"`` with
    ``norm="min-max"`` is normalized score fusion (``weights`` default to equal); ``combsum``,
    ``combmnz``, ``max`` and ``min`` combine normalized scores too. Text and titles of the fused
    candidates are carried over from the inputs.
    """

    def __init__(self, stages: Sequence[Stage], method: str = "rrf", norm: str | None = None,
                 weights: Sequence[float] | None = None, k: int = 60):
        stages = _as_list(stages, "Fuse's stages", "Stages")
        weights = _check_fusion(len(stages), "stages", method, norm, weights, k)
        flat: list[Stage] = []
        for s in stages:  # a | b | c is one rrf of three rankings; score fusions nest as written
            same = isinstance(s, Fuse) and method == s.method == "rrf" and s.k == k
            flat.extend(s.stages if same else [_check_stage(s)])
        self.stages, self.method, self.norm, self.k = flat, method, norm, k
        self.weights = weights

    @callable_directly
    def transform(self, inp: Ranking) -> Ranking:
        return fuse([s(inp) for s in self.stages], self.method, self.norm, self.weights, self.k)

    def __repr__(self) -> str:
        if self.method == "rrf" and self.norm is None and self.weights is None and self.k == 60:
            return " | ".join(_wrap(s) for s in self.stages)
        extra = f", norm={self.norm!r}" if self.norm else ""
        extra += f", weights={self.weights!r}" if self.weights else ""
        extra += f", k={self.k}" if self.k != 60 else ""
        return f"Fuse([{', '.join(map(repr, self.stages))}], method={self.method!r}{extra})"


def fuse(rankings: Sequence[Ranking], method: str = "rrf", norm: str | None = None,
         weights: Sequence[float] | None = None, k: int = 60) -> Ranking:
    """Fuse rankings already computed for the same queries, as :class:`Fuse` fuses its stages'
    outputs: ``rrf`` with ``k``, or ``wsum`` of scores normalized by ``norm`` (default ``"min-max"``)
    with ``weights`` (default equal). A query some rankings lack is fused from the others. Query text,
    document text and titles are carried over (rankings that disagree on a query's text are refused).

    The methods and norms are ranx's, computed here: ranks are each ranking's own (its ties in its
    order), norms are exact at any scale, and ties in the fused scores keep the order in which the
    rankings first hold the documents.

    >>> a = Ranking.from_run({"q": {"d1": 3.0, "d2": 1.0}})
    >>> b = Ranking.from_run({"q": {"d1": 0.0, "d2": 5.0}})
    >>> fuse([a, b], method="wsum", weights=[0.75, 0.25]).to_dict()
    {'q': {'d1': 0.75, 'd2': 0.25}}
    """
    if isinstance(rankings, Ranking):
        raise ConfigError("fuse takes a list of Rankings, got one Ranking")
    rankings = _as_list(rankings, "fuse's rankings", "Rankings")
    weights = _check_fusion(len(rankings), "rankings", method, norm, weights, k)
    if not all(isinstance(r, Ranking) and "docid" in r.columns for r in rankings):
        raise ConfigError(f"fuse takes Rankings of documents, got {[_kind(r) for r in rankings]}")
    runs = [r.to_dict() for r in rankings]  # each query's documents in rank order
    qids = list(dict.fromkeys(q for run in runs for q in run))
    if not qids:
        return Ranking.empty()
    empty = [i + 1 for i, run in enumerate(runs) if not run]
    if empty:
        logger.warning("fuse: ranking %s of %d holds no documents; the others are fused", ", ".join(map(str, empty)), len(runs))
    if method == "rrf":
        runs = [{q: {d: 1 / (k + rank) for rank, d in enumerate(docs, 1)} for q, docs in run.items()} for run in runs]
    else:
        norm = norm or "min-max"
        runs = [{q: _normalized(docs, norm, f"the ranking at position {i}, query {q!r}") for q, docs in run.items()}
                for i, run in enumerate(runs)]
    equal = [1.0 / len(runs)] * len(runs)
    fused = {q: _combined([run.get(q, {}) for run in runs], method, [float(w) for w in weights or equal]) for q in qids}
    _check_finite(fused, method, norm)
    return _attach_columns(fused, rankings)


def _combined(scores: list[dict[str, float]], method: str, weights: list[float]) -> dict[str, float]:
    """One query's fused scores from each ranking's (rrf: ``1 / (k + rank)``; else normalized), in the
    order the rankings first hold the documents: rrf adds them, wsum weighs them, and the ``_COMBINE``
    methods combine those of the rankings that hold the document."""
    docs = dict.fromkeys(d for run in scores for d in run)
    if method in ("rrf", "wsum"):
        weights = weights if method == "wsum" else [1.0] * len(scores)
        return {d: sum(w * run.get(d, 0.0) for w, run in zip(weights, scores)) for d in docs}
    combine = _COMBINE[method]
    return {d: float(combine([run[d] for run in scores if d in run])) for d in docs}


def _check_fusion(n: int, what: str, method: str, norm: str | None, weights: Sequence[float] | None,
                  k: int) -> list[float] | None:
    """Refuse settings that would not fuse as asked; returns the weights as a list (None: equal)."""
    if n < 2:
        raise ConfigError(f"fusion needs at least two {what}")
    if not isinstance(method, str) or method not in FUSION_METHODS:
        raise ConfigError(f"unknown fusion method {method!r}; choose one of {tuple(FUSION_METHODS)}")
    if norm not in FUSION_NORMS:
        raise ConfigError(f"unknown fusion norm {norm!r}; choose one of {FUSION_NORMS}")
    if method == "rrf" and norm is not None:
        raise ConfigError("rrf fuses ranks, so it takes no norm (normalize with method='wsum')")
    if not is_integer(k) or not 1 <= k <= MAX_RRF_K:
        raise ConfigError(f"fusion k must be an integer >= 1 and <= {MAX_RRF_K}, got {k!r}")
    if weights is None:
        return None
    weights = [w.item() if isinstance(w, np.generic) else w  # NumPy's repr of its numbers would enter the stage's key
               for w in _as_list(weights, "fusion weights", "numbers, one per ranking")]
    if method != "wsum":
        raise ConfigError(f"weights apply to method='wsum' only, not {method!r}")
    if len(weights) != n:
        raise ConfigError(f"{len(weights)} weights given for {n} {what}")
    if not all(is_finite_number(w) and w >= 0 for w in weights) or not any(weights):
        raise ConfigError(f"fusion weights must be finite numbers >= 0, not all 0, got {weights}")
    return weights


def _as_list(value: Any, name: str, of: str) -> list:
    """``value`` (any sequence) as a list; :class:`ConfigError` naming ``name`` when it is none."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ConfigError(f"{name} must be a list of {of}, got {type(value).__name__}: {value!r}")
    return list(value)


def _normalized(docs: Mapping[str, float], norm: str, where: str) -> dict[str, float]:
    """One query's scores (best first) under ``norm``: ``rank`` gives ``1 - i/n`` by position, ties
    in the ranking's order; the score norms are exact at any scale (scaled by a power of two first,
    which they are blind to, so nothing overflows). ``max`` refuses a best score that is not positive."""
    values = np.fromiter(docs.values(), float, len(docs))
    if norm == "rank":
        out = 1 - np.arange(len(values)) / len(values)
    else:
        if norm == "max" and values.max() <= 0 and values.any():  # all zeros stay zeros: nothing is misnormalized
            raise DataError(f"{where}: norm='max' divides by the best score, which is {values.max():g} (not above 0, "
                            "e.g. log-probabilities); use norm='min-max' or 'zmuv'")
        out = normalized_scores(values, norm)
    return dict(zip(docs, out.tolist()))


def normalized_scores(values: np.ndarray, norm: str) -> np.ndarray:
    """``values`` under the score norm ``norm`` (``min-max``, ``max``, ``sum``, ``zmuv``), exact at any
    scale: scaled by a power of two first, which the norms are blind to, so nothing overflows; all
    zeros where the norm's divisor is 0.

    >>> normalized_scores(np.array([1e300, 3e300, 2e300]), "min-max").tolist()
    [0.0, 1.0, 0.5]
    """
    if values.any():
        values = np.ldexp(values, -np.frexp(np.abs(values).max())[1])
    shift, scale = _NORMS[norm](values)
    with np.errstate(over="ignore"):  # max: a score far below a tiny best one; the fused check names it
        return (values - shift) / scale if scale > 0 else np.zeros_like(values)


def _check_finite(fused: Mapping[str, Mapping[str, float]], method: str, norm: str | None) -> None:
    """Refuse a fused score that overflowed (huge finite scores or weights), naming the norm."""
    for q, docs in fused.items():
        if not all(math.isfinite(x) for x in docs.values()):
            raise DataError(f"query {q!r}: the inputs' scores overflowed under norm={norm!r} (method={method!r}), "
                            "giving non-finite fused scores; rescale the scores or weights")


def leaves(stage: Any) -> Iterator[Any]:
    """The stages inside pipelines and fusions, depth first."""
    inner = getattr(stage, "stages", None)
    if isinstance(inner, list):
        for s in inner:
            yield from leaves(s)
    else:
        yield stage


def _kind(obj: Any) -> str:
    if isinstance(obj, Ranking) and "docid" not in obj.columns:
        return "Ranking without docids"
    return type(obj).__name__


def _attach_columns(fused: Mapping[str, Mapping[str, float]], outputs: Sequence[Ranking]) -> Ranking:
    queries: dict[str, str] = {}
    for o in outputs:
        for q, text in o.queries().items():
            if text and queries.setdefault(q, text) != text:
                raise DataError(f"the rankings give query {q!r} two texts: {queries[q]!r} and {text!r}")
    rows = pd.DataFrame(
        [(q, queries.get(q, ""), d, s) for q, docs in fused.items() for d, s in docs.items()],
        columns=["qid", "query", "docid", "score"],
    )
    extra = [c for o in outputs for c in o.columns if c not in (*RANK_COLUMNS, "text", "title")]
    for column in ("text", "title", *dict.fromkeys(extra)):  # from the first ranking that has it for a document
        pools = [o.to_pandas()[["qid", "docid", column]] for o in outputs if column in o.columns]
        if pools:
            pool = pd.concat(pools).dropna(subset=[column])
            if column == "text":  # any other column: the first ranking's value (extra ones may hold lists)
                pool = pool.drop_duplicates()
                clash = pool.duplicated(["qid", "docid"])
                if clash.any():
                    qid, docid = pool.loc[clash, ["qid", "docid"]].iloc[0]
                    texts = pool.loc[(pool["qid"] == qid) & (pool["docid"] == docid), "text"].tolist()[:2]
                    raise DataError(f"the rankings give document {docid!r} two texts ({texts[0]!r:.50} and "
                                    f"{texts[1]!r:.50}); were their stages indexed on different corpora?")
            rows = rows.merge(pool.drop_duplicates(["qid", "docid"]), on=["qid", "docid"], how="left")
    return Ranking(rows)


def as_ranking(inp: StageInput) -> Ranking:
    """Accept a Ranking, a DataFrame, one query string, ``Query`` records or ``{qid: text}``."""
    if isinstance(inp, Ranking):
        return inp
    if isinstance(inp, pd.DataFrame):
        return Ranking.from_pandas(inp)
    if isinstance(inp, str):
        return Ranking.from_queries({"q": inp})
    if isinstance(inp, Mapping):
        bad = next(((k, v) for k, v in inp.items() if not isinstance(v, str) or not isinstance(k, str | int)), None)
        if bad is not None:
            raise ConfigError(f"a {{qid: query text}} mapping needs strings, got {bad[0]!r}: {bad[1]!r:.60} (for a run "
                              "of scores use Ranking.from_run)")
        return Ranking.from_queries([(str(k), v) for k, v in inp.items()])  # 1 and "1" are one qid: a clash is refused
    if isinstance(inp, bytes) or not isinstance(inp, Iterable):
        raise ConfigError(f"a stage takes a Ranking, a DataFrame, a query string, Query records or {{qid: text}}, "
                          f"got {type(inp).__name__}")
    return Ranking.from_queries([_as_query(q) for q in inp])


def check_query(query: Any, where: str) -> str:
    """``query`` when it is a string with text in it, of real characters (ConfigError, DataError)."""
    if not isinstance(query, str):
        raise ConfigError(f"{where} takes one query string, got {type(query).__name__}: {query!r:.60}")
    if is_blank(query):
        raise DataError("the query is empty")
    if half_surrogate(query):
        raise DataError("the query holds half of a surrogate pair, which is no character")
    return query


def check_query_texts(ranking: Ranking, owner: object) -> None:
    """DataError naming ``owner`` and the first query of ``ranking`` that has no text (a run read without
    its queries has none: the message says so) or holds half of a surrogate pair: a stage that reads
    queries would answer for another one."""
    texts = ranking.queries()
    empty = [q for q, t in texts.items() if not isinstance(t, str) or is_blank(t)]
    if empty and not ranking.is_query_set and len(empty) == len(texts):
        raise DataError(f"{owner!r}: {len(empty)} queries have no text (e.g. {empty[:3]}); a run read from a file "
                        "needs its queries: Ranking.read_trec(path, queries=...)")
    if empty:
        raise DataError(f"{owner!r}: query {empty[0]!r} has no text (queries without text: {len(empty)} of {len(texts)}); "
                        "give each query a text, or leave it out")
    odd = [q for q, t in texts.items() if half_surrogate(t)]
    if odd:
        raise DataError(f"{owner!r}: {len(odd)} queries hold half of a surrogate pair, which is no character (e.g. {odd[:3]})")


def _as_query(q: Any) -> Query:
    """A ``Query`` record, or a ``(qid, text)`` pair of strings."""
    if isinstance(q, Query):
        return q
    if isinstance(q, tuple | list) and len(q) == 2 and isinstance(q[0], str | int) and isinstance(q[1], str):
        return Query(str(q[0]), q[1])
    raise ConfigError(f"queries must be Query records or (qid, text) pairs, got {q!r:.60}"
                      + ("; for several query strings give {qid: text}" if isinstance(q, str) else ""))


def _check_stage(s: object) -> Stage:
    if not isinstance(s, Stage):
        raise ConfigError(f"expected a Stage, got {type(s).__name__}: {s!r}")
    return s


def _wrap(s: Stage) -> str:
    return f"({s!r})" if isinstance(s, (Pipeline, Fuse)) else repr(s)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. numpy arrays
        return a is b
