"""Label-free cross-encoders with more data than two cores train in an hour: examples here, training on a GPU.

``pipelines/train_label_free.py`` builds, trains and evaluates in one process. This script splits the
same work in three, so that the training can run on a GPU machine that has PyTorch and
sentence-transformers but not rerank's retrieval dependencies (FAISS, ranx, ir_datasets):

* ``export`` (here): the distillation examples of ``rerank.train``
  (:func:`~rerank.train.run.build_examples`: synthetic ``sentence`` queries from the corpus only,
  scored by a label-free teacher), and BM25's top ``--depth`` for every judged test query. Documents
  are written as docids; the training side reads their texts from the bundled corpus.
* ``train`` (the GPU machine): for each export and each ``--epochs``, a cross-encoder from the
  MiniLM body, trained by ``rerank.train``'s trainer (:func:`~rerank.train.trainer.fit`), reranks the
  BM25 candidates (:class:`~rerank.rerankers.cross_encoder.CrossEncoderReranker`). ``--cut-source``
  shows the student each document without the query's sentence, as inverse-cloze positives are shown.
* ``report`` (here): nDCG@10 of each model alone and interpolated with BM25 (as in
  ``train_label_free.py``), with paired t-tests against BM25, on the first ``--eval-limit`` judged
  test queries and on all of them.

    python pipelines/train_label_free_gpu.py export --name readme --num-documents 600 --out results/gpu-data
    python pipelines/train_label_free_gpu.py export --name all --num-documents 100000 --out results/gpu-data
    python pipelines/train_label_free_gpu.py export --name graded --num-documents 100000 \\
        --teacher "bm25 % 100 >> dense" --out results/gpu-data
    python pipelines/train_label_free_gpu.py train --data results/gpu-data --epochs 3 --out results/gpu   # on the GPU
    python pipelines/train_label_free_gpu.py report --data results/gpu-data --scores results/gpu/scores.json

``--base`` (default: the offline MiniLM body) names the start checkpoint where that package is not
installed. With everything installed on one GPU machine, ``train_label_free.py`` does all three.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path
from typing import Any

from rerank.data import load
from rerank.train import TrainSettings

from _args import positive  # pipelines/_args.py

EXPORTED = ("data", "teacher", "teacher_scale", "generator", "num_documents", "clusters", "seed")
"""The export's settings (the examples depend on them); training settings are given to ``train``."""


def export(args: argparse.Namespace) -> None:
    """Write ``<name>-<dataset>.json.gz`` (examples) and ``eval-<dataset>.json.gz`` (BM25 candidates)."""
    from rerank.expr import build
    from rerank.train.run import build_examples

    args.out.mkdir(parents=True, exist_ok=True)
    settings = TrainSettings(data=("distill",), teacher=args.teacher, teacher_scale=1.0, generator="sentence",
                             num_documents=args.num_documents, clusters=args.clusters, seed=args.seed)
    for name in args.datasets:
        ds = load(name)
        docid_of: dict[str, str] = {}
        for docid, doc in ds.docstore.items():
            docid_of.setdefault(doc.full_text(), docid)
        start = time.perf_counter()
        groups, counts, seconds = build_examples(ds, settings)
        rows = [[g.query, [docid_of[t] for t in g.texts], [round(y, 5) for y in g.labels]] for g in groups["distill"]]
        _write(args.out / f"{args.name}-{ds.name}.json.gz",
               {"name": args.name, "dataset": ds.name, "settings": {k: v for k, v in settings.to_dict().items() if k in EXPORTED},
                "counts": counts, "seconds": {**seconds, "export": time.perf_counter() - start}, "groups": rows})
        print(f"{args.name}-{ds.name}: {len(rows)} groups in {time.perf_counter() - start:.0f} s; {counts}", flush=True)
        evaluation = args.out / f"eval-{ds.name}.json.gz"
        if not evaluation.exists():
            judged = set(ds.qrels())
            topics = ds.topics().select([q.qid for q in ds.queries() if q.qid in judged])
            bm25 = build("bm25", ds)(topics).top(args.depth).to_dict()
            _write(evaluation, {"queries": topics.queries(),
                                "bm25": {qid: [[d, round(v, 4)] for d, v in sorted(scores.items(), key=lambda x: -x[1])]
                                         for qid, scores in bm25.items()}})


def train(args: argparse.Namespace) -> None:
    """Train one model per (export, epochs) and write every model's scores of the BM25 candidates to
    ``<out>/scores.json`` after each one (so a run cut short keeps what it finished)."""
    from rerank.rerankers.cross_encoder import CrossEncoderReranker
    from rerank.train.examples import Group, layout, to_dataset
    from rerank.train.trainer import fit, load_student
    from rerank.types import Doc

    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "scores.json"
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() else {}
    exports = [_read(path) | {"file": path.name} for path in sorted(args.data.glob("*.json.gz")) if not path.name.startswith("eval-")]
    exports = [e for e in exports if e["name"] in (args.only or [e["name"]]) and e["dataset"] in (args.datasets or [e["dataset"]])]
    if not exports:
        raise SystemExit(f"no export in {args.data} matches --only {args.only} --datasets {args.datasets}; run export first")
    exports.sort(key=lambda e: len(e["groups"]))  # smallest first, and every export at the first epochs first:
    collections = {name: load(name) for name in dict.fromkeys(e["dataset"] for e in exports)}  # each read once
    evaluations = {name: _read(args.data / f"eval-{name}.json.gz") for name in collections}
    examples = {e["file"]: [Group(q, [_shown(collections[e["dataset"]].docstore[d].full_text(), q, args.cut_source)
                                      for d in ids], labels, "distill") for q, ids, labels in e["groups"]] for e in exports}
    for epochs in args.epochs:  # a run cut short keeps the cheap models
        for exported in exports:
            ds, groups = collections[exported["dataset"]], examples[exported["file"]]
            docs, evaluation = ds.docstore, evaluations[ds.name]
            s = TrainSettings(**{**exported["settings"], "data": tuple(exported["settings"]["data"])}, base=str(args.base),
                              epochs=epochs, learning_rate=args.learning_rate, max_length=args.max_length,
                              batch_size=args.batch_size, bf16=True, save_steps=10**6, progress=False)
            key = f"{exported['name']}-{ds.name}-{epochs:g}ep{'-cut' if args.cut_source else ''}"
            folder = (args.models or args.out / "models") / key
            columns, left_out = layout(groups, s.distill_loss)
            started = time.perf_counter()
            model = load_student("cross-encoder", s.base, s.max_length, s.seed)
            curve, _, steps = fit("cross-encoder", model, {"distill": (to_dataset(columns, s.seed), s.distill_loss)}, folder, s)
            model.save(str(folder))
            trained = time.perf_counter() - started
            reranker = CrossEncoderReranker(model=str(folder), truncation="truncate", batch_size=512, progress=False)
            started = time.perf_counter()
            scores = {}
            for qid, pairs in evaluation["bm25"].items():
                ranked = reranker.rerank(evaluation["queries"][qid], [Doc(d, docs[d].text, docs[d].title) for d, _ in pairs])
                scores[qid] = {r.docid: float(r.score) for r in ranked}
            results[key] = {"export": exported["file"], "dataset": ds.name, "settings": s.to_dict(), "steps": steps,
                            "examples": len(columns["query"]), "left_out": left_out, "train_seconds": trained,
                            "rerank_seconds": time.perf_counter() - started, "loss": curve, "scores": scores}
            saved.with_suffix(".part").write_text(json.dumps(results))
            saved.with_suffix(".part").replace(saved)  # never half written
            print(f"{key}: {len(groups)} groups, {steps} steps in {trained:.0f} s, loss {curve[0][1]:.3f} -> "
                  f"{curve[-1][1]:.3f}; reranked {len(scores)} queries in {results[key]['rerank_seconds']:.0f} s", flush=True)


def _shown(text: str, query: str, cut: bool) -> str:
    """The document as the student sees it: with ``cut``, without the sentence that is the query (as
    the inverse-cloze positive is shown), so the source document is not recognized by the copy alone."""
    from rerank.train.querygen import _without

    return _without(text, query) if cut and query in text else text


def report(args: argparse.Namespace) -> None:
    """A Markdown table: BM25, each model alone and interpolated with BM25, with paired t-tests."""
    from rerank import fuse
    from rerank.evaluate import evaluate_per_query
    from rerank.significance import pvalue

    if not args.scores.is_file():
        raise SystemExit(f"{args.scores} is missing; it is what train writes")
    results = json.loads(args.scores.read_text())
    print("| collection | queries | system | nDCG@10 | p vs BM25 | W/L | steps | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(r["dataset"] for r in results.values()):
        ds = load(name)
        evaluation = _read(args.data / f"eval-{name}.json.gz")
        for limit in (args.eval_limit, None):
            qids = list(evaluation["queries"])[:limit]  # the judged test queries in the collection's order
            bm25 = _ranking({q: dict(evaluation["bm25"].get(q, [])) for q in qids})  # a query BM25 finds nothing for scores 0
            base = evaluate_per_query(bm25, ds, ["ndcg@10"])["ndcg@10"].reindex(qids, fill_value=0.0)
            print(f"| {name} | {len(qids)} | BM25 | {base.mean():.4f} | | | | |")
            for key, r in results.items():
                if r["dataset"] != name:
                    continue
                alone = _ranking({q: r["scores"].get(q, {}) for q in qids})
                mixed = fuse([bm25, alone], method="wsum", norm="min-max", weights=[0.5, 0.5])
                for label, run in ((key, alone), (f"BM25 + {key}", mixed)):
                    a = evaluate_per_query(run, ds, ["ndcg@10"])["ndcg@10"].reindex(qids, fill_value=0.0).to_numpy()
                    b = base.to_numpy()
                    p = pvalue(a, b)
                    print(f"| {name} | {len(qids)} | {label} | {a.mean():.4f}{'†' if p < 0.05 else ''} | {p:.2g} | "
                          f"{int((a > b).sum())}/{int((a < b).sum())} | {r['steps']} | {r['train_seconds']:.0f} |")


def _ranking(scores: dict[str, dict[str, float]]) -> Any:
    from rerank import Ranking

    return Ranking.from_records((qid, "", docid, s) for qid, docs in scores.items() for docid, s in docs.items())


def _write(path: Path, data: Any) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(data, f)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise SystemExit(f"{path} is missing; run this script's export for that collection first")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="build the examples and the BM25 candidates (here)")
    e.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus", "cranfield"])
    e.add_argument("--name", required=True, help="names this export's files")
    e.add_argument("--teacher", default=TrainSettings.teacher)
    e.add_argument("--num-documents", type=positive, default=600)
    e.add_argument("--clusters", type=positive, default=50)
    e.add_argument("--depth", type=positive, default=100)
    e.add_argument("--seed", type=int, default=42)
    e.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train", help="train and rerank (on the GPU machine)")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--base", default=TrainSettings.base, help="start checkpoint (default: the offline MiniLM body)")
    t.add_argument("--epochs", type=float, nargs="+", default=[3.0])
    t.add_argument("--learning-rate", type=float, default=1e-4)
    t.add_argument("--max-length", type=positive, default=128)
    t.add_argument("--batch-size", type=positive, default=16)
    t.add_argument("--out", type=Path, required=True, help="scores.json goes here")
    t.add_argument("--only", nargs="+", help="train on these exports only (their --name)")
    t.add_argument("--datasets", nargs="+", help="train on these collections only")
    t.add_argument("--cut-source", action="store_true",
                   help="show documents without the query sentence they contain (the source document)")
    t.add_argument("--models", type=Path, help="where the trained models go (default: <out>/models)")
    r = sub.add_parser("report", help="evaluate the scores (here)")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--scores", type=Path, required=True)
    r.add_argument("--eval-limit", type=positive, default=100)
    args = p.parse_args()
    {"export": export, "train": train, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
