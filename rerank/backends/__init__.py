"""LLM backends: ``hf``, ``vllm``, ``llamacpp``, ``openai`` (HTTP) and ``fake``; see :mod:`rerank.backends.base`.

:func:`load_backend` turns a short spec into a backend, so pipelines and the CLI can name one:

==============================================  =====================================================
``"hf:smollm2"``                                 transformers, alias from ``rerank/models.toml``
``"vllm:Qwen/Qwen2.5-7B-Instruct"``              vLLM offline engine, hub id or folder
``"llamacpp:smollm2"``                           llama.cpp on a GGUF file
``"openai:http://127.0.0.1:8011/v1#smollm2"``    an OpenAI-compatible server (``#`` then model name)
``"openai:http://127.0.0.1:8011/v1?timeout=20"`` options after ``?``, checked against the constructor
``"openai:gpt-4o-mini"``                         model at ``$OPENAI_BASE_URL`` (no default endpoint)
``"smollm2"``                                    an alias alone: its default backend
==============================================  =====================================================

>>> parse_spec("openai:http://127.0.0.1:8011/v1#smollm2")
('openai', {'base_url': 'http://127.0.0.1:8011/v1', 'model': 'smollm2'})
>>> parse_spec("openai:http://127.0.0.1:8011/v1?timeout=20#smollm2")
('openai', {'base_url': 'http://127.0.0.1:8011/v1', 'model': 'smollm2', 'timeout': 20})
>>> parse_spec("vllm:Qwen/Qwen2.5-7B-Instruct")
('vllm', {'model': 'Qwen/Qwen2.5-7B-Instruct'})
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from rerank.backends.base import Backend, Generation, Message, Prompt, server_url
from rerank.errors import ConfigError, MissingDependency
from rerank.models import weights_stamp

__all__ = ["Backend", "Generation", "Message", "Prompt", "forget", "load_backend", "parse_spec"]


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"kind:model[?options]"`` (or ``"openai:URL[?options][#model]"``) into the registry name and
    keyword arguments, checked against the backend's constructor (:mod:`rerank.params`).

    Options are ``key=value`` pairs joined by ``&`` (``?timeout=30&concurrency=4``); values are numbers,
    ``True``/``False``/``None`` or text. A URL must be ``http://`` or ``https://`` with a valid host and port;
    anything that looks like a server address is never taken for a model name.
    """
    from rerank.models import lookup
    from rerank.params import check_arguments
    from rerank.registry import names, resolve

    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"the backend spec is empty: {spec!r}")
    kind, sep, rest = spec.partition(":")
    if not sep and kind in names("backend"):
        return kind, {}
    if not sep or kind not in names("backend"):
        alias = lookup(spec)
        if alias is None:
            raise ConfigError(f"backend spec {spec!r} is not 'kind:model' with kind in {names('backend')} "
                              "nor a model alias of rerank/models.toml")
        return alias.backend, {"model": spec}
    if _URL_SCHEME.match(rest):
        if kind != "openai":
            raise ConfigError(f"backend spec {spec!r}: only openai: takes a server URL (openai:http://HOST:PORT/v1#MODEL)")
        from rerank.backends.openai import check_base_url

        url, _, model = rest.partition("#")
        url, _, query = url.partition("?")
        params: dict[str, Any] = {"base_url": check_base_url(url, f"backend spec {spec!r}")}
        if "?" in model:
            raise ConfigError(f"backend spec {spec!r}: options go before the model: openai:URL?key=value#MODEL")
    else:
        if "#" in rest or _HOST_PORT.match(rest):
            raise ConfigError(f"backend spec {spec!r} looks like a server address without http:// or https://; "
                              "write openai:http://HOST:PORT/v1#MODEL")
        model, _, query = rest.partition("?")
        params = {}
    if model != model.strip():
        raise ConfigError(f"backend spec {spec!r}: the model name {model!r} has spaces around it")
    params.update({"model": model} if model else {})
    options = _options(query, spec)
    if clash := sorted(set(options) & set(params)):
        raise ConfigError(f"backend spec {spec!r}: {', '.join(clash)} given twice (in the spec and as an option)")
    params.update(options)
    cls = resolve("backend", kind)
    check_arguments(cls, [], params, f"backend spec {spec!r}")
    check_engine_options(cls, params, f"backend spec {spec!r}")
    return kind, params


def keyword_names(function: Callable) -> set[str]:
    """The names ``function`` takes as keyword arguments (not its ``**kwargs``)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n for n, p in inspect.signature(function).parameters.items() if p.kind in kinds}


def check_engine_options(cls: type, options: Mapping[str, Any], what: str) -> None:
    """Refuse the options of ``cls(**options)`` that its ``**kwargs`` passes on to an engine (a library
    that would swallow unknown names or fail with a TypeError) unless the engine takes them
    (``cls.engine_options()``: the engine's name and its option names) and rerank does not set them
    (``cls.rerank_sets``). Without the engine installed only the latter are checked."""
    named = keyword_names(cls.__init__)
    extra = sorted(set(options) - named)
    if not extra or not hasattr(cls, "engine_options"):
        return
    for option in extra:
        if option in cls.rerank_sets:
            raise ConfigError(f"{what}: rerank sets {option!r} itself; leave the option out")
    try:
        engine, accepted = cls.engine_options()
    except MissingDependency:
        return
    for option in extra:
        if option not in accepted:
            close = difflib.get_close_matches(option, accepted | named, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"{what}: unknown option {option!r}; {hint}options are {cls.__name__}'s "
                              f"parameters and those of {engine}")


_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HOST_PORT = re.compile(r"^(localhost|[\w-]+(\.[\w-]+)+|\[[0-9A-Fa-f:.]+\]):\d+(/|$)")


def _options(query: str, spec: str) -> dict[str, Any]:
    """``"timeout=30&guided=off"`` -> ``{"timeout": 30, "guided": "off"}``."""
    options: dict[str, Any] = {}
    for pair in query.split("&") if query else []:
        key, eq, text = pair.partition("=")
        if not eq or not key.isidentifier():
            raise ConfigError(f"backend spec {spec!r}: option {pair!r} is not key=value")
        if key in options:
            raise ConfigError(f"backend spec {spec!r}: option {key!r} is given twice")
        options[key] = _option_value(unquote(text))
    return options


def _option_value(text: str) -> Any:
    constants = {"True": True, "False": False, "None": None}
    if text in constants:
        return constants[text]
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


_LOADED: dict[tuple[str, tuple[tuple[str, Any], ...]], Backend] = {}
LOADS: Counter[str] = Counter()
"""Backends constructed by :func:`load_backend` in this process, by spec (a spec given once loads once)."""


def load_backend(spec: str | Backend, **kwargs: Any) -> Backend:
    """A backend from a spec string (see the module docstring); keyword arguments go to its constructor.

    A :class:`Backend` instance is returned unchanged (so callers accept either). The same spec and
    arguments give the same backend within a process, so rerankers that name one model share its
    weights (one vLLM engine, not one per reranker), until :meth:`Backend.close` frees it. A local
    model folder whose files changed since (:func:`~rerank.models.weights_stamp`) loads again.
    """
    if isinstance(spec, Backend):
        return spec
    from rerank.registry import get

    kind, params = parse_spec(spec)
    if kind == "openai":  # the server $OPENAI_BASE_URL names now, when the spec names none
        stamp = server_url(params.get("base_url") or kwargs.get("base_url"))
    else:
        stamp = weights_stamp(str(params.get("model", "")))  # new weights in a folder load anew
    key: tuple | None = (spec, tuple(sorted(kwargs.items())), stamp)
    try:
        hash(key)
    except TypeError:  # unhashable arguments (a dict of options): load a fresh one
        key = None
    if key is not None and key in _LOADED:
        return _LOADED[key]
    backend = get("backend", kind, **{**params, **kwargs})
    LOADS[spec] += 1
    if key is not None:
        _LOADED[key] = backend
    return backend


def loaded_backends() -> list[Backend]:
    """The backends :func:`load_backend` holds now, each once."""
    return list({id(b): b for b in _LOADED.values()}.values())


def forget(backend: Backend) -> None:
    """Drop ``backend`` from :func:`load_backend`'s table (its ``close`` calls this)."""
    for key in [k for k, b in _LOADED.items() if b is backend]:
        del _LOADED[key]
