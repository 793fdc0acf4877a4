"""File names for systems and datasets: the one slug function, and the check that names stay apart.

>>> slug("BM25 % 100 >> MiniLM")
'BM25_100_MiniLM'
>>> check_distinct(["A/B", "A B"], "pipeline")
Traceback (most recent call last):
...
rerank.errors.ConfigError: pipeline names 'A/B' and 'A B' both give the file name 'A_B'; rename one
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rerank.errors import ConfigError


def slug(name: str) -> str:
    """``name`` as a safe file name: runs of other characters than letters, digits, ``_.-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "x"


def check_distinct(names: Iterable[str], what: str) -> None:
    """Refuse two names that give one file name (they would overwrite each other's results)."""
    seen: dict[str, str] = {}
    for name in names:
        key = slug(name).lower()  # case-insensitive file systems merge 'A' and 'a'
        if key in seen:
            raise ConfigError(f"{what} names {seen[key]!r} and {name!r} both give the file name {slug(name)!r}; rename one")
        seen[key] = name
