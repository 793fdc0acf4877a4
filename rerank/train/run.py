"""Train a model on a dataset's corpus: build the examples of each source, train, save, record.

Both kinds of student learn from the same examples: a cross-encoder (the reranker) and, GPL-style,
a bi-encoder (the dense retriever and rescorer).

>>> from rerank.train import train_bi_encoder, train_cross_encoder                # doctest: +SKIP
>>> record = train_cross_encoder("scifact", "models/scifact-ce", data=["synthetic"], generator="sentence")  # doctest: +SKIP
>>> pipeline("bm25 % 100 >> cross-encoder(model='models/scifact-ce')", load_dataset("scifact"))  # doctest: +SKIP
>>> train_bi_encoder("scifact", "models/scifact-bi", data=["synthetic"])         # doctest: +SKIP
>>> pipeline("dense(model='models/scifact-bi')", load_dataset("scifact"))        # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from rerank.data import Dataset
from rerank.errors import ConfigError, one_of
from rerank.train import sources
from rerank.train.examples import Group, layout, to_dataset
from rerank.train.record import TrainingRecord, versions
from rerank.train.settings import STUDENT_LOSSES, TrainSettings
from rerank.train.trainer import warn_slow_bf16

logger = logging.getLogger("rerank")


def check_expressions(s: TrainSettings) -> None:
    """Parse every stage expression the settings use, before any expensive work (raises ConfigError)."""
    from rerank.expr import build

    used = {"qrels": [s.negatives], "synthetic": [s.encoder, s.roundtrip, s.negatives], "distill": [s.teacher]}
    if s.data == ("distill",):
        used["distill"] += used["synthetic"]
    for source in s.data:
        for expr in used[source]:
            build(expr)


def build_examples(dataset: Dataset, s: TrainSettings) -> tuple[dict[str, list[Group]], dict[str, dict[str, int]], dict[str, float]]:
    """The groups of every requested source, their counts and the seconds each took (no training)."""
    check_expressions(s)
    rng = np.random.default_rng(s.seed)
    groups: dict[str, list[Group]] = {}
    counts: dict[str, dict[str, int]] = {}
    seconds: dict[str, float] = {}
    queries: dict[str, str] = {}
    if "qrels" in s.data:
        start = time.perf_counter()
        groups["qrels"], counts["qrels"], labelled = sources.qrels_groups(dataset, s, rng)
        queries.update(labelled)
        seconds["qrels"] = time.perf_counter() - start
    if "synthetic" in s.data or s.data == ("distill",):
        start = time.perf_counter()
        kept, counts["synthetic"] = sources.synthetic_queries(dataset, s, rng)
        if "synthetic" in s.data:
            groups["synthetic"], made = sources.synthetic_groups(dataset, kept, s, rng)
            counts["synthetic"].update(made)
        queries.update({f"syn{i}": q.query for i, (q, _) in enumerate(kept)})
        seconds["synthetic"] = time.perf_counter() - start
    if "distill" in s.data:
        start = time.perf_counter()
        groups["distill"], counts["distill"] = sources.distill_groups(dataset, queries, s, rng)
        seconds["distill"] = time.perf_counter() - start
    return groups, counts, seconds


def train_cross_encoder(dataset: str | Dataset, out: str | Path, settings: TrainSettings | None = None,
                        **changes: Any) -> TrainingRecord:
    """Train a cross-encoder for ``dataset``'s corpus and save it to ``out`` (loadable as
    ``cross-encoder(model='<out>')``). Settings: a :class:`TrainSettings`, or its fields as keywords.

    Writes ``<out>/training_record.json`` and ``<out>/loss.png``; checkpoints go to ``<out>/checkpoints``.
    Raises ConfigError for bad settings or an ``out`` that already holds a model (unless ``resume``),
    DataError for unusable data (empty corpus, missing or leaking qrels, no example left).
    """
    return train_model("cross-encoder", dataset, out, settings, **changes)


def train_bi_encoder(dataset: str | Dataset, out: str | Path, settings: TrainSettings | None = None,
                     **changes: Any) -> TrainingRecord:
    """Fine-tune the bi-encoder (``base``: the offline MiniLM by default) on the same examples, GPL-style,
    and save it to ``out`` (loadable as ``dense(model='<out>')`` and ``biencoder(model='<out>')``).

    Losses: ``mnrl`` (in-batch and hard negatives, the default for labelled and synthetic examples)
    and ``margin-mse`` (the teacher's margins, for distillation). Otherwise as :func:`train_cross_encoder`.
    """
    return train_model("bi-encoder", dataset, out, settings, **changes)


def train_model(kind: str, dataset: str | Dataset, out: str | Path, settings: TrainSettings | None = None,
                **changes: Any) -> TrainingRecord:
    """Train a ``kind`` (``"cross-encoder"`` or ``"bi-encoder"``) student; see :func:`train_cross_encoder`."""
    from rerank.data import load

    s = (settings or TrainSettings()).with_(**changes)
    s = s.with_(loss=check_losses(kind, s)[0])  # before anything expensive
    out = Path(out)
    if (out / "config.json").exists() and not s.resume:
        raise ConfigError(f"{out} already holds a model; choose another output folder (or resume=True)")
    held = TrainingRecord.load(out).settings.get("model", "cross-encoder") if (out / "training_record.json").exists() else kind
    if held != kind:
        raise ConfigError(f"{out} holds a {held}, not a {kind}; resume it as a {held} or choose another output folder")
    warn_slow_bf16(s.bf16)  # before the examples are built, so a user can stop at once
    ds = load(dataset) if isinstance(dataset, str) else dataset
    started = time.perf_counter()
    from rerank.backends import loaded_backends

    before = {id(b) for b in loaded_backends()}
    groups, counts, seconds = build_examples(ds, s)
    for backend in loaded_backends():
        if id(backend) not in before:
            backend.close()  # the generator's and the teacher's models: free them before the student trains
    tables: dict[str, tuple[Any, str]] = {}
    for name, gs in groups.items():
        loss = s.distill_loss if name == "distill" else s.loss
        columns, left_out = layout(gs, loss)
        counts[name]["left_out_by_loss"] = left_out
        counts[name]["examples"] = len(next(iter(columns.values()), []))
        if counts[name]["examples"]:
            tables[name] = (to_dataset(columns, s.seed), loss)
    if not tables:
        raise ConfigError(f"no training example fits the chosen losses ({counts})")
    from rerank.train.trainer import fit, load_student

    model = load_student(kind, s.base, s.max_length, s.seed)
    start = time.perf_counter()
    curve, steps = fit(kind, model, tables, out, s)
    seconds["training"] = time.perf_counter() - start
    model.save(str(out))
    seconds["total"] = time.perf_counter() - started
    record = TrainingRecord(ds.name, {"model": kind, **s.to_dict()}, counts, curve, seconds, steps, str(out), versions())
    record.save(out)
    logger.info("saved %s (%d steps, %.0f s); record in %s", out, steps, seconds["total"], out / "training_record.json")
    return record


def check_losses(kind: str, s: TrainSettings) -> tuple[str, str]:
    """``(loss, distill loss)`` for a ``kind`` student (``loss`` None: its default); ConfigError for a
    loss that the kind cannot train with."""
    one_of("model kind", kind, tuple(STUDENT_LOSSES))
    allowed = STUDENT_LOSSES[kind]
    chosen = (s.loss or allowed[0], s.distill_loss)
    for setting, loss in zip(("loss", "distill_loss"), chosen):
        if loss not in allowed:
            raise ConfigError(f"{setting}={loss!r} does not train a {kind}; choose one of {', '.join(allowed)}")
    return chosen
