"""LLM backends: ``hf``, ``vllm``, ``llamacpp``, ``openai`` (HTTP) and ``fake``; see :mod:`rerank.backends.base`.

:func:`load_backend` turns a short spec into a backend, so pipelines and the CLI can name one:

==============================================  =====================================================
``"hf:smollm2"``                                 transformers, alias from ``rerank/models.toml``
``"vllm:Qwen/Qwen2.5-7B-Instruct"``              vLLM offline engine, hub id or folder
``"llamacpp:smollm2"``                           llama.cpp on a GGUF file
``"openai:http://127.0.0.1:8011/v1#smollm2"``    an OpenAI-compatible server (``#`` then model name)
``"openai:gpt-4o-mini"``                         model at ``$OPENAI_BASE_URL`` or OpenAI
``"smollm2"``                                    an alias alone: its default backend
==============================================  =====================================================

>>> parse_spec("openai:http://127.0.0.1:8011/v1#smollm2")
('openai', {'base_url': 'http://127.0.0.1:8011/v1', 'model': 'smollm2'})
>>> parse_spec("vllm:Qwen/Qwen2.5-7B-Instruct")
('vllm', {'model': 'Qwen/Qwen2.5-7B-Instruct'})
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rerank.backends.base import Backend, Generation, Message, Prompt
from rerank.errors import ConfigError

__all__ = ["Backend", "Generation", "Message", "Prompt", "load_backend", "parse_spec"]


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"kind:model"`` (or ``"openai:URL#model"``) into the registry name and keyword arguments."""
    from rerank.models import lookup
    from rerank.registry import names

    kind, sep, rest = spec.partition(":")
    if not sep and kind in names("backend"):
        return kind, {}
    if not sep or kind not in names("backend"):
        alias = lookup(spec)
        if alias is None:
            raise ConfigError(f"backend spec {spec!r} is not 'kind:model' with kind in {names('backend')} "
                              "nor a model alias of rerank/models.toml")
        return alias.backend, {"model": spec}
    if kind == "openai" and rest.startswith(("http://", "https://")):
        url, _, model = rest.partition("#")
        return kind, {"base_url": url, **({"model": model} if model else {})}
    return kind, ({"model": rest} if rest else {})


_LOADED: dict[tuple[str, tuple[tuple[str, Any], ...]], Backend] = {}
LOADS: Counter[str] = Counter()
"""Backends constructed by :func:`load_backend` in this process, by spec (a spec given once loads once)."""


def load_backend(spec: str | Backend, **kwargs: Any) -> Backend:
    """A backend from a spec string (see the module docstring); keyword arguments go to its constructor.

    A :class:`Backend` instance is returned unchanged (so callers accept either). The same spec and
    arguments give the same backend within a process, so rerankers that name one model share its
    weights (one vLLM engine, not one per reranker).
    """
    if isinstance(spec, Backend):
        return spec
    from rerank.registry import get

    key: tuple | None = (spec, tuple(sorted(kwargs.items())))
    try:
        hash(key)
    except TypeError:  # unhashable arguments (a dict of options): load a fresh one
        key = None
    if key is not None and key in _LOADED:
        return _LOADED[key]
    kind, params = parse_spec(spec)
    backend = get("backend", kind, **{**params, **kwargs})
    LOADS[spec] += 1
    if key is not None:
        _LOADED[key] = backend
    return backend
