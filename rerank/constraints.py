"""Constrained decoding: the answers a model is allowed to generate, as a language over text.

A :class:`Constraint` is a small automaton over characters. Backends that can mask logits (transformers,
llama.cpp in-process, vLLM through :class:`~rerank.backends.vllm_logits.ConstrainedDecoding`) follow it token by
token with a :class:`TokenMask`, so the answer is in the language by construction. Servers that only take
a grammar get the constraint's :meth:`~Constraint.regex` (vLLM's ``structured_outputs``) or
:meth:`~Constraint.gbnf` (llama.cpp's ``grammar``), which describe the same shape but cannot express
"each id once"; the answer parser repairs and counts what is left.

A constraint describes the text generated *after* the prompt, so a prompt that already starts the
answer (``answer_prefix: "["``) passes that text as ``consumed``:

>>> p = Permutation(3, consumed="[")
>>> p.accepts("2] > [3] > [1]"), p.accepts("2] > [2] > [1]"), p.accepts("2] > [3]")
(True, False, False)
>>> p.regex()
'(?:1|2|3)\\\\](?: > \\\\[(?:1|2|3)\\\\]){2}'
>>> OneOf(["A]", "B]"]).accepts("B]")
True
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rerank.errors import ConfigError

logger = logging.getLogger("rerank")

CONSTRAINT_ARG = "rerank_constraint"
"""Request ``extra_args`` key (``vllm_xargs`` over HTTP) of a constraint's JSON spec, read by
:class:`rerank.backends.vllm_logits.ConstrainedDecoding`."""

State = Any
"""An automaton state; ``None`` means the text so far is not a prefix of any answer."""


class Constraint(ABC):
    """A set of allowed answers, followed one piece of text at a time."""

    kind: str

    @abstractmethod
    def start(self) -> State:
        """The state before any generated text."""

    @abstractmethod
    def step(self, state: State, piece: str) -> State | None:
        """The state after ``piece``; None when no allowed answer starts with the text so far."""

    @abstractmethod
    def done(self, state: State) -> bool:
        """True when the text so far is a complete answer (end-of-sequence may follow)."""

    @abstractmethod
    def regex(self) -> str:
        """A regular expression of the answers' shape (for servers with regex-guided decoding)."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-able description; :func:`from_spec` rebuilds the constraint (cache keys, other processes)."""

    @abstractmethod
    def gbnf(self) -> str:
        """The same shape as a llama.cpp GBNF grammar (for llama.cpp's server)."""

    @abstractmethod
    def samples(self) -> list[str]:
        """Answers that use every piece of text an answer can have (their tokens are the ones allowed)."""

    def accepts(self, text: str) -> bool:
        state = self.step(self.start(), text)
        return state is not None and self.done(state)

    def key(self) -> str:
        return json.dumps(self.spec(), sort_keys=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()})"


class Permutation(Constraint):
    """Each of the ids ``1..n`` exactly once, as ``[3] > [1] > [2]`` (RankGPT's answer format).

    ``consumed``: the start of the answer that is already in the prompt (a prefix of ``[``).
    """

    kind = "permutation"
    OPEN, CLOSE, SEPARATOR = "[", "]", " > "

    def __init__(self, n: int, consumed: str = ""):
        if n < 1:
            raise ConfigError(f"a permutation constraint needs n >= 1, got {n}")
        if not self.OPEN.startswith(consumed):
            raise ConfigError(f"the answer prefix {consumed!r} does not start a permutation such as '[2] > [1]'; "
                              "use a prompt whose answer prefix is '[' or empty, or turn constrained decoding off")
        self.n, self.consumed = n, consumed
        self._items = {k: self.OPEN + str(k) + self.CLOSE for k in range(1, n + 1)}

    def start(self) -> State:
        return self.step((frozenset(), ""), self.consumed)

    def step(self, state: State, piece: str) -> State | None:
        used, text = state
        text += piece
        while text:
            if len(used) == self.n:
                return None
            lead = self.SEPARATOR if used else ""
            whole = next((k for k, item in self._items.items() if k not in used and text.startswith(lead + item)), None)
            if whole is None:
                partial = any((lead + item).startswith(text) for k, item in self._items.items() if k not in used)
                return (used, text) if partial else None
            text = text[len(lead) + len(self._items[whole]):]
            used = used | {whole}
        return used, ""

    def done(self, state: State) -> bool:
        used, text = state
        return len(used) == self.n and not text

    def regex(self) -> str:
        ids = "(?:" + "|".join(str(k) for k in range(1, self.n + 1)) + ")"
        first = _escape(self.OPEN[len(self.consumed):]) + ids + _escape(self.CLOSE)
        rest = _escape(self.SEPARATOR + self.OPEN) + ids + _escape(self.CLOSE)
        return first + (f"(?:{rest}){{{self.n - 1}}}" if self.n > 1 else "")

    def gbnf(self) -> str:
        ids = " | ".join(f'"{k}"' for k in range(1, self.n + 1))
        first = f'"{self.OPEN[len(self.consumed):]}" ' if self.OPEN[len(self.consumed):] else ""
        more = f' (" > [" id "]"){{{self.n - 1}}}' if self.n > 1 else ""
        return f'root ::= {first}id "]"{more}\nid ::= {ids}\n'

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": self.n, "consumed": self.consumed}

    def samples(self) -> list[str]:
        ids = [self._items[k] for k in range(1, self.n + 1)]
        return [self.SEPARATOR.join(order)[len(self.consumed):] for order in (ids, ids[::-1])]


class OneOf(Constraint):
    """Exactly one of a few strings (a label such as ``B]``)."""

    kind = "one_of"

    def __init__(self, options: Sequence[str]):
        if not options or any(not o for o in options):
            raise ConfigError("a one-of constraint needs non-empty option strings")
        self.options = tuple(options)

    def start(self) -> State:
        return ""

    def step(self, state: State, piece: str) -> State | None:
        text = state + piece
        return text if any(o.startswith(text) for o in self.options) else None

    def done(self, state: State) -> bool:
        return state in self.options

    def regex(self) -> str:
        return "(?:" + "|".join(_escape(o) for o in self.options) + ")"

    def gbnf(self) -> str:
        return "root ::= " + " | ".join(json.dumps(o) for o in self.options) + "\n"

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "options": list(self.options)}

    def samples(self) -> list[str]:
        return list(self.options)


def _escape(text: str) -> str:
    """``text`` as a regex literal, escaping only metacharacters (guided-decoding engines reject ``\\ ``)."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text)


def from_spec(spec: dict[str, Any]) -> Constraint:
    """The constraint that :meth:`Constraint.spec` described."""
    kind = spec.get("kind")
    if kind == Permutation.kind:
        return Permutation(int(spec["n"]), str(spec.get("consumed", "")))
    if kind == OneOf.kind:
        return OneOf([str(o) for o in spec["options"]])
    raise ConfigError(f"unknown constraint kind {kind!r}; known: {Permutation.kind}, {OneOf.kind}")


class TokenMask:
    """Which token ids may come next under a constraint, for one tokenizer's vocabulary.

    ``pieces`` maps the token ids an answer may use to their bytes; a token may hold only part of a
    character's UTF-8 encoding (CJK, symbols, emoji), so the mask walks bytes and hands the constraint
    whole characters. ``eos`` are the ids that end a generation. Build one per (tokenizer, constraint) and
    call :meth:`allowed` with the state so far; states are followed incrementally per request.
    """

    def __init__(self, constraint: Constraint, pieces: dict[int, bytes], eos: Iterable[int]):
        self.constraint = constraint
        self.pieces = {t: p for t, p in pieces.items() if p}
        self.eos = sorted(set(eos))
        self._allowed: dict[Any, list[int]] = {}

    def start(self) -> State:
        """The constraint's start, with no bytes of a partial character pending."""
        return self.constraint.start(), b""

    def step(self, state: State, piece: bytes) -> State | None:
        """The state after a token's bytes: whole characters go to the constraint; the bytes of a partial one
        wait for the rest, and only while some token can complete it into a character the constraint allows."""
        inner, pending = state
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            inner = self.constraint.step(inner, decoder.decode(pending + piece))
        except UnicodeDecodeError:
            return None
        pending = decoder.getstate()[0]
        if inner is None or pending and all(self.step((inner, pending), p) is None for p in self.pieces.values()):
            return None
        return inner, pending

    def done(self, state: State) -> bool:
        """True when the bytes so far are a complete answer."""
        inner, pending = state
        return not pending and self.constraint.done(inner)

    def allowed(self, state: State | None) -> list[int]:
        """Token ids allowed after ``state``: those that keep the answer possible, and end-of-sequence
        ids once it is complete (or when nothing else is left, e.g. after an unexpected token)."""
        if state is None:
            return self.eos
        if state not in self._allowed:
            ok = [t for t, p in self.pieces.items() if self.step(state, p) is not None]
            self._allowed[state] = ok + self.eos if self.done(state) else ok or self.eos
        return self._allowed[state]


class Follower:
    """One request's walk through a :class:`TokenMask`: feed it the generated tokens, ask what may follow."""

    def __init__(self, mask: TokenMask):
        self.mask, self.state, self.seen = mask, mask.start(), 0

    def allowed(self, generated: Sequence[int]) -> list[int]:
        for t in generated[self.seen:]:
            piece = self.mask.pieces.get(t)
            self.state = None if self.state is None or piece is None else self.mask.step(self.state, piece)
        self.seen = len(generated)
        return self.mask.allowed(self.state)


class Masks:
    """The :class:`TokenMask` of each constraint for one vocabulary, built on first use and kept.

    ``tokenize(text)`` gives ``(token id, bytes)`` pairs. Only the tokens of the constraint's
    :meth:`~Constraint.samples` are allowed, so answers keep the tokenizer's usual split (``" >"``,
    never ``" "`` then ``">"``): the model stays in distribution and the output cap holds.
    """

    def __init__(self, tokenize: Callable[[str], list[tuple[int, bytes]]], eos: Iterable[int]):
        self.tokenize, self.eos = tokenize, list(eos)
        self._masks: dict[str, TokenMask] = {}

    def __call__(self, constraint: Constraint) -> TokenMask:
        key = constraint.key()
        if key not in self._masks:
            pairs = [pair for sample in constraint.samples() for pair in self.tokenize(sample)]
            pieces = dict(pairs)
            clashes = {t for t, piece in pairs if pieces[t] != piece}
            if clashes:  # e.g. a SentencePiece "▁[" that opens an answer as "[" and goes on as " ["
                logger.warning("constraint %s: %d token(s) of this tokenizer stand for other bytes at the start of an "
                               "answer than inside one, so some answers may be cut short or unreachable under the "
                               "constraint; use constrained=False or the log-probability read", constraint,
                               len(clashes))
            self._masks[key] = TokenMask(constraint, pieces, self.eos)
        return self._masks[key]


def pieces_by_decoding(encode: Callable[[str], list[int]], decode: Callable[[list[int]], bytes],
                       text: str) -> list[tuple[int, bytes]]:
    """``(token, bytes)`` pairs of ``text``, each token's bytes read off the growing decoded prefix."""
    ids, out, before = encode(text), [], b""
    for i, t in enumerate(ids):
        now = decode(ids[: i + 1])
        out.append((t, now[len(before):]))
        before = now
    return out
