"""Write the prebuilt document embeddings of a bundled collection (see :mod:`rerank.prebuilt`).

Encodes the corpus as ``Dense`` would (same encoder settings, runtime resolved on this machine),
writes ``datasets/prebuilt/<key>.npy.gz`` and its ``.json``, then checks the entry by building a
``Dense`` index from it and comparing nDCG@10 with the index built by encoding::

    python pipelines/prebuild_embeddings.py --dataset scifact            # the runtime "auto" resolves to here
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rerank import evaluate
from rerank.data import load
from rerank.encoders import DEFAULT_ENCODER, resolve_runtime
from rerank.prebuilt import lookup, write
from rerank.retrievers.dense import Dense

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--model", default=DEFAULT_ENCODER)
    ap.add_argument("--runtime", default="auto", help="encoder runtime; the entry records it resolved")
    ap.add_argument("--out", type=Path, default=ROOT / "datasets" / "prebuilt")
    args = ap.parse_args()

    os.environ["RERANK_PREBUILT"] = "off"  # encode for real
    ds = load(args.dataset)
    docs = ds.corpus()
    built = Dense(args.model, runtime=args.runtime)
    started = time.perf_counter()
    built.index(docs)
    seconds = time.perf_counter() - started
    path = write(args.out, docs, built.encoder.identity("doc"), built.embeddings)
    print(f"{args.dataset}: {len(docs)} documents encoded in {seconds:.1f} s "
          f"(runtime {resolve_runtime(args.runtime)}) -> {path} ({path.stat().st_size / 1e6:.1f} MB)")

    os.environ.pop("RERANK_PREBUILT")
    os.environ["RERANK_DATASETS"] = os.pathsep.join(filter(None, [str(args.out.parent), os.environ.get("RERANK_DATASETS", "")]))
    embeddings = lookup(docs, built.encoder.identity("doc"))
    if embeddings is None:
        raise SystemExit(f"the entry written to {args.out} is not found by rerank.prebuilt.lookup")
    reused = Dense(args.model, runtime=args.runtime).index_embeddings(docs, embeddings)
    metrics = ["ndcg@10"]
    scores = {name: evaluate(r(ds.queries()), ds.qrels(), metrics)["ndcg@10"] for name, r in (("encoded", built), ("prebuilt", reused))}
    print(f"nDCG@10 encoded {scores['encoded']:.4f}, prebuilt {scores['prebuilt']:.4f}")
    if scores["encoded"] != scores["prebuilt"]:
        raise SystemExit("the prebuilt entry does not reproduce the encoded index")


if __name__ == "__main__":
    main()
