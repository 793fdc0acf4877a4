"""Tokenization for lexical retrievers: a regex (or whitespace) split, lowercasing, stopwords, stemming.

>>> Tokenizer()("The mice are running to the houses")
['mice', 'run', 'hous']
>>> Tokenizer(pattern="whitespace", lowercase=False, stopwords=None, stemmer=None)("a  B-c d")
['a', 'B-c', 'd']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from rerank.errors import ConfigError

WORD_PATTERN = r"(?u)\b\w\w+\b"
"""Words of two or more word characters (the scikit-learn / bm25s default)."""

WHITESPACE = "whitespace"
"""Special ``pattern`` value: split on runs of whitespace, like ``str.split()``."""

ENGLISH_STOPWORDS = (
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they",
    "this", "to", "was", "will", "with",
)
"""Lucene's default English stop set (``EnglishAnalyzer``), also used by Anserini and bm25s."""

STOPWORD_LISTS = {"en": ENGLISH_STOPWORDS}


class Tokenizer:
    """Turn text into index terms: split, optionally lowercase, drop stopwords, then stem.

    Args:
        pattern: a regular expression whose matches are the tokens, or ``"whitespace"``.
        lowercase: lowercase the text (and a custom stopword list) before splitting.
        stopwords: a list name (``"en"``), ``None`` for none, or a custom sequence of words.
            Stopwords are matched after lowercasing and before stemming (a list is not stemmed).
        stemmer: a PyStemmer (Snowball) language such as ``"english"``, or ``None``.

    Stems are cached per distinct token, so tokenizing a corpus stems each word once.
    """

    def __init__(self, pattern: str = WORD_PATTERN, lowercase: bool = True,
                 stopwords: str | Sequence[str] | None = "en", stemmer: str | None = "english"):
        self.pattern, self.lowercase, self.stemmer = pattern, lowercase, stemmer
        self.stopwords = frozenset(resolve_stopwords(stopwords, lowercase))
        self._dropped = self.stopwords | {""}  # an empty match (\b) is no token
        self._split = str.split if pattern == WHITESPACE else _matches(_compile(pattern))
        self._stem = _stemmer(stemmer)
        self._cache: dict[str, str] = {}

    def __call__(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        stop, cache = self._dropped, self._cache
        tokens = [t for t in self._split(text) if t not in stop]
        if self._stem is None:
            return tokens
        out = []
        for t in tokens:
            s = cache.get(t)
            if s is None:
                s = cache[t] = self._stem(t)
            out.append(s)
        return out

    def many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self(t) for t in texts]

    def __getstate__(self) -> dict:
        """Pickle the settings only (the stemmer is a C object); the stem cache starts empty again."""
        return {"pattern": self.pattern, "lowercase": self.lowercase, "stopwords": tuple(sorted(self.stopwords)),
                "stemmer": self.stemmer}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)


def resolve_stopwords(stopwords: str | Sequence[str] | None, lowercase: bool = False) -> tuple[str, ...]:
    """The stopword tuple for a list name, ``None`` or a custom sequence (lowercased with ``lowercase``,
    as the text they are matched in)."""
    if stopwords is None:
        return ()
    if isinstance(stopwords, str):
        if stopwords not in STOPWORD_LISTS:
            raise ConfigError(f"unknown stopword list {stopwords!r}; choose one of {sorted(STOPWORD_LISTS)}, None, or pass a list of words")
        return STOPWORD_LISTS[stopwords]
    words = tuple(stopwords)
    if not all(isinstance(w, str) for w in words):
        raise ConfigError("stopwords must be a list name, None, or a sequence of strings")
    return tuple(w.lower() for w in words) if lowercase else words


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"tokenizer pattern {pattern!r} is not a valid regular expression ({e}); "
                          f"use a regex or {WHITESPACE!r}") from None
    if compiled.match(""):
        raise ConfigError(f"tokenizer pattern {pattern!r} matches the empty string, so every text would share a token; "
                          "make a token at least one character (\\w+, not \\w*)")
    return compiled


def _matches(compiled: re.Pattern[str]) -> Callable[[str], list[str]]:
    """The whole matches of ``compiled`` in a text (``findall`` gives a pattern's groups instead)."""
    if not compiled.groups:
        return compiled.findall
    return lambda text: [m.group(0) for m in compiled.finditer(text)]


def _stemmer(language: str | None) -> Callable[[str], str] | None:
    if language is None:
        return None
    import Stemmer

    if language not in Stemmer.algorithms():
        raise ConfigError(f"unknown stemmer {language!r}; choose None or one of {sorted(Stemmer.algorithms())}")
    return Stemmer.Stemmer(language).stemWord


def truncate_words(text: str, max_words: int, max_chars: int | None = None) -> str:
    """The first ``max_words`` whitespace-separated words of ``text`` (``text`` itself when shorter),
    and at most ``max_chars`` characters: a text without spaces (Chinese, Thai, a URL) is one word."""
    words = text.split()
    kept = text if len(words) <= max_words else " ".join(words[:max_words])
    return kept if max_chars is None or len(kept) <= max_chars else kept[:max_chars]
