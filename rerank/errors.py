"""The exceptions rerank raises. Each message says what went wrong and what to do.

RerankError
├── ConfigError     unknown names, bad parameters, pipeline expressions that do not parse
├── DataError       missing or malformed datasets, qrels, runs, empty corpora or queries
│   └── ContractError   a reranker's answer broke its contract (lost documents, changed texts, scores that are no numbers)
├── MissingDependency   an optional package is not installed (the message names the extra)
└── BackendError    an LLM backend failed: server down, timeout, 4xx, unusable answer
    └── ParseError  a model answer that could not be parsed even after repair
"""

from __future__ import annotations


class RerankError(Exception):
    """Base class of every error rerank raises on purpose."""


class ConfigError(RerankError, ValueError):
    pass


class DataError(RerankError, ValueError):
    pass


class ContractError(DataError):
    """A reranker answered against its contract: the fault is the reranker's, not its input's (the
    service answers 500, not 422)."""


class MissingDependency(RerankError, ImportError):
    pass


class BackendError(RerankError, RuntimeError):
    pass


class InputRefused(BackendError):
    """The backend refused one input (a 4xx such as a prompt over its context length): the input is at
    fault, not the backend, so a call that merged several requests' inputs is retried per request."""


class ParseError(BackendError):
    pass


def one_line(e: BaseException | str, limit: int | None = 300) -> str:
    """An exception's message (or a text) on one line, for a message of our own: whitespace runs
    collapsed, the arguments joined when there are several strings (Ray splits its messages), the
    type's name when it is empty, cut to ``limit`` characters.

    >>> one_line(ValueError("bad\\n  value"))
    'bad value'
    """
    if isinstance(e, BaseException):
        several = len(e.args) > 1 and all(isinstance(a, str) for a in e.args)
        e = (" ".join(e.args) if several else str(e)).strip() or type(e).__name__
    text = " ".join(e.split())
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def one_of(name: str, value: object, choices: tuple) -> None:
    """Refuse ``value`` unless it is one of ``choices`` (the message names the argument and the choices)."""
    if value not in choices:
        raise ConfigError(f"{name}={value!r}; choose one of {choices}")


def require(module: str, extra: str):
    """Import ``module`` or raise :class:`MissingDependency` naming the pip extra.

    Only a missing top-level module becomes an install hint; any other import failure propagates
    unchanged, so a broken install is not mistaken for a missing one.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == module.split(".")[0]:
            raise MissingDependency(f"{module} is not installed: pip install 'rerank[{extra}]'") from e
        raise
