"""Checks of the benchmark scripts' count and size options: a bad value is argparse's one-line usage
error (exit 2), given before anything loads. Scripts run as ``python pipelines/NAME.py`` import it
as ``from _args import positive``.
"""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1."""
    return _at_least(text, 1)


def non_negative(text: str) -> int:
    """An argparse ``type``: a whole number of at least 0 (the option's help says what 0 means)."""
    return _at_least(text, 0)


def positive_list(text: str) -> list[int]:
    """An argparse ``type``: comma-separated positive whole numbers (``20,40,80``)."""
    return [positive(part) for part in text.split(",")]


def within(parser: argparse.ArgumentParser, option: str, value: int | None, size: int, what: str) -> None:
    """A usage error unless ``value`` (None: unset) is at most ``size``, the count of ``what`` there is."""
    if value is not None and value > size:
        parser.error(f"argument {option}: {value} is more than the {size} {what}")


def _at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value
