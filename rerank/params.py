"""Checks for constructor arguments given as text (pipeline expressions, backend spec options), and
for the same arguments given in Python to a class decorated with :func:`checked`.

One path for every stage and backend: the arguments must bind to the constructor's signature,
match its type hints, and fall inside the range that :data:`RANGES` declares for parameters of
that name (a name means the same thing in every stage: ``num_results``, ``batch_size``, ``k1``, ...).
The constructor's own checks still run afterwards.

>>> from rerank.retrievers.bm25 import BM25
>>> check_arguments(BM25, [], {"k1": "abc"}, "bm25")
Traceback (most recent call last):
...
rerank.errors.ConfigError: bm25: k1 must be a number or None, got 'abc' (str)
>>> check_arguments(BM25, [], {"num_results": 0}, "bm25")
Traceback (most recent call last):
...
rerank.errors.ConfigError: bm25: num_results must be >= 1, got 0
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import math
import numbers
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from rerank.errors import ConfigError, one_of

#: Inclusive (low, high) bounds by parameter name, shared by all stages and backends; None: open.
RANGES: dict[str, tuple[float | None, float | None]] = {
    **dict.fromkeys(("num_results", "batch_size", "depth", "window", "step", "passes", "top_k", "k", "set_size",
                     "group_size", "num_input_docs", "max_words", "max_new_tokens", "doc_max_tokens",
                     "budget", "rounds", "num_anchor_queries", "num_anchor_items", "train_size", "concurrency",
                     "top_logprobs", "max_context"), (1, None)),
    **dict.fromkeys(("ef_search", "nprobe", "nlist"), (1, 2**31 - 1)),  # FAISS holds them in a C int
    "max_length": (2, None),  # an encoder's text needs 2 tokens; the cross-encoder and E2Rank ask more (checked(ranges=))
    "hnsw_m": (2, 1024),  # FAISS segfaults on 1; its graph holds 2 * hnsw_m links per vector
    **dict.fromkeys(("temperature", "think_tokens", "anchors", "seed", "max_retries", "backoff"), (0, None)),
    "n_ctx": (0, None),  # llama.cpp's context; 0: the model's own
    "k1": (0, 1000),  # BM25's tf saturation is all but gone long before 1000; huge k1 starves float32 scores to 0
    "b": (0, 1),
    "decimals": (0, 10),
}
#: Parameters that must be strictly positive (seconds).
POSITIVE = frozenset({"timeout", "probe_timeout"})
C = TypeVar("C", bound=type)


def checked(*own: str, ranges: Mapping[str, tuple[float | None, float | None]] | None = None) -> Callable[[C], C]:
    """Class decorator: ``cls(...)`` checks its arguments with :func:`check_arguments` (named by the class)
    before its constructor runs, so Python refuses what a pipeline expression refuses. ``own``: parameters
    the constructor checks itself, with a message of its own. ``ranges``: the class's own bounds for some
    parameters, in place of :data:`RANGES`'s, in Python and in expressions alike.

    >>> from rerank.retrievers.bm25 import BM25
    >>> BM25(k1=float("nan"))
    Traceback (most recent call last):
    ...
    rerank.errors.ConfigError: BM25: k1 must be a finite number, got nan
    """
    def decorate(cls: C) -> C:
        init = cls.__init__
        if ranges:
            cls._ranges = {**getattr(cls, "_ranges", RANGES), **ranges}

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            check_arguments(cls, args, kwargs, cls.__name__, skip=own)
            init(self, *args, **kwargs)

        cls.__init__ = __init__
        return cls

    return decorate


def check_arguments(cls: type, args: Sequence[Any], kwargs: Mapping[str, Any], what: str,
                    skip: Collection[str] = ()) -> None:
    """Raise :class:`ConfigError` naming ``what`` unless ``cls(*args, **kwargs)`` has well-typed, in-range
    arguments (those named in ``skip`` only need to bind)."""
    signature = inspect.signature(cls.__init__)
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError as e:
        accepted = [n for n, p in signature.parameters.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        raise ConfigError(f"{what}: bad arguments: {e}; its parameters are {', '.join(accepted)}") from None
    hints = _hints(cls.__init__)
    for name, value in list(bound.arguments.items())[1:]:
        parameter = signature.parameters[name]
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or name in skip:
            continue
        _check_type(name, value, hints.get(name, Any), what)
        _check_range(name, value, what, ranges=getattr(cls, "_ranges", RANGES))
        if name == "backend" and isinstance(value, str):
            from rerank.backends import parse_spec

            parse_spec(value)


def check_passed_on(function: Callable[..., Any], options: Mapping[str, Any], what: str) -> None:
    """ConfigError naming ``what`` for an option whose value does not match ``function``'s type hint for it:
    options a constructor passes on to a library (``llama_cpp.Llama``), which may fail on them far from
    their name (``n_batch='abc'``: a TypeError comparing text with a number)."""
    hints = _hints(function)
    for name, value in options.items():
        _check_type(name, value, hints.get(name, Any), what)


def check_fields(obj: Any, shown: Callable[[str], str] = str) -> None:
    """Check a dataclass's fields as :func:`check_arguments` checks text arguments: each value must
    match its type hint and fall inside :data:`RANGES` (for settings objects built in Python).
    Messages name a field as ``shown(name)`` (e.g. with its command-line flag)."""
    hints = class_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        _check_type(shown(f.name), value, hints.get(f.name, Any), type(obj).__name__)
        _check_range(f.name, value, type(obj).__name__, shown(f.name))


def is_integer(value: Any) -> bool:
    """True for an integer, Python's or numpy's, that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_count(what: str, name: str, value: Any, low: int | None = None) -> None:
    """ConfigError naming ``what`` unless ``value`` is an integer (not a bool) of at least ``low``
    (default: the low bound :data:`RANGES` gives ``name``)."""
    low = RANGES[name][0] if low is None else low
    if not (is_integer(value) and value >= low):
        raise ConfigError(f"{what}: {name} must be an integer >= {low}, got {value!r}")


def is_finite_number(value: Any) -> bool:
    """True for a real number (not a bool) that is finite as a float: NaN, inf and ints too large
    for a float are not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _check_type(name: str, value: Any, hint: Any, what: str) -> None:
    if _matches(value, hint):
        return
    if typing.get_origin(hint) is typing.Literal:  # a choice: named as every other choice is
        one_of(f"{what}: {name}", value, typing.get_args(hint))
    raise ConfigError(f"{what}: {name} must be {describe(hint)}, got {value!r} ({type(value).__name__})")


def _check_range(name: str, value: Any, what: str, shown: str | None = None,
                 ranges: Mapping[str, tuple[float | None, float | None]] = RANGES) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return
    low, high = ranges.get(name, (None, None))
    positive, name = name in POSITIVE, shown or name
    if not is_integer(value) and not math.isfinite(value):
        raise ConfigError(f"{what}: {name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{what}: {name} must be > 0, got {value!r}")
    if low is not None and high is not None and not low <= value <= high:
        raise ConfigError(f"{what}: {name} must be between {low} and {high}, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{what}: {name} must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{what}: {name} must be <= {high}, got {value!r}")


def constructor_arguments(obj: Any) -> dict[str, tuple[inspect.Parameter, str | None]]:
    """Each constructor argument of ``obj``'s class -> (its parameter, the attribute that keeps it:
    the class's ``kept_as[name]``, else ``name`` or ``_name``, a method of the class never counting;
    None when none does)."""
    out: dict[str, tuple[inspect.Parameter, str | None]] = {}
    renamed = getattr(type(obj), "kept_as", {})
    for name, p in inspect.signature(type(obj).__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        kept = next((a for a in (renamed.get(name), name, f"_{name}") if a and hasattr(obj, a)
                     and not inspect.isroutine(getattr(type(obj), a, None))), None)
        out[name] = (p, kept)
    return out


@functools.cache
def keyword_catchall(cls: type) -> str | None:
    """The name of the ``**`` parameter of ``cls``'s own constructor (whose arguments no identity read
    from its parameters can see), None when it has none."""
    if cls.__init__ is object.__init__:
        return None
    return next((n for n, p in inspect.signature(cls.__init__).parameters.items() if p.kind is p.VAR_KEYWORD), None)


def refuse_catchall(cls: type, remedy: str) -> None:
    """ConfigError naming ``cls`` if its constructor takes ``**`` arguments, for a class whose identity is
    read from the constructor's parameters (``remedy``: how the class could name them itself)."""
    catchall = keyword_catchall(cls)
    if catchall:
        raise ConfigError(f"{cls.__name__} takes **{catchall}, which its identity (repr, ==, caches) cannot see, so "
                          f"objects built with other values would pass for one (list the arguments, or {remedy})")


@functools.cache
def class_hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a class's fields (cached; none when they do not resolve)."""
    return _hints(cls)


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    """The type hints of ``function``; none when they do not resolve (names imported only for type
    checkers), so such a constructor is checked for argument names and ranges only."""
    try:
        return typing.get_type_hints(function)
    except Exception:
        return {}


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is typing.Annotated:
        return _matches(value, args[0])
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_integer(value)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if origin is collections.abc.Callable or hint is Callable:
        return callable(value)
    if origin is tuple:
        if not isinstance(value, tuple | list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args)))
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection):
        unordered = origin in (collections.abc.Iterable, collections.abc.Collection)  # a set or an array too
        kinds = collections.abc.Collection if unordered else list | tuple
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, kinds):
            return False
        return not args or all(_matches(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return False
        return not args or all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if isinstance(hint, type) or isinstance(origin, type):  # a class, or a generic one (os.PathLike[str])
        return isinstance(value, origin or hint)
    return True  # a hint this checker does not know: the constructor decides


def describe(hint: Any) -> str:
    """``float | None`` -> ``"a number or None"``."""
    if hint is None or hint is type(None):
        return "None"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(a) for a in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is typing.Annotated:
        return describe(args[0])
    if origin is tuple and len(args) == 2 and args[1] is not Ellipsis:
        return "a pair" + (f" of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args[0] == args[1] else "")
    if origin is tuple:
        return "a list"
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection):
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a dict"
    names = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    return f"a {getattr(hint, '__name__', str(hint))}"
