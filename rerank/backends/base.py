"""The LLM backend contract. A paradigm receives a backend; a backend knows nothing of paradigms.

Two verbs, both batched: :meth:`Backend.generate` (text) and :meth:`Backend.score` (log-probability
of each option as the continuation of each prompt). A prompt is plain text or chat messages.
A backend holds a model: :meth:`Backend.close` (or leaving a ``with`` block) frees it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from rerank.constraints import Constraint
from rerank.errors import BackendError
from rerank.models import weights_stamp
from rerank.params import check_count, constructor_arguments, refuse_catchall
from rerank.types import number_array

logger = logging.getLogger("rerank")

Message = dict[str, str]
Prompt = str | list[Message]


def prompt_text(prompt: Prompt) -> str:
    """The text of a prompt: itself, or its chat messages' contents joined by newlines."""
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


@dataclass(frozen=True)
class Generation:
    text: str
    reasoning: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


class Backend(ABC):
    """Base class of LLM backends (transformers, vLLM, llama.cpp, OpenAI-compatible HTTP)."""

    model: str
    max_context: int = 2048
    constrains: str = "no"
    """How ``generate`` honours a constraint: ``"exact"`` (token masks), ``"shape"`` (a grammar
    without the each-id-once rule) or ``"no"`` (the default: a backend must claim more itself)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'model', '?')!r})"

    def close(self) -> None:
        """Free the model (and forget it in :func:`rerank.backends.load_backend`'s table); the
        backend cannot be used afterwards. Does nothing for backends that hold nothing."""
        from rerank.backends import forget

        forget(self)

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: Sequence[str] = (), constraint: Constraint | None = None) -> list[Generation]:
        """One completion per prompt (greedy by default), inside ``constraint`` when one is given.

        Backends follow the constraint as closely as they can (see :mod:`rerank.constraints`) and
        say how in :attr:`constrains`.
        """

    @abstractmethod
    def score(self, prompts: Sequence[Prompt], options: Sequence[str]) -> np.ndarray:
        """Log-probability of each option as the continuation of each prompt; shape (prompts, options).

        The options are alternative answers: one whose tokens begin another's counts only the answers
        that stop there (``_chat.exclusive``), so P("1") leaves out P("10")."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` under the model's tokenizer."""


def check_max_new_tokens(backend: Backend, value: Any) -> None:
    """ConfigError naming ``backend`` unless ``value`` is a count of new tokens (at least 1, as
    :data:`~rerank.params.RANGES` says): every backend refuses 0 alike (llama.cpp read it as no limit,
    transformers and vLLM raised errors of their own)."""
    check_count(repr(backend), "max_new_tokens", value)


def weights_suffix(model: str | os.PathLike[str]) -> str:
    """``"@<weights_stamp>"`` for a local model file or folder, or an alias's packaged GGUF, else ``""``:
    what a backend's ``cache_id`` adds so that its cached calls never answer for other weights."""
    stamp = weights_stamp(model)
    return f"@{stamp}" if stamp else ""


def server_url(base_url: str | None) -> str:
    """An OpenAI-compatible server's URL: ``base_url``, else the one ``$OPENAI_BASE_URL`` names now, else ""
    (there is no default endpoint)."""
    return base_url or os.environ.get("OPENAI_BASE_URL", "")


def settings_suffix(settings: Mapping[str, Any]) -> str:
    """``"#<digest>"`` of the settings besides model and dtype that change a backend's answers (a chat
    template, a seed, engine options), those left at their default passed as None; ``""`` when all are."""
    given = {k: v for k, v in settings.items() if v is not None}
    if not given:
        return ""
    return "#" + hashlib.sha256(json.dumps(given, sort_keys=True, default=repr).encode()).hexdigest()[:12]


def backend_id(backend: Backend) -> str:
    """What identifies a backend's numbers: its ``cache_id`` if it has one, else its class, model (with
    :func:`weights_suffix` when it names a local file or folder, as rerank's backends add it) and a
    digest of its other constructor arguments, read back from attributes of their names (or ``_name``);
    for a class that is not rerank's own, a digest of its code too (:func:`code_suffix`).
    A backend that keeps an argument under neither gets an id of its own object only (with a warning),
    so that a call cache never answers for other settings; one whose constructor takes ``**`` arguments,
    which no attribute names, is a ConfigError."""
    code = code_suffix(type(backend))
    own = getattr(backend, "cache_id", None)
    if own:
        return own + code
    refuse_catchall(type(backend), "give it a cache_id naming every setting that changes its answers")
    settings: dict[str, Any] = {}
    for name, (_, kept) in constructor_arguments(backend).items():
        if name == "model":
            continue
        if kept is None and "_rerank_object_id" not in backend.__dict__:
            logger.warning("%s keeps its argument %r under no attribute of that name, so its cached calls are "
                           "kept for this object only; give it a cache_id naming every setting that changes "
                           "its answers", type(backend).__name__, name)
        value = None if kept is None else _named(getattr(backend, kept))
        if kept is None or _unnamed_function(value):  # a lambda's repr names an address, which Python reuses
            settings["object"] = backend.__dict__.setdefault("_rerank_object_id", uuid.uuid4().hex)
        else:
            settings[name] = value
    return f"{type(backend).__name__}:{backend.model}{_local_weights(backend)}{settings_suffix(settings)}{code}"


def _local_weights(backend: Backend) -> str:
    """:func:`weights_suffix` of the backend's model when it names a local file or folder, else ``""``;
    taken when its id is first read (the files it loaded, whatever the folder holds later)."""
    if "_rerank_weights" not in backend.__dict__:
        model = backend.model
        local = isinstance(model, str | os.PathLike) and str(model).strip() and os.path.exists(os.path.expanduser(model))
        backend.__dict__["_rerank_weights"] = weights_suffix(model) if local else ""
    return backend.__dict__["_rerank_weights"]


@cache
def code_suffix(cls: type) -> str:
    """``"~<digest>"`` of the code of a backend class that is not rerank's own (a plugin's: edited since,
    its cached calls are not answers), ``""`` for rerank's; read once per class, which is the code that runs."""
    from rerank.models import class_stamps

    stamps = class_stamps([cls])
    return "~" + hashlib.sha256(json.dumps(stamps, sort_keys=True).encode()).hexdigest()[:12] if stamps else ""


def _named(value: Any) -> Any:
    """A function defined at a module's top level as ``module.name`` (its repr names a memory address);
    anything else as itself."""
    name = getattr(value, "__qualname__", None)
    if callable(value) and name and "<" not in name and getattr(value, "__module__", None):
        return f"{value.__module__}.{name}"
    return value


def _unnamed_function(value: Any) -> bool:
    """A lambda or local function: no name that outlives it (its backend is cached for its object only)."""
    return callable(value) and not isinstance(value, str | type) and "<" in getattr(value, "__qualname__", "<")


def checked_generations(backend: Backend, made: Any, count: int) -> list[Generation]:
    """``made``, refused (:class:`BackendError` naming the backend) unless it is ``count`` Generations with text."""
    if not isinstance(made, (list, tuple)) or len(made) != count:
        got = f"{len(made)} results" if isinstance(made, (list, tuple)) else f"a {type(made).__name__}"
        raise BackendError(f"{backend!r}.generate returned {got} for {count} prompts (one Generation per prompt)")
    bad = next((g for g in made if not (isinstance(g, Generation) and isinstance(g.text, str))), None)
    if bad is not None:
        raise BackendError(f"{backend!r}.generate returned {bad!r:.80}, not a Generation with text (a str)")
    return list(made)


def checked_count(backend: Backend, made: Any, source: str, low: int = 0) -> int:
    """``made``, a number of tokens that ``backend`` gave through ``source`` (``count_tokens('...')``,
    ``max_context``), refused (:class:`BackendError` naming the backend) unless it is a whole number
    >= ``low``: a prompt's budget and the answer cap read them."""
    if isinstance(made, bool) or not isinstance(made, int | np.integer) or made < low:
        raise BackendError(f"{backend!r}.{source} gave {made!r:.40}, not a number of tokens (an int >= {low})")
    return int(made)


LOGPROB_SLACK = 1e-4
"""How far above 0 a log-probability may come from rounding (an engine's float16 or bfloat16 sums)."""


def checked_scores(backend: Backend, rows: Any, count: int, options: int) -> np.ndarray:
    """``rows`` as a float array of shape (count, options) without +inf, refused (:class:`BackendError`)
    otherwise. NaN is let through: readers count it as an invalid answer."""
    try:
        array = number_array(rows)
    except (TypeError, ValueError):
        raise BackendError(f"{backend!r}.score returned {rows!r:.80}, not numbers") from None
    if array.shape != (count, options):
        raise BackendError(f"{backend!r}.score returned shape {array.shape} for {count} prompts x {options} options")
    if np.isposinf(array).any():  # never a log-probability; kept in a cache, it would answer every later run
        raise BackendError(f"{backend!r}.score returned +inf, which is no log-probability")
    if (array > LOGPROB_SLACK).any():  # probabilities, or logits: an expected rating would read them wrongly
        raise BackendError(f"{backend!r}.score returned {array.max():.4g}, which is no log-probability (they are <= 0)")
    return array


class BackendWrapper(Backend):
    """A backend that passes calls on to ``inner`` (a call cache, a token meter): same model,
    context, constraints and identity, so wrapping never changes what a cache key or report names."""

    def __init__(self, inner: Backend):
        self.inner, self.model, self.max_context = inner, inner.model, inner.max_context

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    @property
    def cache_id(self) -> str:
        return backend_id(self.inner)

    @property
    def constrains(self) -> str:  # type: ignore[override]
        return self.inner.constrains

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)
