"""Hugging Face transformers backend: batched, left-padded, greedy by default, CPU or GPU.

``HFBackend("smollm2")`` loads the alias's packaged GGUF through ``gguf_file=`` (de-quantized);
any hub id or local folder works too. Scoring reads the model's log-softmax at the option tokens;
when every option is a single token, one forward pass per prompt is enough.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rerank.backends import _chat
from rerank.backends.base import Backend, Generation, Prompt, check_max_new_tokens, weights_suffix
from rerank.constraints import Constraint, Follower, TokenMask
from rerank.errors import ConfigError, require
from rerank.models import check_device, hf_location, loading


class HFBackend(_chat.HFTokenizerPrompts, Backend):
    """A causal LM run with transformers.

    Args:
        model: alias (``rerank/models.toml``), hub id, local folder or ``.gguf`` path.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default: cuda when available.
        dtype: torch dtype name; default float32 on CPU, bfloat16 on GPU.
        batch_size: sequences per forward pass.
        max_context: longest prompt accepted; default: the model's ``max_position_embeddings``.
    """

    constrains = "exact"

    def __init__(self, model: str = "smollm2", *, device: str | None = None, dtype: str | None = None,
                 batch_size: int = 8, max_context: int | None = None, trust_remote_code: bool = False):
        torch = require("torch", "hf")
        transformers = require("transformers", "hf")
        self._torch, self._transformers = torch, transformers
        self.model, self.batch_size = model, batch_size
        self._weights = weights_suffix(model)  # the files loaded now, whatever the folder holds later
        check_device(device)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or ("float32" if self.device == "cpu" else "bfloat16")
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ConfigError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        self.dtype = dtype
        source, kwargs = hf_location(model)
        with loading("hf backend model", model, source):
            self.lm = transformers.AutoModelForCausalLM.from_pretrained(
                source, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, **kwargs)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **kwargs)
        self.lm = self.lm.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_context = max_context or getattr(self.lm.config, "max_position_embeddings", 2048)

    def __repr__(self) -> str:
        return f"HFBackend({self.model!r}, device={self.device!r}, dtype={self.dtype!r})"

    @property
    def cache_id(self) -> str:
        return f"hf:{self.model}:{self.dtype}{self._weights}"

    def close(self) -> None:
        """Drop the model's weights (and empty the CUDA cache on a GPU)."""
        super().close()
        self.lm = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def _pad(self, seqs: Sequence[list[int]]):
        torch = self._torch
        width = max(map(len, seqs))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
        return ids, mask

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: Sequence[str] = (), constraint: Constraint | None = None) -> list[Generation]:
        check_max_new_tokens(self, max_new_tokens)
        encoded = [self._encode(p) for p in prompts]
        out: list[Generation | None] = [None] * len(prompts)
        for batch in _length_batches(encoded, self.batch_size):
            ids, mask = self._pad([encoded[i] for i in batch])
            sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            extra = {"stop_strings": list(stop), "tokenizer": self.tokenizer} if stop else {}
            if constraint is not None:
                eos = _chat.eos_ids(self.lm.generation_config.eos_token_id, self.tokenizer)
                allowed = self.token_masks(eos)(constraint)
                extra["logits_processor"] = self._transformers.LogitsProcessorList(
                    [_MaskLogits(allowed, len(batch), ids.shape[1])])
            with self._torch.inference_mode():
                new = self.lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                       pad_token_id=self.tokenizer.pad_token_id, top_p=None, top_k=None,
                                       **sampling, **extra)[:, ids.shape[1]:]
            for row, i in enumerate(batch):
                tokens = [t for t in new[row].tolist() if t != self.tokenizer.pad_token_id]
                ended = len(tokens) < max_new_tokens or tokens[-1] == self.tokenizer.eos_token_id
                text, stopped = _chat.cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), stop)
                answer, reasoning = _chat.split_reasoning(text)
                out[i] = Generation(answer, reasoning, len(encoded[i]), len(tokens),
                                    "stop" if ended or stopped else "length")
        return out  # type: ignore[return-value]

    def score(self, prompts: Sequence[Prompt], options: Sequence[str]) -> np.ndarray:
        encoded = [self._encode(p) for p in prompts]
        opts = _chat.option_ids(self.tokenizer, options)
        # Every option's first token comes from one forward pass over the prompt; only options of
        # several tokens (e.g. "10" among "0".."10") need a second pass for their remaining tokens.
        out = self._next_token_logprobs(encoded, [o[0] for o in opts])
        multi = [j for j, o in enumerate(opts) if len(o) > 1]
        if multi:
            seqs = [p + opts[j] for p in encoded for j in multi]
            spans = [len(opts[j]) - 1 for _ in encoded for j in multi]
            out[:, multi] += self._continuation_logprobs(seqs, spans).reshape(len(encoded), len(multi))
        return _chat.exclusive(out, opts)

    def _forward_logprobs(self, seqs: Sequence[list[int]]):
        ids, mask = self._pad(seqs)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
        with self._torch.inference_mode():
            logits = self.lm(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        return logits.float().log_softmax(-1), ids

    def _next_token_logprobs(self, encoded: list[list[int]], tokens: list[int]) -> np.ndarray:
        out = np.empty((len(encoded), len(tokens)))
        for batch in _length_batches(encoded, self.batch_size):
            logprobs, _ = self._forward_logprobs([encoded[i] for i in batch])
            out[batch] = logprobs[:, -1, tokens].cpu().numpy()
        return out

    def _continuation_logprobs(self, seqs: list[list[int]], spans: list[int]) -> np.ndarray:
        out = np.empty(len(seqs))
        for batch in _length_batches(seqs, self.batch_size):
            logprobs, ids = self._forward_logprobs([seqs[i] for i in batch])
            width = ids.shape[1]
            for row, i in enumerate(batch):
                targets = range(width - spans[i], width)
                out[i] = sum(logprobs[row, t - 1, ids[row, t]].item() for t in targets)
        return out


class _MaskLogits:
    """A transformers logits processor: each row may only continue inside its constraint."""

    def __init__(self, mask: TokenMask, rows: int, prompt_width: int):
        self.followers = [Follower(mask) for _ in range(rows)]
        self.prompt_width = prompt_width

    def __call__(self, input_ids, scores):
        blocked = scores.new_full(scores.shape, float("-inf"))
        for row, follower in enumerate(self.followers):
            blocked[row, follower.allowed(input_ids[row, self.prompt_width:].tolist())] = 0.0
        return scores + blocked


def _length_batches(seqs: Sequence[list[int]], size: int) -> list[list[int]]:
    """Indices of ``seqs`` sorted by length and cut into batches (less padding per batch)."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    return [order[i:i + size] for i in range(0, len(order), size)]
