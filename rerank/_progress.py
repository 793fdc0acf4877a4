"""Progress bars: on by default in a terminal or notebook when logging is at INFO or below."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
logger = logging.getLogger("rerank")


def progress_enabled(progress: bool | None, total: int | None = None) -> bool:
    if total == 0:
        return False
    if progress is not None:
        return progress
    return sys.stderr.isatty() and logger.getEffectiveLevel() <= logging.INFO


def progress_bar(items: Iterable[T], desc: str, progress: bool | None, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar when :func:`progress_enabled` says so."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not progress_enabled(progress, total):
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=desc, total=total, unit=unit, leave=False)


@contextmanager
def library_bars(progress: bool | None) -> Iterator[None]:
    """Hugging Face's own bars (a checkpoint's "Writing model shards") off inside, unless progress is on."""
    from transformers.utils import logging as hf_logging

    off = not progress_enabled(progress) and hf_logging.is_progress_bar_enabled()
    if off:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if off:
            hf_logging.enable_progress_bar()
