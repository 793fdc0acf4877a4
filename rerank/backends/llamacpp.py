"""llama.cpp backend through llama-cpp-python (optional: ``pip install 'rerank[llamacpp]'``).

Runs GGUF files directly (``LlamaCppBackend("smollm2")`` uses the packaged file). Chat prompts are
rendered with the chat template stored in the GGUF metadata. Scoring evaluates the prompt once and
each option after it, reusing the prompt's KV cache; logits of every position are kept for that.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from rerank._locks import model_lock
from rerank.backends import _chat, check_engine_options, keyword_names
from rerank.backends.base import (Backend, Generation, Prompt, check_max_new_tokens, settings_suffix,
                                  weights_suffix)
from rerank.constraints import Constraint, Follower, Masks, pieces_by_decoding
from rerank.errors import ConfigError, require
from rerank.models import gguf_path
from rerank.params import check_passed_on, checked

logger = logging.getLogger("rerank")

@checked()  # arguments checked as in a backend spec (n_ctx >= 0, as RANGES says)
class LlamaCppBackend(Backend):
    """A GGUF model run in-process by llama.cpp.

    Args:
        model: alias with a packaged GGUF, or a ``.gguf`` path.
        n_ctx: context length (0: the model's own); n_threads: CPU threads (default: llama.cpp's choice);
        n_gpu_layers: layers offloaded to a GPU build (-1: all); seed: sampling seed.
        chat_template: Jinja template overriding the one in the GGUF metadata.
    """

    constrains = "exact"
    rerank_sets = ("model_path", "logits_all", "verbose")

    def __init__(self, model: str = "smollm2", *, n_ctx: int = 2048, n_threads: int | None = None,
                 n_gpu_layers: int = 0, seed: int = 0, chat_template: str | None = None, **llama_kwargs: Any):
        llama_cpp = require("llama_cpp", "llamacpp")
        check_engine_options(type(self), llama_kwargs, type(self).__name__)
        check_passed_on(llama_cpp.Llama.__init__, llama_kwargs, type(self).__name__)
        if uses_amx(llama_cpp.llama_print_system_info()):
            logger.warning("this llama-cpp-python build uses AMX kernels, which crash the process on the first "
                           "evaluation on some Intel CPUs (ggml-org/llama.cpp#20824); if it crashes, build it "
                           "without them (README: LLM backends)")
        self.model = model
        self.path = gguf_path(model)
        self._weights = weights_suffix(self.path)  # the file loaded now, whatever it holds later
        self._settings = settings_suffix({"chat_template": chat_template, "seed": seed or None, **llama_kwargs})
        self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=n_threads,
                                   n_gpu_layers=n_gpu_layers, seed=seed, logits_all=True, verbose=False,
                                   **llama_kwargs)
        self.max_context = self.llm.n_ctx()  # n_ctx=0 is the model's own context
        self.chat_template = chat_template or self.llm.metadata.get("tokenizer.chat_template")
        self._llama_cpp = llama_cpp
        self._masks: Masks | None = None
        # a SentencePiece dummy prefix: "A" encodes as "▁A", which llama.cpp detokenizes as " A"
        self.dummy_space = self.llm.detokenize(self.llm.tokenize(b"A", add_bos=False, special=False)) == b" A"

    @staticmethod
    def engine_options() -> tuple[str, set[str]]:
        """What ``**llama_kwargs`` goes to, and the options it takes."""
        return "llama_cpp.Llama", keyword_names(require("llama_cpp", "llamacpp").Llama.__init__)

    def __repr__(self) -> str:
        return f"LlamaCppBackend({self.model!r})"

    def close(self) -> None:
        """Free the llama.cpp model and context."""
        super().close()
        self.llm.close()

    @property
    def cache_id(self) -> str:
        return f"llamacpp:{self.path.name}{self._weights}{self._settings}"

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=False))

    def _special(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode(errors="replace") if token >= 0 else ""

    def _encode(self, prompt: Prompt) -> list[int]:
        if _chat.is_chat(prompt):
            if not self.chat_template:
                raise ConfigError(f"{self.path.name} has no chat template; pass plain-text prompts or chat_template=")
            text = _chat.render_template(self.chat_template, prompt, self._special(self.llm.token_bos()),
                                         self._special(self.llm.token_eos()))
            ids = self.llm.tokenize(text.encode(), add_bos=False, special=True)
        else:
            ids = self.llm.tokenize(prompt.encode(), add_bos=True, special=False)
        _chat.check_length(len(ids), self.max_context, self.model, "n_ctx (0: the model's own context)")
        return ids

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: Sequence[str] = (), constraint: Constraint | None = None) -> list[Generation]:
        check_max_new_tokens(self, max_new_tokens)
        with model_lock(self.llm):  # one context and KV cache: calls from two threads take turns
            return [self._generate(p, max_new_tokens, temperature, stop, constraint) for p in prompts]

    def _generate(self, prompt: Prompt, max_new_tokens: int, temperature: float, stop: Sequence[str],
                  constraint: Constraint | None) -> Generation:
        ids = self._encode(prompt)
        sampling = {"temperature": temperature} if temperature > 0 else {"temperature": 0.0, "top_k": 1}
        if constraint is not None:
            sampling["logits_processor"] = self._mask_logits(constraint, len(ids))
        result = self.llm.create_completion(ids, max_tokens=max_new_tokens, stop=list(stop) or None, **sampling)
        choice, usage = result["choices"][0], result["usage"]
        answer, reasoning = _chat.split_reasoning(_chat.without_dummy_space(choice["text"], self.dummy_space))
        return Generation(answer, reasoning, usage["prompt_tokens"], usage["completion_tokens"],
                          "length" if choice["finish_reason"] == "length" else "stop")

    def _mask_logits(self, constraint: Constraint, prompt_length: int) -> Any:
        """A llama-cpp-python logits processor that keeps one completion inside ``constraint``."""
        if self._masks is None:
            def encode(text: str) -> list[int]:
                return self.llm.tokenize(text.encode(), add_bos=False, special=False)

            self._masks = Masks(lambda text: pieces_by_decoding(encode, self.llm.detokenize, text),
                                [self.llm.token_eos()], self.dummy_space)
        follower = Follower(self._masks(constraint))

        def mask(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            blocked = np.full_like(scores, -np.inf)
            blocked[follower.allowed(input_ids[prompt_length:].tolist())] = 0.0
            return scores + blocked

        return self._llama_cpp.LogitsProcessorList([mask])

    def score(self, prompts: Sequence[Prompt], options: Sequence[str]) -> np.ndarray:
        opts = [self.llm.tokenize(o.encode(), add_bos=False, special=False) for o in options]
        if any(not o for o in opts):
            raise ConfigError("options must be non-empty strings")
        with model_lock(self.llm):  # one context and KV cache: calls from two threads take turns
            out = np.array([self._score(p, opts) for p in prompts]).reshape(len(prompts), len(opts))
        return _chat.exclusive(out, opts)

    def _score(self, prompt: Prompt, opts: list[list[int]]) -> list[float]:
        """Log-probability of each option (token ids) after ``prompt``."""
        ids = self._encode(prompt)
        self.llm.reset()
        self.llm.eval(ids)
        last = _log_softmax(self.llm.scores[len(ids) - 1])
        out = []
        for option in opts:
            total = float(last[option[0]])
            if len(option) > 1:  # evaluate the option after the cached prompt
                self.llm.n_tokens = len(ids)
                self.llm.eval(option[:-1])
                rows = self.llm.scores[len(ids):len(ids) + len(option) - 1]
                total += sum(float(_log_softmax(r)[t]) for r, t in zip(rows, option[1:]))
            out.append(total)
        return out


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    return z - np.log(np.exp(z).sum())


def uses_amx(system_info: bytes) -> bool:
    """Whether llama.cpp's ``llama_print_system_info()`` says its CPU backend runs AMX kernels."""
    return b"AMX_INT8 = 1" in system_info
