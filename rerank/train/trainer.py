"""The student model and sentence-transformers' trainer around it (no training loop here):
``CrossEncoderTrainer`` for a cross-encoder, ``SentenceTransformerTrainer`` for a bi-encoder.

Checkpoints go to ``<out>/checkpoints`` every ``save_steps`` steps (the last two are kept);
``resume=True`` continues from the latest one. Seeds fix the head's initialization, the data order
and dropout.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from rerank._progress import progress_enabled
from rerank.errors import ConfigError, require
from rerank.train.settings import TrainSettings

logger = logging.getLogger("rerank")


def load_student(kind: str, base: str, max_length: int, seed: int) -> Any:
    """The ``kind`` student from ``base``: a one-score CrossEncoder (a cross-encoder, or an encoder body
    that gets a new head), or a SentenceTransformer bi-encoder."""
    st = require("sentence_transformers", "train")
    from transformers import set_seed

    from rerank.encoders import resolve_encoder

    set_seed(seed)
    if kind == "bi-encoder":
        model = st.SentenceTransformer(resolve_encoder(base))
        model.max_seq_length = max_length
        return model
    for name in ("transformers.modeling_utils", "transformers.utils.loading_report"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "newly initialized head" is expected here
    model = st.CrossEncoder(resolve_encoder(base), num_labels=1, max_length=max_length)
    if model.num_labels != 1:
        raise ConfigError(f"{base} has {model.num_labels} output labels; start from an encoder or a one-score cross-encoder")
    return model


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


def fit(kind: str, model: Any, tables: dict[str, tuple[Any, str]], out: Path, s: TrainSettings) -> tuple[list[tuple[int, float]], int]:
    """Train ``model`` on ``{name: (datasets.Dataset, loss name)}``; returns the loss curve and the steps run."""
    if kind == "bi-encoder":
        from sentence_transformers import SentenceTransformerTrainer as Trainer
        from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers

        # in-batch negatives must not be copies of a batch's positives
        own: dict[str, Any] = {"batch_sampler": BatchSamplers.NO_DUPLICATES}
    else:
        from sentence_transformers.cross_encoder import CrossEncoderTrainer as Trainer
        from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments as Arguments

        own = {}
    checkpoints = out / "checkpoints"
    total = sum(len(d) for d, _ in tables.values())
    steps = s.max_steps if s.max_steps > 0 else max(1, int(s.epochs * -(-total // s.batch_size)))
    args = Arguments(
        output_dir=str(checkpoints), num_train_epochs=s.epochs, max_steps=s.max_steps,
        per_device_train_batch_size=s.batch_size, learning_rate=s.learning_rate,
        warmup_steps=math.ceil(steps * s.warmup_ratio),  # steps, not a ratio: older transformers read 0.1 as 0.1 steps
        seed=s.seed, data_seed=s.seed, bf16=s.bf16, logging_steps=max(1, steps // 50), logging_first_step=True,
        save_strategy="steps", save_steps=s.save_steps, save_total_limit=2, report_to="none",
        disable_tqdm=not progress_enabled(s.progress, steps), dataloader_num_workers=0,
        use_cpu=s.bf16 and not _cuda(), **{**own, **s.extra})  # transformers wants bf16 on CPU said explicitly
    names = list(tables)
    if len(names) == 1:
        data, loss = tables[names[0]][0], make_loss(kind, tables[names[0]][1], model)
    else:
        data = {n: tables[n][0] for n in names}
        loss = {n: make_loss(kind, tables[n][1], model) for n in names}
    trainer = Trainer(model=model, args=args, train_dataset=data, loss=loss)
    if args.disable_tqdm:  # without bars, transformers prints every log line to stdout instead
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    resume = s.resume and any(checkpoints.glob("checkpoint-*"))
    if s.resume and not resume:
        logger.info("resume: no checkpoint in %s, starting from the beginning", checkpoints)
    trainer.train(resume_from_checkpoint=True if resume else None)
    curve = [(int(h["step"]), float(h["loss"])) for h in trainer.state.log_history if "loss" in h]
    return curve, int(trainer.state.global_step)


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
