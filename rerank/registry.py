"""Named retrievers, rerankers and backends.

Built-in entries are lazy ``"module:Class"`` strings, so ``import rerank`` imports no model code.
Other packages add entries through the entry-point group ``rerank.plugins`` (entry name
``"<kind>:<name>"``, value ``"module:Class"``); users can also decorate a class with
:func:`register`. Registering a name twice is an error, and an unknown name lists the close ones.

>>> "bm25" in names("retriever")
True
>>> get("retriever", "bm25s")
Traceback (most recent call last):
...
rerank.errors.ConfigError: unknown retriever 'bm25s'; did you mean 'bm25'? Known: anncur, bm25, dense, run
"""

from __future__ import annotations

import difflib
import importlib
import keyword
import logging
import os
import re
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, TypeVar

from rerank.errors import ConfigError

logger = logging.getLogger("rerank")

Kind = Literal["retriever", "reranker", "backend"]
KINDS: tuple[Kind, ...] = ("retriever", "reranker", "backend")
STAGES = ("retriever", "reranker")
"""Kinds an expression names: one name space, ``-`` and ``_`` alike."""
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:(?:-[A-Za-z]|_[A-Za-z0-9])[A-Za-z0-9]*)*")  # a '-' joins two names: rr-2 is rr - 2
T = TypeVar("T")

_ENTRIES: dict[str, dict[str, str | type]] = {
    "retriever": {
        "bm25": "rerank.retrievers.bm25:BM25",
        "dense": "rerank.retrievers.dense:Dense",
        "run": "rerank.retrievers.run:RunRetriever",
        "anncur": "rerank.retrievers.cur:ANNCUR",
    },
    "reranker": {
        "listwise": "rerank.rerankers.listwise:Listwise",
        "first": "rerank.rerankers.listwise:First",
        "insertrank": "rerank.rerankers.insertrank:InsertRank",
        "setwise": "rerank.rerankers.setwise:Setwise",
        "reasonrank": "rerank.rerankers.reasoning:ReasonRank",
        "rank-r1": "rerank.rerankers.reasoning:RankR1",
        "erank-think": "rerank.rerankers.reasoning:ERankThink",
        "groupwise": "rerank.rerankers.groupwise:Groupwise",
        "cross-encoder": "rerank.rerankers.cross_encoder:CrossEncoderReranker",
        "biencoder": "rerank.rerankers.biencoder:BiEncoderReranker",
        "yes-no": "rerank.rerankers.pointwise:YesNo",
        "erank": "rerank.rerankers.pointwise:ERank",
        "prp": "rerank.rerankers.pairwise:PRP",
        "e2rank": "rerank.rerankers.e2rank:E2Rank",
    },
    "backend": {
        "fake": "rerank.backends.fake:FakeBackend",
        "hf": "rerank.backends.hf:HFBackend",
        "llamacpp": "rerank.backends.llamacpp:LlamaCppBackend",
        "openai": "rerank.backends.openai:OpenAIBackend",
        "vllm": "rerank.backends.vllm:VLLMBackend",
    },
}
_plugins_loaded = False
PLUGINS_ENV = "RERANK_PLUGINS"
"""Plugins imported by :func:`import_plugin` (module names and ``.py`` files, separated by ``os.pathsep``):
the processes this one starts (Ray workers, subprocesses) import them too."""


def register(kind: Kind, name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make ``name`` resolve to the class for ``kind``."""

    def deco(cls: type[T]) -> type[T]:
        _add(kind, name, cls)
        return cls

    return deco


def get(kind: Kind, name: str, *args: Any, **params: Any) -> Any:
    """Instantiate the entry ``name`` of ``kind`` with the given arguments."""
    return resolve(kind, name)(*args, **params)


def resolve(kind: Kind, name: str) -> type:
    """The class registered as ``name`` for ``kind`` (imported on first use)."""
    table = _table(kind)
    if name not in table:
        close = difflib.get_close_matches(name, table, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown {kind} {name!r}{hint or '.'} Known: {', '.join(sorted(table))}")
    entry = table[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        try:
            loaded = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            if module.startswith("rerank."):  # a built-in: a missing extra names what to install
                raise
            raise ConfigError(f"{kind} {name!r} ({entry}) cannot be loaded: {type(e).__name__}: {e}") from None
        base = _base_class(kind)
        if not (isinstance(loaded, type) and issubclass(loaded, base)):
            raise ConfigError(f"{kind} {name!r} ({entry}) must be a subclass of {base.__module__}.{base.__name__}, got {loaded!r:.80}")
        entry = table[name] = loaded
    return entry


def names(kind: Kind) -> list[str]:
    return sorted(_table(kind))


def registered_paths(kind: Kind) -> set[str]:
    """``module:Class`` of every entry of ``kind``, imported or not."""
    return {_path(e) for e in _table(kind).values()}


def _table(kind: str) -> dict[str, str | type]:
    if kind not in _ENTRIES:
        raise ConfigError(f"unknown registry kind {kind!r}; choose one of {KINDS}")
    _load_plugins()
    return _ENTRIES[kind]


def _add(kind: str, name: str, entry: str | type) -> None:
    """Add an entry; refuse a name an expression cannot write, one that an expression would read
    as another stage's ("my-rr" and "my_rr", a reranker named like a retriever), and a class of the
    wrong kind."""
    if kind not in _ENTRIES:
        raise ConfigError(f"unknown registry kind {kind!r}; choose one of {KINDS}")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or keyword.iskeyword(name.replace("-", "_")):
        raise ConfigError(f"{kind} name {name!r} cannot be written in an expression: use letters, digits, "
                          "'-' and '_', starting with a letter, a letter after each '-', and no Python keyword")
    for other_kind in STAGES if kind in STAGES else (kind,):
        for other, other_entry in _ENTRIES[other_kind].items():
            if other.replace("-", "_") == name.replace("-", "_") and _path(other_entry) != _path(entry):
                raise ConfigError(f"{kind} {name!r} would shadow or be shadowed by the {other_kind} {other!r} "
                                  f"({other_entry!r}); choose another name")
    if kind == "backend" and (name.lower() in _URL_SCHEMES or _model_alias(name)):
        clash = (f"a URL scheme (a server address {name}://... would be read as that backend)" if name.lower() in _URL_SCHEMES
                 else f"a model alias of rerank/models.toml (the spec {name!r} would stop naming that model)")
        raise ConfigError(f"backend {name!r} is {clash}; choose another name")
    if not isinstance(entry, str):
        base = _base_class(kind)
        if not (isinstance(entry, type) and issubclass(entry, base)):
            raise ConfigError(f"{kind} {name!r} must be a subclass of {base.__module__}.{base.__name__}, got {entry!r}")
    _ENTRIES[kind][name] = entry


_URL_SCHEMES = ("http", "https", "file", "ws", "wss", "ray", "unix")


def _model_alias(name: str) -> bool:
    from rerank.models import lookup

    return lookup(name) is not None


def _path(entry: str | type) -> str:
    """``module:QualifiedName`` of an entry: a class defined again under its old name (a notebook cell run
    twice, a reloaded module) replaces its earlier self rather than clashing with it."""
    return entry if isinstance(entry, str) else f"{entry.__module__}:{entry.__qualname__}"


def _base_class(kind: str) -> type:
    if kind == "backend":
        from rerank.backends.base import Backend

        return Backend
    from rerank.stage import Stage

    return Stage


def import_plugin(spec: str) -> None:
    """Import a plugin that is not an installed package, so that its ``@register`` lines run: a module
    name (found on ``sys.path`` or in the working directory) or a ``.py`` file. The processes this one
    starts import it too (:data:`PLUGINS_ENV`); ConfigError, naming the plugin, when it cannot be imported."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a plugin is a module name or a .py file, got {spec!r}")
    path = Path(spec).expanduser()
    if os.pathsep in spec:
        raise ConfigError(f"plugin {spec!r}: a plugin's name or path cannot hold {os.pathsep!r}, which separates "
                          f"${PLUGINS_ENV}; rename it")
    if spec.endswith(".py"):
        if not path.is_file():
            raise ConfigError(f"plugin {spec!r}: no such file")
        path, module = path.resolve(), path.stem
        folder, entry = str(path.parent), str(path)
    else:
        folder, module, entry = os.getcwd(), spec, spec
    if not all(part.isidentifier() for part in module.split(".")):
        raise ConfigError(f"plugin {spec!r}: {module!r} is not a Python module name; rename it")
    _on_path(folder)
    try:
        loaded = importlib.import_module(module)
    except (Exception, SystemExit) as e:  # noqa: BLE001 -- whatever the plugin's code raises, named as the plugin's
        detail = (str(e) if isinstance(e, ConfigError) else f"it called sys.exit({e.code!r})" if isinstance(e, SystemExit)
                  else f"{type(e).__name__}: {e}")
        raise ConfigError(f"plugin {spec!r} cannot be imported: {detail}") from None
    here = path if spec.endswith(".py") else next(
        (p for p in (Path(folder) / f"{module}.py", Path(folder) / module / "__init__.py") if p.is_file()), None)
    if here is not None and Path(getattr(loaded, "__file__", "") or "").resolve() != here.resolve():
        raise ConfigError(f"plugin {spec!r}: the module name {module!r} is taken by {loaded.__file__ or 'a built-in module'}; "
                          "rename the file")
    listed = [p for p in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if p]
    if entry not in listed:
        os.environ[PLUGINS_ENV] = os.pathsep.join([*listed, entry])


def _on_path(folder: str) -> None:
    """Make modules in ``folder`` importable here and in the processes this one starts (``PYTHONPATH``)."""
    if folder not in sys.path:
        sys.path.append(folder)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if folder not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, folder])


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for spec in (p for p in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if p):
        try:
            import_plugin(spec)
        except ConfigError as e:  # as an entry point: the registry and the other plugins still load
            logger.warning("skipping %s (from $%s): %s", spec, PLUGINS_ENV, e)
    for ep in entry_points(group="rerank.plugins"):
        kind, _, name = ep.name.partition(":")
        try:
            _add(kind, name, ep.value)
        except ConfigError as e:  # one bad plugin must not hide the registry, nor the other plugins
            logger.warning("skipping plugin %r (%s): %s", ep.name, ep.value, e)
