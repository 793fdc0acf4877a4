"""``rerank train cross-encoder|bi-encoder --dataset D --out DIR [--from MODEL] [--data qrels|synthetic|distill ...]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rerank.train.settings import GENERATORS, LOSSES, SOURCES, STUDENT_LOSSES, TEACHER_NORMS, TrainSettings

_D = TrainSettings()


KINDS = {"cross-encoder": ("train a cross-encoder (sentence-transformers) on a dataset's corpus", "cross-encoder"),
         "bi-encoder": ("fine-tune the bi-encoder on the same data, GPL-style (dense retrieval and rescoring)", "dense")}
"""Student kind -> (help, the stage that loads the trained model)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    kinds = p.add_subparsers(required=True, metavar="model")
    for kind, (text, _) in KINDS.items():
        _add_kind(kinds.add_parser(kind, help=text), kind)


def _add_kind(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--dataset", required=True, help="dataset name, BEIR folder or irds:<id>; its corpus is trained on")
    p.add_argument("--out", type=Path, required=True, help="folder for the model, its record and checkpoints")
    p.add_argument("--from", dest="base", default=_D.base, help="start checkpoint (default: the offline all-MiniLM-L6-v2; a cross-encoder gets a new head)")
    p.add_argument("--data", nargs="+", choices=SOURCES, default=list(_D.data), help="data sources (combinable)")
    g = p.add_argument_group("labels (qrels)")
    g.add_argument("--train-split", default=_D.train_split, help="qrels split of a BEIR folder (qrels/<split>.tsv)")
    g.add_argument("--train-dataset", help="separate dataset with the training queries and qrels (irds:beir/scifact/train)")
    g.add_argument("--negatives", default=_D.negatives, help="stage expression mining hard negatives (bm25, dense, 'bm25 | dense')")
    g.add_argument("--negatives-depth", type=int, default=_D.negatives_depth)
    g.add_argument("--num-negatives", type=int, default=_D.num_negatives)
    g = p.add_argument_group("synthetic queries")
    g.add_argument("--generator", choices=GENERATORS, default=_D.generator)
    g.add_argument("--backend", default=_D.backend, help="LLM backend spec of the llm generator")
    g.add_argument("--prompt", default=_D.prompt, help="query-generation prompt (name or YAML file)")
    g.add_argument("--num-documents", type=int, default=_D.num_documents)
    g.add_argument("--clusters", type=int, default=_D.clusters)
    g.add_argument("--queries-per-document", type=int, default=_D.queries_per_document)
    g.add_argument("--encoder", default=_D.encoder, help="dense stage whose embeddings are clustered")
    g.add_argument("--roundtrip", default=_D.roundtrip, help="first stage of the round-trip filter")
    g.add_argument("--roundtrip-k", type=int, default=_D.roundtrip_k)
    g.add_argument("--min-words", type=int, default=_D.min_words)
    g = p.add_argument_group("distillation")
    g.add_argument("--teacher", default=_D.teacher, help="teacher stage expression")
    g.add_argument("--teacher-depth", type=int, default=_D.teacher_depth)
    g.add_argument("--teacher-docs", type=int, default=_D.teacher_docs)
    g.add_argument("--teacher-norm", choices=TEACHER_NORMS, default=_D.teacher_norm)
    g.add_argument("--teacher-scale", type=float, default=_D.teacher_scale)
    g.add_argument("--distill-loss", choices=LOSSES, default=_D.distill_loss)
    g = p.add_argument_group("training")
    g.add_argument("--loss", choices=LOSSES, default=_D.loss, help=f"default {STUDENT_LOSSES[kind][0]}; "
                   f"a {kind} trains with {', '.join(STUDENT_LOSSES[kind])}")
    g.add_argument("--epochs", type=float, default=_D.epochs)
    g.add_argument("--max-steps", type=int, default=_D.max_steps)
    g.add_argument("--batch-size", type=int, default=_D.batch_size)
    g.add_argument("--learning-rate", type=float, default=_D.learning_rate)
    g.add_argument("--warmup-ratio", type=float, default=_D.warmup_ratio)
    g.add_argument("--max-length", type=int, default=_D.max_length)
    g.add_argument("--bf16", action="store_true", help="train in bfloat16 autocast (fast on GPUs and CPUs with AVX512-BF16/AMX; emulated and far slower elsewhere)")
    g.add_argument("--seed", type=int, default=_D.seed)
    g.add_argument("--save-steps", type=int, default=_D.save_steps)
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUT/checkpoints")
    g.add_argument("--cache", help="call cache file (default $RERANK_CACHE/calls.sqlite)")
    p.set_defaults(func=run_from_args, kind=kind)


def run_from_args(args: argparse.Namespace) -> int:
    from rerank.train.run import train_model

    names = [f for f in TrainSettings.__dataclass_fields__ if f not in ("extra", "progress")]
    values = {n: getattr(args, n) for n in names if hasattr(args, n)}
    settings = TrainSettings(**{**values, "data": tuple(args.data), "progress": False if args.quiet else None})
    record = train_model(args.kind, args.dataset, args.out, settings)
    print(json.dumps({"model": record.model_dir, "steps": record.steps, "seconds": round(record.seconds["total"], 1),
                      "counts": record.counts}, indent=1))
    print(f"use it as: {KINDS[args.kind][1]}(model='{record.model_dir}')")
    return 0
