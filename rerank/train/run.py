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

import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rerank._progress import library_bars
from rerank.data import Dataset
from rerank.errors import ConfigError, RerankError, one_line, one_of, require
from rerank.models import has_model_file, weights_stamp
from rerank.train import sources
from rerank.train.examples import Group, layout, to_dataset
from rerank.train.record import TrainingRecord, versions
from rerank.train.settings import RESUMABLE, STUDENT_LOSSES, TrainSettings, flag, named
from rerank.train.trainer import (check_base, check_checkpoint, last_checkpoint, training_arguments,
                                  warn_slow_bf16)

logger = logging.getLogger("rerank")

RUN_SETTINGS = "run_settings.json"
"""The settings a run's checkpoints were trained with (what ``resume`` must match), written before it trains."""
OUTPUT_MARKERS = ("training_record.json", "config.json", "checkpoints", RUN_SETTINGS)
"""What a folder that a training run wrote (or began to write) holds."""


def check_expressions(s: TrainSettings) -> None:
    """Parse every stage expression the settings use, before any expensive work (raises ConfigError);
    those that must find documents for bare queries must start with a retriever."""
    from rerank.encoders import resolve_encoder
    from rerank.expr import build
    from rerank.models import cannot_load, unloadable
    from rerank.rerankers.base import starts_with_retrieval
    from rerank.stage import leaves

    used = {"qrels": ["negatives"], "synthetic": ["encoder", "roundtrip", "negatives"], "distill": ["teacher"]}
    if s.data == ("distill",):
        used["distill"] += used["synthetic"]
    for source in s.data:
        for name in used[source]:
            expr = getattr(s, name)
            stage = build(expr)
            if name != "encoder" and not starts_with_retrieval(stage):  # the encoder has its own check (dense)
                raise ConfigError(f"{name}={expr!r} (--{name}) reranks but retrieves nothing; give a first stage, "
                                  f"e.g. 'bm25 % 100 >> {expr}'")
            for model in (m for leaf in leaves(stage) if isinstance(m := getattr(leaf, "model", None), str)):
                if problem := unloadable(model) or _not_fetchable(resolve_encoder(model)):  # now, not after the examples
                    raise cannot_load(f"{name} (--{name}) model", model, problem)


def _not_fetchable(model: str) -> str:
    """Why the hub id ``model`` cannot be loaded (neither cached nor on the hub), else ``""`` (also for a folder)."""
    if Path(model).expanduser().exists() or any(has_model_file(model, f) for f in ("config.json", "modules.json")):
        return ""
    return "not a local folder, and neither in the hub cache nor reachable on the hub"


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
    if settings is not None and not isinstance(settings, TrainSettings):
        raise ConfigError(f"settings must be a TrainSettings (or give its fields as keywords: data=[...]), got {settings!r:.60}")
    if not isinstance(dataset, str | Dataset):
        raise ConfigError(f"dataset must be a dataset name, a folder or a Dataset, got {dataset!r:.60}")
    if not isinstance(out, str | Path) or not str(out).strip():
        raise ConfigError(f"out must be the folder to save the model in, got {out!r:.60}")
    s = (settings or TrainSettings()).with_(**changes)
    for module in ("datasets", "accelerate", "matplotlib"):  # the train extra, before anything expensive
        require(module, "train")
    s = s.with_(loss=check_losses(kind, s)[0])
    warn_unread(s)
    check_inputs(kind, dataset, s)
    created = not Path(out).exists()
    out = check_out(Path(out), kind, s)
    try:
        return _train(kind, dataset, out, s)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before it wrote anything leaves no empty folder behind
        raise


def _train(kind: str, dataset: str | Dataset, out: Path, s: TrainSettings) -> TrainingRecord:
    """The run itself, once its settings and output folder are checked."""
    from rerank.backends import loaded_backends
    from rerank.data import load

    warn_slow_bf16(s.bf16)  # before the examples are built, so a user can stop at once

    before = {id(b) for b in loaded_backends()}
    ds = load(dataset) if isinstance(dataset, str) else dataset
    resuming = s.resume and last_checkpoint(out / "checkpoints") is not None
    started = time.perf_counter()
    check_generator(s)
    groups, counts, seconds = build_examples(ds, s)
    for backend in loaded_backends():
        if id(backend) not in before:
            backend.close()  # the generator's and the teacher's models: free them before the student trains
    tables: dict[str, tuple[Any, str]] = {}
    examples = hashlib.sha256()  # what a resumed run must train on again: every example, whatever it was made from
    for name, gs in groups.items():
        loss = s.distill_loss if name == "distill" else s.loss
        columns, left_out = layout(gs, loss)
        counts[name]["left_out_by_loss"] = left_out
        counts[name]["examples"] = len(next(iter(columns.values()), []))
        if counts[name]["examples"]:
            tables[name] = (to_dataset(columns, s.seed), loss)
            examples.update(json.dumps([name, loss, columns], default=str).encode("utf-8", "surrogatepass"))
    trained_on = {"dataset": ds.name, "examples": examples.hexdigest()}
    if resuming:
        check_same_data(out / RUN_SETTINGS, trained_on)
    if not tables:
        short = counts.get("distill", {}).get("short_teacher_lists", 0)
        hint = (f"; the teacher gave fewer than teacher_docs={s.teacher_docs} documents for {short} queries: give "
                "it a deeper list (its cut-off, teacher_depth) or lower teacher_docs") if short else ""
        raise ConfigError(f"no training example fits the chosen losses{hint} ({counts})")
    from rerank.train.trainer import fit, load_student

    if not resuming:
        (out / RUN_SETTINGS).write_text(json.dumps({**run_settings(kind, s), **trained_on}, indent=2), encoding="utf-8")
    with library_bars(s.progress):
        model = load_student(kind, s.base, s.max_length, s.seed)
        start = time.perf_counter()
        curve, curves, steps = fit(kind, model, tables, out, s)
        seconds["training"] = time.perf_counter() - start
        model.save(str(out))
    seconds["total"] = time.perf_counter() - started
    record = TrainingRecord(ds.name, {"model": kind, **s.to_dict()}, counts, curve, seconds, steps, str(out), versions(), curves)
    record.save(out)
    logger.info("saved %s (%d steps, %.0f s); record in %s", out, steps, seconds["total"], out / "training_record.json")
    return record


READ_BY = {("train_split", "train_dataset"): "qrels", ("teacher", "teacher_depth", "teacher_docs", "teacher_norm",
           "teacher_scale", "distill_loss"): "distill"}
"""Settings only one data source reads."""


def warn_unread(s: TrainSettings) -> None:
    """Warn about settings given to a run that does not read them: the LLM generator's without it, a
    source's without that source (``--train-dataset`` without ``--data qrels`` trains on no labels)."""
    generates = "synthetic" in s.data or s.data == ("distill",)
    defaults = TrainSettings()
    unread = [n for n in ("backend", "prompt") if getattr(s, n) != getattr(defaults, n)]
    if unread and (s.generator != "llm" or not generates):
        why = f"generator={s.generator!r}" if generates else "no synthetic queries are made"
        logger.warning("%s (--%s) is read only by the llm generator; %s: not read",
                       " and ".join(unread), " --".join(unread), why)
    for names, source in READ_BY.items():
        given = [n for n in names if getattr(s, n) != getattr(defaults, n)]
        if given and source not in s.data:
            logger.warning("%s: read only by --data %s, which this run does not use: not read",
                           ", ".join(named(n) for n in given), source)


def check_inputs(kind: str, dataset: str | Dataset, s: TrainSettings) -> None:
    """The checks that need no data: the dataset name, the stage expressions, the start checkpoint and its
    ``max_length``, and the trainer's arguments with ``extra`` (ConfigError)."""
    if isinstance(dataset, str) and not dataset.strip():
        raise ConfigError(f"dataset={dataset!r} (--dataset) is empty; give a dataset name, a BEIR folder or irds:<id>")
    check_expressions(s)
    check_base(kind, s.base, s.max_length)
    training_arguments(kind, s, Path("checkpoints"), max(1, s.max_steps))


def check_out(out: Path, kind: str, s: TrainSettings) -> Path:
    """``out`` if the run may write there: absent, empty, or a previous training output of a ``kind`` (one
    with a model only with ``resume``, whose latest checkpoint must be sound; ``resume`` without a
    checkpoint starts a new run, with a warning). Created now, so that an unwritable path fails before
    any work (ConfigError; DataError for a damaged record)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} (--out) exists and is not a folder; choose a new folder for the model")
    if out.is_dir() and any(out.iterdir()) and not any((out / m).exists() for m in OUTPUT_MARKERS):
        raise ConfigError(f"{out} (--out) is a folder that does not hold a training output; choose a new or empty folder")
    checkpoint = last_checkpoint(out / "checkpoints")
    if (out / "config.json").exists() and (checkpoint is None or not s.resume):
        resumable = " (or continue its run: --resume, resume=True)" if checkpoint is not None else ""
        unresumable = ", and no checkpoint to resume" if s.resume and checkpoint is None else ""
        raise ConfigError(f"{out} already holds a model{unresumable}; choose another output folder{resumable}")
    held = TrainingRecord.load(out).settings.get("model", "cross-encoder") if (out / "training_record.json").exists() else kind
    if held != kind:
        raise ConfigError(f"{out} holds a {held}, not a {kind}; resume it as a {held} or choose another output folder")
    if checkpoint is not None and not s.resume:
        raise ConfigError(f"{out} holds checkpoints of an earlier run ({checkpoint.name}); continue it with --resume "
                          "(resume=True) or choose another output folder")
    if checkpoint is not None:
        check_checkpoint(checkpoint, kind)
        check_same_run(out / RUN_SETTINGS, kind, s)
    elif s.resume:  # "start or continue": a script may always pass --resume; a mistyped --out shows here
        logger.warning("--resume: %s holds no checkpoint; starting a new run", out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        raise ConfigError(f"cannot write the model to {out} (--out): {e.strerror or e}") from None
    return out


def check_same_run(path: Path, kind: str, s: TrainSettings) -> None:
    """Refuse (ConfigError) to resume a run whose saved settings differ from ``s`` in more than
    :data:`RESUMABLE` (its checkpoints hold another run's steps, which the record would misname)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path.parent} holds checkpoints but not the settings they were trained with ({path.name}); "
                          "they cannot be resumed safely: delete the checkpoints or choose another output folder") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is damaged ({one_line(e)}); delete the checkpoints or choose another output folder") from None
    now = run_settings(kind, s)
    changed = sorted(k for k in (set(saved) | set(now)) - set(DATA_KEYS) if saved.get(k) != now.get(k))
    if changed:
        first = changed[0]
        raise ConfigError(f"--resume continues the run in {path.parent}, trained with other settings: {', '.join(map(named, changed))} "
                          f"(e.g. {first}={saved.get(first)!r}, now {now.get(first)!r}); only "
                          f"{', '.join(RESUMABLE[:3])} may change, or choose another output folder")


def run_settings(kind: str, s: TrainSettings) -> dict[str, Any]:
    """What identifies a run's checkpoints before its data is read: the student's kind, every setting but
    :data:`RESUMABLE`, and a stamp of a local start checkpoint (``--from``) folder."""
    settings = {"model": kind, **{k: v for k, v in s.to_dict().items() if k not in RESUMABLE}}
    if stamp := weights_stamp(s.base):
        settings["base_stamp"] = stamp
    return json.loads(json.dumps(settings, default=str))


DATA_KEYS = ("dataset", "content", "examples")
"""What :data:`RUN_SETTINGS` records of the data a run trained on (checked once the examples are built;
``content``: a dataset hash that runs saved before the examples' digest recorded)."""


def check_same_data(path: Path, trained_on: dict[str, str]) -> None:
    """Refuse (ConfigError) to resume a run whose checkpoints were trained on another dataset or on other
    examples: this dataset before its files, its training judgments, or a teacher's or a negative miner's
    model changed."""
    saved = json.loads(path.read_text(encoding="utf-8"))
    where = f"--resume continues the run in {path.parent}"
    if saved.get("dataset") != trained_on["dataset"]:
        raise ConfigError(f"{where}, trained on {saved.get('dataset')!r}, not {trained_on['dataset']!r}; choose another output folder")
    if "examples" not in saved:
        raise ConfigError(f"{where}, saved by an earlier rerank that did not record its examples, so it cannot be "
                          "continued safely; choose another output folder")
    if saved["examples"] != trained_on["examples"]:
        raise ConfigError(f"{where}, trained on other examples from {saved['dataset']!r} (its files, training judgments, "
                          "or a teacher's or negative miner's model changed since); choose another output folder")


def check_generator(s: TrainSettings) -> None:
    """Load the ``llm`` generator's backend now (it stays loaded for the run), so that a model that cannot
    be loaded fails before the documents are sampled (ConfigError naming ``backend``)."""
    if s.generator != "llm" or not ("synthetic" in s.data or s.data == ("distill",)):
        return
    from rerank.backends import load_backend

    try:
        load_backend(s.backend)
    except RerankError:
        raise
    except (OSError, ValueError) as e:
        raise ConfigError(f"backend={s.backend!r} (--backend) cannot be loaded ({one_line(e)})") from None


def check_losses(kind: str, s: TrainSettings) -> tuple[str, str]:
    """``(loss, distill loss)`` for a ``kind`` student (``loss`` None: its default); ConfigError for a
    loss that the kind cannot train with."""
    one_of("model kind", kind, tuple(STUDENT_LOSSES))
    allowed = STUDENT_LOSSES[kind]
    chosen = (s.loss or allowed[0], s.distill_loss)
    for setting, loss in zip(("loss", "distill_loss"), chosen):
        if loss not in allowed:
            raise ConfigError(f"{setting}={loss!r} ({flag(setting)}) does not train a {kind}; choose one of {', '.join(allowed)}")
    return chosen
