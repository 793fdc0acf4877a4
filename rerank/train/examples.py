"""Training examples: one query with scored documents, and their layout for each sentence-transformers loss.

A :class:`Group` is what every data source produces. Its first document is the reference (the judged
positive, the source of a synthetic query, or the teacher's best); ``labels`` are 1/0 for label and
synthetic groups and teacher scores for distillation groups.

>>> g = Group("what causes scurvy", ["Vitamin C deficiency ...", "Paris is ..."], [1.0, 0.0], "qrels")
>>> rows, dropped = layout([g], "bce")
>>> rows["label"], dropped
([1.0, 0.0], 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rerank.errors import ConfigError, DataError


@dataclass(frozen=True)
class Group:
    query: str
    texts: list[str]
    labels: list[float]
    source: str

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels) or not self.texts:
            raise ValueError("a Group needs as many labels as texts, and at least one text")


def layout(groups: Sequence[Group], loss: str) -> tuple[dict[str, list[Any]], int]:
    """Columns for ``loss`` (``bce``, ``margin-mse``, ``listnet``, ``lambda``, ``mnrl``) and the groups left out.

    ``bce`` takes every (query, document, label) pair; the pairwise and listwise losses need groups with
    at least two documents, and ``margin-mse`` needs the same number of documents in every group (the
    most common size is kept; the others are counted as left out). ``mnrl`` (a bi-encoder's) takes the
    query, the reference document and the documents labelled below it as negatives, unlabelled.
    """
    if loss == "bce":
        pairs = [(g.query, t, float(y)) for g in groups for t, y in zip(g.texts, g.labels)]
        return {"query": [p[0] for p in pairs], "document": [p[1] for p in pairs], "label": [p[2] for p in pairs]}, 0
    if loss == "mnrl":
        below = [Group(g.query, [g.texts[0]] + [t for t, y in zip(g.texts[1:], g.labels[1:]) if y < g.labels[0]],
                       [g.labels[0]] + [y for y in g.labels[1:] if y < g.labels[0]], g.source) for g in groups]
        columns, left_out = layout(below, "margin-mse")
        columns.pop("label", None)
        return columns, left_out
    usable = [g for g in groups if len(g.texts) >= 2]
    if loss == "margin-mse":
        if not usable:
            return {}, len(groups)
        sizes = [len(g.texts) for g in usable]
        size = max(set(sizes), key=lambda s: (sizes.count(s), s))
        usable = [g for g in usable if len(g.texts) == size]
        columns: dict[str, list[Any]] = {"query": [g.query for g in usable]}
        for i in range(size):
            columns[f"document_{i}"] = [g.texts[i] for g in usable]
        columns["label"] = [[float(y) for y in g.labels] for g in usable]
        return columns, len(groups) - len(usable)
    if loss in ("listnet", "lambda"):
        return ({"query": [g.query for g in usable], "documents": [list(g.texts) for g in usable],
                 "labels": [[float(y) for y in g.labels] for g in usable]}, len(groups) - len(usable))
    raise ConfigError(f"unknown loss {loss!r}")


def to_dataset(columns: dict[str, list[Any]], seed: int) -> Any:
    """A shuffled ``datasets.Dataset`` of ``columns`` (what sentence-transformers' trainers read)."""
    from rerank.errors import require

    if not columns or not next(iter(columns.values())):
        raise DataError("no training examples are left for this loss")
    datasets = require("datasets", "train")
    return datasets.Dataset.from_dict(columns).shuffle(seed=seed)
