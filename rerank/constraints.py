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

    ``pieces`` maps the token ids an answer may use to their bytes inside an answer; ``first`` gives the bytes
    of those that read otherwise as the first token of an answer (a SentencePiece ``"▁A"`` is ``"A"`` there and
    ``" A"`` later; only ``"▁"`` may be empty there). A token may hold only part of a character's UTF-8 encoding
    (CJK, symbols, emoji), so the mask walks bytes and hands the constraint whole characters. ``eos`` are the
    ids that end a generation. Build one per (tokenizer, constraint) and call :meth:`allowed` with the state so
    far; states are followed incrementally per request, and a state says whether the answer has begun.
    """

    def __init__(self, constraint: Constraint, pieces: dict[int, bytes], eos: Iterable[int],
                 first: dict[int, bytes] | None = None):
        self.constraint = constraint
        self.pieces = {t: p for t, p in pieces.items() if p}
        self.first = {t: (first or {}).get(t, p) for t, p in self.pieces.items()}
        self.eos = sorted(set(eos))
        self._allowed: dict[Any, list[int]] = {}

    def start(self) -> State:
        """The constraint's start, with no bytes of a partial character pending, before the first token."""
        return self.constraint.start(), b"", True

    def at(self, state: State) -> dict[int, bytes]:
        """The tokens' bytes at ``state``: as the first token of the answer, or inside it."""
        return self.first if state[2] else self.pieces

    def advance(self, state: State | None, token: int) -> State | None:
        """The state after ``token``; None once the answer left the constraint."""
        piece = None if state is None else self.at(state).get(token)
        return None if piece is None else self.step(state, piece)

    def step(self, state: State, piece: bytes, ahead: bool = True) -> State | None:
        """The state after a token's bytes: whole characters go to the constraint; the bytes of a partial one
        wait for the rest, and only while some token can complete it into a character the constraint allows.
        With ``ahead``, an answer left unfinished must also have a token to go on with (a first ``"▁"`` of no
        bytes, then ``"▁"`` as a space, leads nowhere when the answer goes on with ``"A"``)."""
        after = self._read(state, piece)
        if after is None or not after[1] and (not ahead or self.done(after)):
            return after
        go_on = any(self.step(after, p, ahead=bool(after[1]) and ahead) is not None for p in self.pieces.values())
        return after if go_on else None

    def _read(self, state: State, piece: bytes) -> State | None:
        """The state after a token's bytes, whole characters handed to the constraint, no look ahead."""
        inner, pending, _ = state
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            inner = self.constraint.step(inner, decoder.decode(pending + piece))
        except UnicodeDecodeError:
            return None
        return None if inner is None else (inner, decoder.getstate()[0], False)

    def done(self, state: State) -> bool:
        """True when the bytes so far are a complete answer."""
        inner, pending, _ = state
        return not pending and self.constraint.done(inner)

    def allowed(self, state: State | None) -> list[int]:
        """Token ids allowed after ``state``: those that keep the answer possible, and end-of-sequence
        ids once it is complete (or when nothing else is left, e.g. after an unexpected token)."""
        if state is None:
            return self.eos
        if state not in self._allowed:  # the key holds whether the answer has begun: no answer for the other position
            ok = [t for t, p in self.at(state).items() if self.step(state, p) is not None]
            self._allowed[state] = ok + self.eos if self.done(state) else ok or self.eos
        return self._allowed[state]


class Follower:
    """One request's walk through a :class:`TokenMask`: feed it the generated tokens, ask what may follow."""

    def __init__(self, mask: TokenMask):
        self.mask, self.state, self.seen = mask, mask.start(), 0

    def allowed(self, generated: Sequence[int]) -> list[int]:
        for t in generated[self.seen:]:
            self.state = self.mask.advance(self.state, t)
        self.seen = len(generated)
        return self.mask.allowed(self.state)


class Masks:
    """The :class:`TokenMask` of each constraint for one vocabulary, built on first use and kept.

    ``tokenize(text)`` gives ``(token id, bytes)`` pairs, each token's bytes as they read inside a text.
    ``dummy_space``: the tokenizer puts a space before the text it encodes (SentencePiece's dummy prefix) and
    an answer is read without it, so the first token of an answer loses one leading space (``"▁A"`` is ``"A"``).
    Only the tokens of the constraint's :meth:`~Constraint.samples` are allowed, so answers keep the
    tokenizer's usual split (``" >"``, never ``" "`` then ``">"``): the model stays in distribution and the
    output cap holds. A sample holding an end-of-sequence token is refused: generation would stop there.
    """

    def __init__(self, tokenize: Callable[[str], list[tuple[int, bytes]]], eos: Iterable[int],
                 dummy_space: bool = False):
        self.tokenize, self.eos, self.dummy_space = tokenize, list(eos), dummy_space
        self._masks: dict[str, TokenMask] = {}

    def opening(self, piece: bytes) -> bytes:
        """A token's bytes as the first token of an answer."""
        return piece[1:] if self.dummy_space and piece.startswith(b" ") else piece

    def reads(self, pairs: Sequence[tuple[int, bytes]]) -> bytes:
        """The bytes an answer of these tokens reads as."""
        return b"".join(self.opening(p) if i == 0 else p for i, (_, p) in enumerate(pairs))

    def split(self, sample: str) -> list[tuple[int, bytes]]:
        """The tokens that write ``sample`` as an answer: the tokenizer's own split, or, where a dummy prefix
        makes it read back otherwise (``" A"`` split as ``"▁A"``, read ``"A"``), the split of the space made
        explicit (``"▁"`` of no bytes, then ``"▁A"``)."""
        pairs = self.tokenize(sample)
        if self.dummy_space and self.reads(pairs) != sample.encode():
            spaced = self.tokenize(" " + sample)
            if self.reads(spaced) == sample.encode():
                return spaced
        return pairs

    def __call__(self, constraint: Constraint) -> TokenMask:
        key = constraint.key()
        if key not in self._masks:
            split = {sample: self.split(sample) for sample in constraint.samples()}
            pairs = [pair for sample_pairs in split.values() for pair in sample_pairs]
            ends = [sample for sample, sample_pairs in split.items() if any(t in self.eos for t, _ in sample_pairs)]
            if ends:
                raise ConfigError(f"constraint {constraint}: {ends[0]!r} holds this tokenizer's end-of-sequence "
                                  "token, where generation stops, so that answer can never be written; "
                                  "use other option text")
            pieces = dict(pairs)
            clashes = {t for t, piece in pairs if pieces[t] != piece}
            if clashes:  # a tokenize() that reads tokens in context (by decoding) may read one token two ways
                logger.warning("constraint %s: %d token(s) read as other bytes in one answer than in another; "
                               "the mask uses one reading, so some answers may be unreachable under the constraint",
                               constraint, len(clashes))
            unspelled = [sample for sample, sample_pairs in split.items() if self.reads(sample_pairs) != sample.encode()]
            if unspelled:  # no tokenizer known here does this; a tokenize() by decoding might
                logger.warning("constraint %s: this tokenizer's own split of %s reads back as other text, so that "
                               "answer may be unreachable under the constraint; use other option text, "
                               "constrained=False or the log-probability read", constraint,
                               ", ".join(repr(s) for s in unspelled))
            first = {t: self.opening(p) for t, p in pieces.items()}
            self._masks[key] = TokenMask(constraint, pieces, self.eos, first)
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
