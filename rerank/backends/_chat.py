"""Shared prompt handling for the local backends: chat rendering, token ids, reasoning split.

A chat prompt whose last message is from the assistant is *continued* (that message starts the
answer); any other chat prompt gets the generation prompt, so the answer starts a new assistant turn.

>>> split_reasoning("<think>a, then b</think> [2] > [1]")
('[2] > [1]', 'a, then b')
>>> render_template("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
...                 "{% if add_generation_prompt %}<assistant>{% endif %}",
...                 [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Answer:"}])
'<user>hi<assistant>Answer:'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from tokenizers import pre_tokenizers

from rerank.backends.base import Message, Prompt
from rerank.constraints import Masks, pieces_by_decoding
from rerank.errors import BackendError, ConfigError

THINK_END = "</think>"
CONTINUE_MARK = "RerankContinuesHere"  # letters only: no template filter (trim, escape, tojson) changes it
LOGPROB_BACKENDS = "hf, vllm, llamacpp, or openai against a vLLM or llama.cpp server"


def is_chat(prompt: Prompt) -> bool:
    if isinstance(prompt, str):
        return False
    if not prompt or not all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        raise ConfigError("a chat prompt is a non-empty list of {'role': ..., 'content': ...} messages")
    return True


def continues(messages: Sequence[Message]) -> bool:
    """True when the last message is a partial assistant answer to continue."""
    return messages[-1]["role"] == "assistant"


def render_hf(tokenizer: Any, prompt: Prompt) -> str:
    """The text of a prompt under a transformers tokenizer's chat template."""
    if not is_chat(prompt):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"model {tokenizer.name_or_path!r} has no chat template; pass plain-text prompts")
    cont = continues(prompt)
    return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=not cont,
                                         continue_final_message=cont)


def render_template(template: str, messages: Sequence[Message], bos_token: str = "", eos_token: str = "") -> str:
    """Render a Jinja chat template (as stored in GGUF metadata or tokenizer_config.json)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str):
        raise ConfigError(f"chat template: {message}")

    env.globals["raise_exception"] = raise_exception
    cont = continues(messages)
    if cont:  # mark the end of the partial answer, to cut what the template appends after it (end-of-turn markers)
        messages = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + CONTINUE_MARK}]
    text = env.from_string(template).render(messages=list(messages), add_generation_prompt=not cont,
                                            bos_token=bos_token, eos_token=eos_token)
    if cont:
        end = text.find(CONTINUE_MARK)
        if end < 0:
            raise ConfigError("chat template dropped the final assistant message; cannot continue it")
        text = text[:end]
    return text


def encode_hf(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of a prompt; a rendered chat already holds its special tokens, plain text gets them added."""
    text = render_hf(tokenizer, prompt)
    return list(tokenizer(text, add_special_tokens=not is_chat(prompt))["input_ids"])


def option_ids(tokenizer: Any, options: Sequence[str]) -> list[list[int]]:
    """Token ids of each option as a continuation (no special tokens); an empty option is an error."""
    ids = [list(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in options]
    for option, i in zip(options, ids):
        if not i:
            raise ConfigError(f"option {option!r} has no tokens; options must be non-empty strings")
    return ids


def exclusive(scores: np.ndarray, opts: Sequence[Sequence[Any]]) -> np.ndarray:
    """``scores`` (prompts x options: log-probabilities of each option's tokens ``opts``) where an option
    whose tokens begin others' counts only the answers that stop there: log(P(o) - P(nearest longer
    ones)). Without it P("1") holds all of P("10"), and "0".."10" add up to about 2."""
    opts = [tuple(o) for o in opts]
    inclusive = np.array(scores, dtype=np.float64)
    out = inclusive.copy()
    for j, o in enumerate(opts):
        longer = [m for m, x in enumerate(opts) if len(x) > len(o) and x[:len(o)] == o]
        nearest = [m for m in longer if not any(len(opts[k]) < len(opts[m]) and opts[m][:len(opts[k])] == opts[k]
                                                for k in longer)]
        if nearest:
            with np.errstate(divide="ignore", invalid="ignore"):
                left = 1 - np.exp(inclusive[:, nearest] - inclusive[:, [j]]).sum(axis=1)  # the share of P(o) that stops at o
                out[:, j] = np.where(np.isfinite(inclusive[:, j]), inclusive[:, j] + np.log(np.clip(left, 0, None)), inclusive[:, j])
    return out


def split_reasoning(text: str) -> tuple[str, str | None]:
    """``(answer, reasoning)``: the text after the last ``</think>`` and the reasoning before it."""
    if THINK_END not in text:
        return text, None
    reasoning, _, answer = text.rpartition(THINK_END)
    return answer.strip(), reasoning.replace("<think>", "", 1).strip()


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string (excluded), and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


def check_length(n_tokens: int, max_context: int, model: str, option: str = "max_context") -> None:
    """Refuse a prompt of no tokens (the model would continue nothing: raw errors, or answers read from
    padding or stale logits) or longer than the context; the message names the backend's ``option`` that sets it."""
    if n_tokens == 0:
        raise ConfigError(f"a prompt of no tokens for {model!r}: there is nothing to continue; give it text")
    if n_tokens > max_context:
        raise BackendError(f"prompt of {n_tokens} tokens exceeds the context of {model!r} ({max_context}); "
                           f"shorten the passages (Backend.count_tokens) or raise {option}")


def eos_ids(configured: int | Sequence[int] | None, tokenizer: Any) -> list[int]:
    """Ids that end a generation: a model config's ``eos_token_id`` (one id, a list or None) and the tokenizer's."""
    ids = [] if configured is None else [configured] if isinstance(configured, int) else list(configured)
    return ids + [tokenizer.eos_token_id]


_BYTE_LEVEL = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def byte_level_bytes(tokens: Sequence[str], text: str) -> list[bytes] | None:
    """Each token's bytes under a byte-level BPE tokenizer (GPT-2 style: its tokens spell the text's UTF-8 bytes
    in a 256-character alphabet, one character a byte); None when ``tokens`` do not spell ``text`` that way."""
    if "".join(tokens) != _BYTE_LEVEL.pre_tokenize_str(text)[0][0]:
        return None
    data, at, out = text.encode(), 0, []
    for token in tokens:
        out.append(data[at:at + len(token)])
        at += len(token)
    return out


def sentencepiece_bytes(tokens: Sequence[str], text: str) -> list[bytes] | None:
    """Each token's bytes inside a text under a SentencePiece tokenizer with byte fallback (Llama, Mistral,
    Gemma): ``<0xE5>`` is that byte, any other token its text with ``▁`` as a space, also the dummy-prefix space
    that such a tokenizer puts before the text (:func:`dummy_space`). None when ``tokens`` do not spell ``text``
    (or that space and ``text``) that way."""
    out = [bytes([int(m[1], 16)]) if (m := _BYTE_TOKEN.fullmatch(t)) else t.replace("▁", " ").encode()
           for t in tokens]
    return out if b"".join(out) in (text.encode(), b" " + text.encode()) else None


def hf_token_bytes(tokenizer: Any, text: str) -> list[tuple[int, bytes]]:
    """``(token id, bytes)`` pairs of ``text`` under a Hugging Face tokenizer, each token's bytes inside a text.

    Byte-level BPE and SentencePiece byte-fallback tokenizers give each token's exact bytes, also of a token
    that holds part of a character; other tokenizers' tokens get the bytes of their decoded text.
    """

    def encode(part: str) -> list[int]:
        return tokenizer(part, add_special_tokens=False)["input_ids"]

    ids = encode(text)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    for exact in (byte_level_bytes, sentencepiece_bytes):
        found = exact(tokens, text)
        if found is not None:
            return list(zip(ids, found))
    return pieces_by_decoding(encode, lambda prefix: tokenizer.decode(prefix).encode(), text)


def dummy_space(tokenizer: Any) -> bool:
    """True when a Hugging Face tokenizer puts a space before the text it encodes and drops it when decoding
    (SentencePiece's dummy prefix: Llama, Mistral), so the first generated ``"▁A"`` decodes as ``"A"``."""
    pairs = hf_token_bytes(tokenizer, "A")
    return b"".join(p for _, p in pairs) == b" A" and tokenizer.decode([t for t, _ in pairs]) == "A"


def without_dummy_space(text: str, dummy: bool) -> str:
    """A generated text as transformers decodes the generated ids alone: where the tokenizer has a dummy
    prefix (:func:`dummy_space`), the space that its first token carries is not part of the answer. Engines
    that decode after the prompt (vLLM, llama.cpp) keep it; constraint masks read answers without it."""
    return text[1:] if dummy and text.startswith(" ") else text


def hf_token_masks(tokenizer: Any, eos: Iterable[int]) -> Masks:
    """Constraint token masks over a Hugging Face tokenizer's vocabulary, answers read as its decoder reads
    the generated ids alone (without a dummy-prefix space)."""
    return Masks(lambda text: hf_token_bytes(tokenizer, text), eos, dummy_space(tokenizer))


class HFTokenizerPrompts:
    """Token counting, prompt encoding and constraint masks for backends that hold a Hugging Face ``tokenizer``."""

    tokenizer: Any
    max_context: int
    context_option = "max_context"  # the constructor's option that sets max_context
    model: str
    _masks: Masks | None = None

    def token_masks(self, eos: Iterable[int]) -> Masks:
        """Token masks of constraints over this tokenizer's vocabulary (built once, then kept)."""
        if self._masks is None:
            self._masks = hf_token_masks(self.tokenizer, eos)
        return self._masks

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, prompt: Prompt) -> list[int]:
        ids = encode_hf(self.tokenizer, prompt)
        check_length(len(ids), self.max_context, self.model, self.context_option)
        return ids
