"""Every setting of a training run, in one frozen dataclass (validated on creation, saved in the record)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from rerank.errors import ConfigError, one_of
from rerank.params import check_fields

SOURCES = ("qrels", "synthetic", "distill")
GENERATORS = ("sentence", "title", "llm")
STUDENT_LOSSES = {"cross-encoder": ("bce", "margin-mse", "listnet", "lambda"), "bi-encoder": ("mnrl", "margin-mse")}
"""The losses each kind of student trains with; the first is its default ``loss``."""
LOSSES = tuple(dict.fromkeys(loss for losses in STUDENT_LOSSES.values() for loss in losses))
TEACHER_NORMS = ("minmax", "zscore", "none")
MAX_SEED = int(np.iinfo(np.uint32).max)
"""The largest seed numpy's and transformers' seeding accept."""
MAX_STEPS, MAX_EPOCHS, MAX_BATCH = 10_000_000, 10_000, 65_536
"""Upper bounds that catch a typo (``1e12`` epochs) before a run that would never end."""
FLAGS = {"base": "--from", "base_stamp": "--from", "progress": "--quiet", "extra": None}
"""Settings whose command-line flag is not ``--`` and the name with dashes (None: Python only)."""
RESUMABLE = ("epochs", "max_steps", "save_steps", "resume", "progress", "cache")
"""Settings a resumed run may change: how long it trains and how it reports; the rest must match."""


@dataclass(frozen=True)
class TrainSettings:
    """How to build the training data and train a cross-encoder or a bi-encoder.

    Data sources (``data``, combinable): ``"qrels"`` (judged queries of a training split, with hard
    negatives mined by ``negatives``), ``"synthetic"`` (queries generated from sampled corpus documents,
    DUQGen / inverse cloze; reads only the corpus) and ``"distill"`` (a teacher stage's scores over its
    top ``teacher_depth`` for the queries of the other sources, or synthetic queries when alone).
    """

    data: tuple[str, ...] = ("synthetic",)
    base: str = "all-MiniLM-L6-v2"
    """Start checkpoint: the offline MiniLM body (a new one-score head is added), a hub id or a folder."""
    # -- labels -------------------------------------------------------------------------------------
    train_split: str = "train"
    """qrels split of a BEIR folder used for training (``qrels/<split>.tsv``)."""
    train_dataset: str | None = None
    """A separate dataset holding the training queries and qrels (e.g. ``irds:beir/scifact/train``)."""
    negatives: str = "bm25"
    """Pipeline expression that mines hard negatives: its top ``negatives_depth`` minus the positives."""
    negatives_depth: int = 30
    num_negatives: int = 4
    # -- synthetic queries --------------------------------------------------------------------------
    generator: str = "sentence"
    """``"sentence"`` (a sentence of the document, inverse cloze), ``"title"``, or ``"llm"``."""
    backend: str = "hf:smollm2"
    prompt: str = "querygen/fewshot"
    num_documents: int = 1000
    """Corpus documents sampled (over ``clusters`` k-means clusters of their dense embeddings)."""
    clusters: int = 50
    queries_per_document: int = 1
    encoder: str = "dense"
    """Expression of the dense stage whose document embeddings are clustered."""
    roundtrip: str = "bm25"
    """First stage of the round-trip filter: a query is kept when its source is in its top ``roundtrip_k``."""
    roundtrip_k: int = 20
    min_words: int = 20
    """Documents shorter than this are not sampled."""
    # -- distillation -------------------------------------------------------------------------------
    teacher: str = "bm25 % 100 | dense % 100"
    teacher_depth: int = 30
    teacher_docs: int = 8
    """Documents per distillation example: the teacher's best and ``teacher_docs - 1`` others of its top."""
    teacher_norm: str = "minmax"
    teacher_scale: float = 10.0
    distill_loss: str = "margin-mse"
    # -- training -----------------------------------------------------------------------------------
    loss: str | None = None
    """Loss of the qrels and synthetic examples (``distill_loss`` applies to the teacher's); None: the
    student's default, ``bce`` for a cross-encoder, ``mnrl`` for a bi-encoder (:data:`STUDENT_LOSSES`)."""
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1
    max_length: int = 256
    bf16: bool = False
    seed: int = 42
    save_steps: int = 200
    resume: bool = False
    cache: str | None = None
    """SQLite file of the call cache (teacher scores, LLM generations); default ``$RERANK_CACHE/calls.sqlite``."""
    progress: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Further training arguments of sentence-transformers (``CrossEncoderTrainingArguments`` or
    ``SentenceTransformerTrainingArguments``, e.g. ``{"weight_decay": 0.01}``)."""

    def __post_init__(self) -> None:
        data = (self.data,) if isinstance(self.data, str) else tuple(self.data) if isinstance(self.data, list | tuple) else self.data
        object.__setattr__(self, "data", data)
        for f in fields(self):  # paths (base, prompt, cache, ...) as text, numpy numbers as Python's
            value = getattr(self, f.name)
            if isinstance(value, Path | np.generic):
                object.__setattr__(self, f.name, str(value) if isinstance(value, Path) else value.item())
        check_fields(self, named)  # every field's type, finite numbers, RANGES (seed >= 0, max_length >= 2)
        unknown = [d for d in data if d not in SOURCES]
        if not data or unknown or len(set(data)) != len(data):
            raise ConfigError(f"data={list(data)} (--data): give one or more distinct sources of {SOURCES}")
        one_of("generator", self.generator, GENERATORS)
        if self.loss is not None:
            one_of("loss", self.loss, LOSSES)
        one_of("distill_loss", self.distill_loss, LOSSES)
        one_of("teacher_norm", self.teacher_norm, TEACHER_NORMS)
        self._check_counts()
        if self.distill_loss == "bce" and not (self.teacher_norm == "minmax" and self.teacher_scale <= 1):
            raise ConfigError("distill_loss='bce' (--distill-loss) needs teacher labels in [0, 1]: --teacher-norm minmax "
                              f"and --teacher-scale <= 1 (got {self.teacher_norm!r}, {self.teacher_scale}); or use margin-mse")

    def _check_counts(self) -> None:
        """Ranges of the numbers (their types are checked already)."""
        for name in ("negatives_depth", "num_negatives", "num_documents", "clusters", "queries_per_document",
                     "roundtrip_k", "teacher_depth", "batch_size", "save_steps"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"{named(name)} must be a positive integer, got {value!r}")
        if self.generator == "llm" and self.queries_per_document > 1:
            raise ConfigError(f"the llm generator (--generator llm) writes one query per document (greedy decoding); "
                              f"use {named('queries_per_document')} 1, got {self.queries_per_document}")
        if self.num_negatives > self.negatives_depth:  # drawn from that top list, so never met (helper-88)
            raise ConfigError(f"{named('num_negatives')} ({self.num_negatives}) must be at most {named('negatives_depth')} "
                              f"({self.negatives_depth}): the negatives are drawn from that top list")
        if self.teacher_docs < 2 or self.teacher_docs > self.teacher_depth:
            raise ConfigError(f"{named('teacher_docs')} must be between 2 and {named('teacher_depth')} "
                              f"({self.teacher_depth}), got {self.teacher_docs}")
        if self.max_steps == 0 or self.max_steps < -1 or self.max_steps > MAX_STEPS:
            raise ConfigError(f"{named('max_steps')} must be an integer from 1 to {MAX_STEPS:,}, or -1 for no limit (the epochs "
                              f"decide), got {self.max_steps}")
        if self.epochs < 0 or self.epochs > MAX_EPOCHS or not (self.epochs > 0 or self.max_steps > 0):
            raise ConfigError(f"train for {named('epochs')} in (0, {MAX_EPOCHS:,}] or {named('max_steps')} > 0, "
                              f"got epochs={self.epochs}, max_steps={self.max_steps}")
        if self.batch_size > MAX_BATCH:
            raise ConfigError(f"{named('batch_size')} must be at most {MAX_BATCH:,} examples, got {self.batch_size}")
        for name, ok, rule in (("learning_rate", 0 < self.learning_rate < 1, "in (0, 1)"),
                               ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
                               ("teacher_scale", self.teacher_scale > 0, "> 0"),
                               ("max_length", self.max_length >= 16, "at least 16 tokens"),
                               ("min_words", self.min_words >= 0, ">= 0")):
            if not ok:
                raise ConfigError(f"{named(name)} must be {rule}, got {getattr(self, name)!r}")
        if self.seed > MAX_SEED:
            raise ConfigError(f"{named('seed')} must be between 0 and {MAX_SEED}, got {self.seed}")

    def with_(self, **changes: Any) -> TrainSettings:
        """A copy with some settings changed (validated again)."""
        known = {f.name for f in fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise ConfigError(f"unknown training settings {bad}; known: {sorted(known)}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data"] = list(self.data)
        return out


def flag(setting: str) -> str | None:
    """A setting's command-line flag: ``--batch-size`` for ``batch_size``; None for a Python-only one."""
    return FLAGS.get(setting, "--" + setting.replace("_", "-"))


def named(setting: str) -> str:
    """A setting's Python name and its flag, for messages that both API and CLI users read: ``batch_size (--batch-size)``."""
    return f"{setting} ({flag(setting)})" if flag(setting) else setting
