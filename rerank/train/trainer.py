"""The student model and sentence-transformers' trainer around it (no training loop here):
``CrossEncoderTrainer`` for a cross-encoder, ``SentenceTransformerTrainer`` for a bi-encoder.

Checkpoints go to ``<out>/checkpoints`` every ``save_steps`` steps (the last two are kept);
``resume=True`` continues from the latest one. Seeds fix the head's initialization, the data order
and dropout.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rerank._progress import progress_enabled
from rerank.errors import ConfigError, one_line, require
from rerank.models import LOAD_ERRORS, cannot_load, check_kind, has_model_file, unloadable
from rerank.train.settings import TrainSettings

logger = logging.getLogger("rerank")

STUDENT_CLASSES = {"cross-encoder": "CrossEncoder", "bi-encoder": "SentenceTransformer"}
"""The sentence-transformers class of each kind of student (also the ``model_type`` its checkpoints record)."""


def load_student(kind: str, base: str, max_length: int, seed: int) -> Any:
    """The ``kind`` student from ``base``: a one-score CrossEncoder (a cross-encoder, or an encoder body
    that gets a new head), or a SentenceTransformer bi-encoder."""
    st = require("sentence_transformers", "train")
    from transformers import set_seed

    from rerank.encoders import resolve_encoder

    set_seed(seed)
    student = getattr(st, STUDENT_CLASSES[kind])
    if kind == "bi-encoder":
        model = student(resolve_encoder(base))
        model.max_seq_length = max_length
        return model
    with _errors_only(*EXPECTED_LOAD_NOTICES):
        model = student(resolve_encoder(base), num_labels=1, max_length=max_length)
    if model.num_labels != 1:
        raise ConfigError(f"{base} has {model.num_labels} output labels; start from an encoder or a one-score cross-encoder")
    return model


EXPECTED_LOAD_NOTICES = ("transformers.modeling_utils", "transformers.utils.loading_report",
                         "transformers.distributed.tensor_parallel", "sentence_transformers.base.model")
"""Loggers whose warnings are expected when an encoder body becomes a cross-encoder: the new head is not
in the checkpoint ("newly initialized"), the conversion itself, and transformers' tensor-parallel plan
check, which lists every layer as "not sharded" on a single device."""


@contextmanager
def _errors_only(*names: str) -> Iterator[None]:
    """Only errors from the loggers ``names`` inside the block; their levels are restored after it."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def check_base(kind: str, base: str, max_length: int) -> None:
    """Refuse (ConfigError), before any example is built, a ``base`` that is no loadable model (a missing
    folder, a folder that holds no model, a hub id that cannot be fetched), a cross-encoder as a bi-encoder's
    start (its head would be dropped), and a ``max_length`` beyond its position embeddings. A bi-encoder
    may also start from a sentence-transformers folder or repository without a transformers config
    (``modules.json``: static embeddings, older layouts). A cross-encoder may start from a bi-encoder
    (the default): its body gets a new head, and nothing it was trained with is dropped but its pooling."""
    require("transformers", "train")
    from transformers import AutoConfig

    from rerank.encoders import resolve_encoder

    what = "base (--from) model"
    path = resolve_encoder(base) if base.strip() else base
    if problem := unloadable(path):
        raise cannot_load(what, base, problem)
    folder = Path(path).expanduser()
    markers = ("config.json", "modules.json") if kind == "bi-encoder" else ("config.json",)
    if folder.is_dir() and not any((folder / m).is_file() for m in markers):
        raise cannot_load(what, base, f"{folder} is a folder without {' or '.join(markers)}, not a model")
    if kind == "bi-encoder":
        check_kind(base, kind, "rerank train bi-encoder --from", path,
                   advice="start from a bi-encoder or an encoder body (by default all-MiniLM-L6-v2)")
    try:
        config = AutoConfig.from_pretrained(path)
    except LOAD_ERRORS as e:
        if kind == "bi-encoder" and has_model_file(path, "modules.json"):
            return  # a sentence-transformers model without a transformers config: no position limit to check
        raise cannot_load(what, base, e) from None
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and max_length > limit:
        raise ConfigError(f"max_length={max_length} (--max-length) is longer than {base} takes ({limit} positions)")


def make_loss(kind: str, name: str, model: Any) -> Any:
    """sentence-transformers' loss ``name`` for a ``kind`` student (checked by ``run.check_losses``)."""
    if kind == "bi-encoder":
        from sentence_transformers.sentence_transformer import losses as bi

        table = {"mnrl": bi.MultipleNegativesRankingLoss, "margin-mse": bi.MarginMSELoss}
    else:
        from sentence_transformers.cross_encoder import losses as ce

        table = {"bce": ce.BinaryCrossEntropyLoss, "margin-mse": ce.MarginMSELoss, "listnet": ce.ListNetLoss,
                 "lambda": ce.LambdaLoss}
    return table[name](model)


def arguments_class(kind: str) -> type:
    """sentence-transformers' training arguments of a ``kind`` student."""
    require("sentence_transformers", "train")
    if kind == "bi-encoder":
        from sentence_transformers import SentenceTransformerTrainingArguments

        return SentenceTransformerTrainingArguments
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments

    return CrossEncoderTrainingArguments


def training_arguments(kind: str, s: TrainSettings, checkpoints: Path, steps: int) -> Any:
    """The trainer's arguments: those rerank sets from ``s``, then ``s.extra`` (ConfigError for an unknown
    key, one rerank sets itself, or a value the arguments refuse)."""
    own = dict(
        output_dir=str(checkpoints), num_train_epochs=s.epochs, max_steps=s.max_steps,
        per_device_train_batch_size=s.batch_size, learning_rate=s.learning_rate,
        warmup_steps=math.ceil(steps * s.warmup_ratio),  # steps, not a ratio: older transformers read 0.1 as 0.1 steps
        seed=s.seed, data_seed=s.seed, bf16=s.bf16, logging_steps=max(1, steps // 50), logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN loss is logged as NaN (and refused), not hidden as 0.0
        save_strategy="steps", save_steps=s.save_steps, save_total_limit=2, report_to="none",
        disable_tqdm=not progress_enabled(s.progress, steps), dataloader_num_workers=0,
        use_cpu=s.bf16 and not _cuda())  # transformers wants bf16 on CPU said explicitly
    defaults: dict[str, Any] = {"dataloader_pin_memory": _cuda()}  # pinning needs an accelerator (torch warns)
    if kind == "bi-encoder":  # in-batch negatives must not be copies of a batch's positives (extra may change it)
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers

        defaults["batch_sampler"] = BatchSamplers.NO_DUPLICATES
    arguments = arguments_class(kind)
    known = {f.name for f in dataclasses.fields(arguments) if f.init}
    unknown, taken = sorted(set(s.extra) - known), sorted(set(s.extra) & set(own))
    if unknown:
        raise ConfigError(f"extra: {unknown} are not training arguments of {arguments.__name__}")
    if taken:
        raise ConfigError(f"extra: rerank sets {taken} from its own settings (epochs, max_steps, batch_size, "
                          "learning_rate, seed, bf16, save_steps, ...); change those instead")
    for f in (f for f in dataclasses.fields(arguments) if f.name in s.extra):
        _check_extra_type(f.name, s.extra[f.name], f.default)
    try:
        return arguments(**own, **{**defaults, **s.extra})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"extra={s.extra!r}: {arguments.__name__} refuses it: {one_line(e)}") from None


def _check_extra_type(name: str, value: Any, default: Any) -> None:
    """Refuse (ConfigError) an ``extra`` value of another type than the argument's default: the
    arguments class does not check types, and torch would fail deep inside the first step."""
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int | float):
        ok, want = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value), "a finite number"
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "text"
    else:
        return
    if not ok:
        raise ConfigError(f"extra: {name} must be {want} (its default is {default!r}), got {value!r}")


Curve = list[tuple[int, float]]
"""(step, training loss) as the trainer logs it: the mean over the batches since the last log."""


def fit(kind: str, model: Any, tables: dict[str, tuple[Any, str]], out: Path, s: TrainSettings) -> tuple[Curve, dict[str, Curve], int]:
    """Train ``model`` on ``{name: (datasets.Dataset, loss name)}``; returns the loss curve, the curve of
    each table when there are several (each its own loss, on its own scale), and the steps run.

    ConfigError when the logged loss, or the trained model's weights or scores, are not finite (the model
    is then not saved)."""
    if kind == "bi-encoder":
        from sentence_transformers import SentenceTransformerTrainer as Trainer
    else:
        from sentence_transformers.cross_encoder import CrossEncoderTrainer as Trainer
    checkpoints = out / "checkpoints"
    total = sum(len(d) for d, _ in tables.values())
    steps = s.max_steps if s.max_steps > 0 else max(1, int(s.epochs * -(-total // s.batch_size)))
    args = training_arguments(kind, s, checkpoints, steps)
    names = list(tables)
    if len(names) == 1:
        data, loss = tables[names[0]][0], make_loss(kind, tables[names[0]][1], model)
    else:
        data = {n: tables[n][0] for n in names}
        loss = {n: make_loss(kind, tables[n][1], model) for n in names}
        Trainer = logging_each_source(Trainer)
    trainer = Trainer(model=model, args=args, train_dataset=data, loss=loss)
    if s.max_steps <= 0:  # the trainer's own count, as it will run: several sources are batched each apart
        per_epoch = max(len(trainer.get_train_dataloader()) // args.gradient_accumulation_steps, 1)
        steps = max(1, math.ceil(s.epochs * per_epoch))
        args.warmup_steps, args.logging_steps = math.ceil(steps * s.warmup_ratio), max(1, steps // 50)
    if args.disable_tqdm:  # without bars, transformers prints every log line to stdout instead
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    resume = last_checkpoint(checkpoints) if s.resume else None  # none: check_out has warned
    done = json.loads((resume / "trainer_state.json").read_text(encoding="utf-8"))["global_step"] if resume else 0
    if done >= steps:  # the trainer would run one more step and change the model
        raise ConfigError(f"the run in {out} is complete ({done} steps of {steps}); raise max_steps (--max-steps) or epochs (--epochs) to train on")
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    check_finite_loss(trainer.state.log_history, checkpoints)
    check_finite_model(kind, model, tables, int(trainer.state.global_step), checkpoints)
    history = trainer.state.log_history  # kept in checkpoints, so a resumed run has the whole curve
    by_source = {n: _curve(history, f"loss_{n}") for n in names} if len(names) > 1 else {}
    return _curve(history, "loss"), by_source, int(trainer.state.global_step)


def _curve(history: list[dict[str, Any]], key: str) -> Curve:
    """(step, value) of ``key`` in the trainer's log history."""
    return [(int(h["step"]), float(h[key])) for h in history if key in h]


def logging_each_source(trainer_class: type) -> type:
    """``trainer_class`` that also logs ``loss_<source>``, the mean loss of each source's batches since
    the last log (a multi-dataset trainer logs only their mean over all sources)."""

    class EachSource(trainer_class):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.source_sums: dict[str, tuple[float, int]] = {}  # since the last log: (sum of losses, batches)

        def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            source = inputs.get("dataset_name")  # the trainer pops it from the batch
            loss = super().compute_loss(model, inputs, *args, **kwargs)
            if model.training and source is not None:
                value = float((loss[0] if isinstance(loss, tuple) else loss).detach())
                total, count = self.source_sums.get(source, (0.0, 0))
                self.source_sums[source] = (total + value, count + 1)
            return loss

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "loss" in logs:
                logs = {**logs, **{f"loss_{n}": total / count for n, (total, count) in self.source_sums.items()}}
                self.source_sums = {}
            super().log(logs, *args, **kwargs)

    return EachSource


def check_finite_loss(history: list[dict[str, Any]], checkpoints: Path) -> None:
    """Refuse (ConfigError) a training whose logged loss is NaN or infinite: its weights are unusable."""
    for entry in history:
        for key in ("loss", "train_loss"):
            if key in entry and not math.isfinite(entry[key]):
                raise ConfigError(_diverged(f"the training loss became {entry[key]} at step {entry.get('step', '?')}", checkpoints))


def check_finite_model(kind: str, model: Any, tables: dict[str, tuple[Any, str]], step: int, checkpoints: Path) -> None:
    """Refuse (ConfigError) a trained ``model`` whose weights, or whose scores (embeddings for a bi-encoder) of
    the first training examples, are not finite. Each step's loss is computed before its update, so the
    logged loss never sees what the last update did: one update can break a model whose loss was finite."""
    import numpy as np
    import torch

    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        broken = "weights"
    else:
        pairs, out = first_pairs(tables), np.zeros(0)
        with torch.no_grad():
            if pairs and kind == "bi-encoder":
                out = model.encode([text for pair in pairs for text in pair], show_progress_bar=False)
            elif pairs:
                out = model.predict(pairs, activation_fn=torch.nn.Identity(), show_progress_bar=False)
        finite = bool(np.isfinite(np.asarray(out, dtype=np.float64)).all())
        broken = "" if finite else "embeddings" if kind == "bi-encoder" else "scores"
    if broken:
        raise ConfigError(_diverged(f"the trained model's {broken} are not finite after step {step}, though the logged loss "
                                    "was (the last update broke it)", checkpoints))


def first_pairs(tables: dict[str, tuple[Any, str]], rows: int = 2) -> list[tuple[str, str]]:
    """(query, document) pairs of the first ``rows`` training examples of each table: its ``document``,
    ``document_<i>`` (margin-mse, mnrl) or ``documents`` (listwise losses) columns."""
    pairs = []
    for data, _ in tables.values():
        columns = data[:rows]
        for i, query in enumerate(columns.get("query", [])):
            for name in (n for n in columns if n.startswith("document")):
                value = columns[name][i]
                pairs += [(query, d) for d in (value if isinstance(value, list) else [value])]
    return pairs


def _diverged(what: str, checkpoints: Path) -> str:
    """The message of a training that diverged: ``what`` went wrong, and what to do."""
    return (f"{what}; the model was not saved and the checkpoints in {checkpoints} are unusable (delete them). Lower "
            "learning_rate (--learning-rate) or teacher_scale (--teacher-scale), or check the teacher's scores")


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The checkpoint ``resume`` continues from (the trainer's own choice), or None."""
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    return Path(found) if found else None


RESUME_STATE = ("optimizer.pt", "scheduler.pt")
"""Files of a checkpoint without which a resumed run would not continue the same training."""


def check_checkpoint(folder: Path, kind: str) -> None:
    """Refuse (ConfigError) a checkpoint that ``resume`` cannot continue a ``kind`` from: a missing or
    unreadable state, config or weights file, a truncated file, or a checkpoint of another kind of model."""
    from safetensors import SafetensorError, safe_open

    fix = "; delete it or drop --resume (resume=False)"
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
        held = json.loads((folder / "config_sentence_transformers.json").read_text(encoding="utf-8")).get("model_type")
        weights = sorted(folder.glob("*.safetensors"))
        if not weights or not isinstance(state, dict) or "global_step" not in state:
            raise ValueError("no weights or no training state")
        lost = [name for name in RESUME_STATE if not (folder / name).is_file()]
        if lost:  # the trainer would go on with a fresh optimizer and schedule, and say nothing
            raise ValueError(f"{', '.join(lost)} missing")
        for path in weights:
            with safe_open(str(path), "pt") as f:  # reads the header, which must cover the whole file
                list(f.keys())
        for path in (p for p in folder.iterdir() if p.suffix in (".pt", ".pth", ".bin")):
            with zipfile.ZipFile(path) as z:  # torch.save's format; testzip checks every member's CRC
                if z.testzip() is not None:
                    raise ValueError(f"{path.name} is corrupt")
    except (OSError, ValueError, AttributeError, zipfile.BadZipFile, SafetensorError) as e:
        raise ConfigError(f"checkpoint {folder} is damaged ({type(e).__name__}: {one_line(e)}){fix}") from None
    if held != STUDENT_CLASSES[kind]:
        raise ConfigError(f"checkpoint {folder} holds a {held}, not a {kind} ({STUDENT_CLASSES[kind]}){fix}")


def warn_slow_bf16(bf16: bool) -> bool:
    """Warn (and return True) when bf16 is asked on a CPU that emulates it: without AVX512-BF16 or
    AMX, a training step in bf16 autocast took 20-26x as long as in float32 (284 s against 11-14 s
    for 128 MiniLM pairs on an AVX2 EPYC, torch 2.13)."""
    from rerank.encoders import native_bf16

    slow = bf16 and not _cuda() and not native_bf16("cpu")
    if slow:
        logger.warning("bf16 training on this CPU (no AVX512-BF16/AMX) is emulated and far slower than float32 "
                       "(20-26x in one measurement); drop bf16 (--bf16) unless the CPU has native bfloat16")
    return slow


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
