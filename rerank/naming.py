"""Names as files and records show them: the one slug function, the check that names stay apart,
and server URLs shown without their secrets.

>>> slug("BM25 % 100 >> MiniLM")
'BM25_100_MiniLM'
>>> check_distinct(["A/B", "A B"], "pipeline")
Traceback (most recent call last):
...
rerank.errors.ConfigError: pipeline names 'A/B' and 'A B' both give the file name 'A_B'; rename one
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from rerank.errors import ConfigError


MAX_SLUG = 120
"""Longer slugs are cut and given a hash of the whole name: file names stop at 255 bytes, and the
runner adds suffixes to them (locks, temporary files)."""


def slug(name: str) -> str:
    """``name`` as a safe file name: runs of other characters than letters, digits, ``_.-`` become
    ``_``; past :data:`MAX_SLUG` characters, the first 100 and a hash of the name."""
    text = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "x"
    if len(text) <= MAX_SLUG:
        return text
    return f"{text[:100]}-{hashlib.sha1(name.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def check_distinct(names: Iterable[str], what: str) -> None:
    """Refuse an empty name, and two names that give one file name (they would overwrite each other's results)."""
    seen: dict[str, str] = {}
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{what} names must be non-empty strings, got {name!r}")
        key = slug(name).lower()  # case-insensitive file systems merge 'A' and 'a'
        if key in seen:
            raise ConfigError(f"{what} names {seen[key]!r} and {name!r} both give the file name {slug(name)!r}; rename one")
        seen[key] = name


def shown_url(url: str) -> str:
    """A server URL as a record or a client may see it and key on it: without user and password (a digest
    of a URL holding a password would let anyone holding it test guesses), the query only as a digest
    (it may hold a key, or pick a deployment).

    >>> shown_url("http://me:pw@127.0.0.1:8000/v1?api_key=sk-1")
    'http://127.0.0.1:8000/v1?sha256=...'
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "unreadable URL"
    shown = f"{parts.scheme}://{host}{parts.path}"
    query = f"?sha256={hashlib.sha256(parts.query.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}" if parts.query else ""
    return shown + query if url else ""


def redact_urls(text: str) -> str:
    """``text`` with every ``http(s)://`` URL in it as :func:`shown_url` shows it (an expression, a message).

    >>> redact_urls("yes-no(backend='openai:http://me:pw@127.0.0.1:9/v1#m')")
    "yes-no(backend='openai:http://127.0.0.1:9/v1#m')"
    """
    return re.sub(r"https?://[^\s'\"#,)]+", lambda m: shown_url(m.group()), text)
