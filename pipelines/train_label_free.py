"""Label-free rerankers: train on a collection's corpus only, evaluate on its (unseen) test queries.

For each dataset and query generator, a cross-encoder is trained from the offline MiniLM body on
synthetic queries (``rerank.train``; the corpus is the only input), then compared on the test queries:

* ``BM25`` (the baseline of the paired t-test);
* ``BM25 top-D >> bi-encoder`` (the offline MiniLM, rescoring with the dense index's embeddings),
  and ``BM25 + bi-encoder, interpolated``: the control for the interpolated rows below;
* ``BM25 top-D >> CE[<generator>]`` (the trained cross-encoder; ``CE[<generator>+distill]`` when it
  learned a label-free teacher's scores, ``--data distill``: by default the fusion of BM25 and the
  MiniLM bi-encoder, over the same synthetic queries);
* ``BM25 + CE[<generator>], interpolated``: the usual interpolation of a new reranker with its first
  stage, the sum of both scores min-max normalized per query, with equal weights fixed in advance.
* with ``--students cross-encoder bi-encoder``, also ``BM25 top-D >> BE[<generator>]`` and its
  interpolation: the MiniLM bi-encoder fine-tuned on the same examples, GPL-style (MNRL on the
  synthetic queries, MarginMSE on the teacher's scores).

Reported: nDCG@10 with paired t-test p-values against BM25, wins/losses, training minutes, rerank
milliseconds per query (retrieval or reranking only: stages are indexed, or read from the index cache,
and their models loaded before the clock, and warmed up on one query; interpolated rows add the
fusion), and the data counts (generated, kept by the round-trip filter). A model
already trained into ``--out`` with the same settings is reused.

    python pipelines/train_label_free.py --datasets scifact --generators sentence --out results/train
    python pipelines/train_label_free.py --datasets scifact nfcorpus cranfield --generators sentence llm \\
        --num-documents 600 --eval-limit 100 --out results/train
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rerank import Ranking, fuse
from rerank.data import load
from rerank.evaluate import evaluate_per_query
from rerank.expr import build
from rerank.significance import pvalue
from rerank.stage import Stage
from rerank.train import TrainingRecord, TrainSettings
from rerank.train.run import check_losses, train_model

from _args import positive  # pipelines/_args.py


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus", "cranfield"])
    p.add_argument("--generators", nargs="+", default=["sentence", "llm"], choices=["sentence", "title", "llm"])
    p.add_argument("--data", nargs="+", default=["synthetic"], choices=["synthetic", "distill"],
                   help="training data from the synthetic queries: their source documents as positives (synthetic), "
                        "a teacher's scores (distill), or both")
    p.add_argument("--teacher", default="bm25 % 100 | dense % 100", help="teacher stage for --data distill (label-free)")
    p.add_argument("--teacher-scale", type=float, default=TrainSettings.teacher_scale,
                   help="teacher scores are min-max scaled to [0, this] per query")
    p.add_argument("--out", type=Path, default=Path("results/train"))
    p.add_argument("--depth", type=positive, default=100, help="BM25 candidates reranked per query")
    p.add_argument("--eval-limit", type=positive,
                   help="evaluate on the first N judged test queries only, all where fewer (never used in training)")
    p.add_argument("--num-documents", type=positive, default=600)
    p.add_argument("--clusters", type=positive, default=50)
    p.add_argument("--num-negatives", type=positive, default=3)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=positive, default=16)
    p.add_argument("--max-length", type=positive, default=192)
    p.add_argument("--learning-rate", type=float, default=3e-5)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--backend", default="hf:smollm2")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--students", nargs="+", default=["cross-encoder"], choices=["cross-encoder", "bi-encoder"],
                   help="models trained on the same examples")
    args = p.parse_args()

    rows = []
    for name in args.datasets:
        ds = load(name)
        judged = set(ds.qrels())
        qids = [q.qid for q in ds.queries() if q.qid in judged][: args.eval_limit]
        topics = ds.topics().select(qids)
        bm25, bm25_ms = _timed(build("bm25", ds), topics, qids)
        candidates = bm25.top(args.depth)
        runs = {"BM25": (bm25, bm25_ms, None)}
        rescored, ms = _timed(build("dense", ds), candidates, qids)
        runs[f"BM25 top-{args.depth} >> bi-encoder"] = (rescored, ms, None)
        # the control for every interpolated row: the same interpolation with the untrained bi-encoder
        runs["BM25 + bi-encoder, interpolated"] = (*_interpolate(candidates, rescored, ms, qids), None)
        for gen in args.generators:
            settings = TrainSettings(data=tuple(args.data), teacher=args.teacher, teacher_scale=args.teacher_scale,
                                     generator=gen, backend=args.backend, num_documents=args.num_documents,
                                     clusters=args.clusters, num_negatives=args.num_negatives, epochs=args.epochs,
                                     batch_size=args.batch_size, max_length=args.max_length, learning_rate=args.learning_rate,
                                     bf16=args.bf16, seed=args.seed)
            label = "+".join([gen, *(d for d in args.data if d != "synthetic")])
            for kind in args.students:
                short, stage = STUDENTS[kind]
                folder = args.out / f"{ds.name}-{label}{'-bi' if kind == 'bi-encoder' else ''}"
                record = _reuse(folder, kind, settings) or train_model(kind, ds, folder, settings)
                reranked, ms = _timed(build(stage.format(folder=folder), ds), candidates, qids)
                runs[f"BM25 top-{args.depth} >> {short}[{label}]"] = (reranked, ms, record)
                runs[f"BM25 + {short}[{label}], interpolated"] = (*_interpolate(candidates, reranked, ms, qids), record)
        base = evaluate_per_query(runs["BM25"][0], ds, ["ndcg@10"])["ndcg@10"]
        base = base[base.index.isin(qids)]  # the evaluated queries only, also under --eval-limit
        for system, (run, ms, record) in runs.items():
            per_query = evaluate_per_query(run, ds, ["ndcg@10"])["ndcg@10"]
            a, b = per_query.loc[base.index].to_numpy(), base.to_numpy()
            syn = record.counts.get("synthetic", {}) if record else {}
            rows.append({"dataset": ds.name, "system": system, "queries": len(qids), "ndcg@10": float(a.mean()),
                         "p": pvalue(a, b), "wins": int((a > b).sum()), "losses": int((a < b).sum()),
                         "train_min": record.seconds["total"] / 60 if record else None, "ms_per_query": ms,
                         "generated": syn.get("generated"), "kept": syn.get("roundtrip_kept"),
                         "examples": sum(c.get("examples", 0) for c in record.counts.values()) if record else None,
                         "steps": record.steps if record else None})
            print(_line(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "label_free.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    table = "\n".join([HEADER, "|" + "---|" * 10] + [_line(r) for r in rows])
    (args.out / "label_free.md").write_text(table + "\n")
    print("\n" + table)


HEADER = "| dataset | system | queries | nDCG@10 | p vs BM25 | W/L | train min | rerank ms/q | generated / kept | examples |"


def _line(r: dict) -> str:
    mark = "†" if r["p"] < 0.05 and r["system"] != "BM25" else ""
    train = f"{r['train_min']:.1f}" if r["train_min"] is not None else "–"
    data = f"{r['generated']} / {r['kept']}" if r["generated"] is not None else "–"
    return (f"| {r['dataset']} | {r['system']} | {r['queries']} | {r['ndcg@10']:.4f}{mark} | {r['p']:.3g} | "
            f"{r['wins']}/{r['losses']} | {train} | {r['ms_per_query']:.0f} | {data} | {r['examples'] or '–'} |")


def _timed(stage: Stage, ranking: Ranking, qids: list[str]) -> tuple[Ranking, float]:
    """``stage(ranking)`` and its milliseconds per query, after an untimed warm-up on the first query
    (a lazy model load, first-call compilation); the stage is built (indexed) before this."""
    stage(ranking.select(list(ranking.queries())[:1]))
    start = time.perf_counter()
    out = stage(ranking)
    return out, _ms(start, qids)


def _interpolate(first: Ranking, reranked: Ranking, ms: float, qids: list[str]) -> tuple[Ranking, float]:
    """Equal weights on per-query min-max scores, fixed in advance (not tuned); ``ms`` per query plus the fusion's."""
    start = time.perf_counter()
    fused = fuse([first, reranked], method="wsum", norm="min-max", weights=[0.5, 0.5])
    return fused, ms + _ms(start, qids)


def _ms(start: float, qids: list[str]) -> float:
    return 1000 * (time.perf_counter() - start) / len(qids)


STUDENTS = {"cross-encoder": ("CE", "cross-encoder(model='{folder}', truncation='truncate', batch_size=32)"),
            "bi-encoder": ("BE", "biencoder(model='{folder}')")}
"""Student kind -> (its short name in the table, the stage that reranks with it)."""


def _reuse(folder: Path, kind: str, settings: TrainSettings) -> TrainingRecord | None:
    if not (folder / "training_record.json").exists():
        return None
    record = TrainingRecord.load(folder)
    expected = settings.with_(loss=check_losses(kind, settings)[0]).to_dict()
    saved = {k: v for k, v in record.settings.items() if k != "model"}  # records before bi-encoders had no "model"
    if record.settings.get("model", "cross-encoder") != kind or saved != expected:
        raise SystemExit(f"{folder} holds a model trained with other settings; remove it or choose another --out")
    return record


if __name__ == "__main__":
    main()
