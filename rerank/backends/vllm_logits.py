"""Exact constrained decoding inside vLLM: a logits processor that follows a :mod:`rerank.constraints` constraint.

:class:`~rerank.backends.vllm.VLLMBackend` installs it in its offline engine. A ``vllm serve`` started
with ``--logits-processors rerank.backends.vllm_logits:ConstrainedDecoding`` gets it too, and
:class:`~rerank.backends.openai.OpenAIBackend` (``guided="xargs"``) sends each constraint with its
request as ``vllm_xargs``. Requests without a constraint pass through untouched.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

try:
    from vllm.tokenizers import cached_tokenizer_from_config
except ImportError:  # vLLM before its tokenizers package (0.1x)
    from vllm.transformers_utils.tokenizer import cached_tokenizer_from_config

from rerank.backends._chat import eos_ids, hf_token_masks
from rerank.constraints import CONSTRAINT_ARG, Follower, Masks, from_spec


class ConstrainedDecoding(AdapterLogitsProcessor):
    """vLLM (v1) logits processor: each request with a constraint may only continue inside it."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool):
        super().__init__(vllm_config, device, is_pin_memory)
        self.model_config = vllm_config.model_config
        self._masks: Masks | None = None

    def is_argmax_invariant(self) -> bool:
        return False

    @property
    def masks(self) -> Masks:
        """Token masks over the model's vocabulary, under the tokenizer the engine loads (its revision and
        mode included); it loads on the first constrained request."""
        if self._masks is None:
            tokenizer = cached_tokenizer_from_config(self.model_config)
            self._masks = hf_token_masks(tokenizer, eos_ids(self.model_config.hf_config.eos_token_id, tokenizer))
        return self._masks

    def new_req_logits_processor(self, params: SamplingParams):
        spec = (params.extra_args or {}).get(CONSTRAINT_ARG)
        if spec is None:
            return None
        follower = Follower(self.masks(from_spec(json.loads(spec) if isinstance(spec, str) else spec)))

        def mask(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            blocked = torch.full_like(logits, float("-inf"))
            blocked[follower.allowed(output_ids)] = 0.0
            return logits + blocked

        return mask
