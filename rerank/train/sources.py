"""The three data sources, each turned into :class:`~rerank.train.examples.Group` lists with counts."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from rerank.data import Dataset
from rerank.errors import ConfigError, DataError, RerankError, one_line
from rerank.train.examples import Group
from rerank.train.negatives import ranked_docids, sample_negatives
from rerank.train.querygen import PseudoQuery, make_generator
from rerank.train.settings import TrainSettings, named
from rerank.types import is_blank

logger = logging.getLogger("rerank")


def _stage(expr: str, dataset: Dataset) -> Any:
    from rerank.expr import build

    return build(expr, dataset)


@contextmanager
def _naming(setting: str, expr: str) -> Iterator[None]:
    """Errors of the stage that a setting names say which one it is (the teacher's max_length, not any)."""
    try:
        yield
    except RerankError as e:
        raise type(e)(f"{named(setting)} {expr!r}: {one_line(e, limit=None)}") from e


def qrels_groups(dataset: Dataset, s: TrainSettings, rng: np.random.Generator) -> tuple[list[Group], dict[str, int], dict[str, str]]:
    """One group per judged (query, positive) of the training split, with mined hard negatives.

    Also returns the training queries (``{qid: text}``) for distillation.
    """
    from rerank.train.labels import labelled_queries, training_split

    queries, counts = labelled_queries(dataset, training_split(dataset, s.train_split, s.train_dataset))
    logger.info("qrels: %d training queries; mining negatives with %s", len(queries), s.negatives)
    with _naming("negatives", s.negatives):
        ranked = ranked_docids(_stage(s.negatives, dataset), {q.qid: q.text for q in queries}, s.negatives_depth)
    docs = dataset.docstore
    groups, no_negatives, copies = [], 0, 0
    for q in queries:
        positives = {docs[p].full_text() for p in q.positives}
        pool = [d for d in ranked[q.qid] if docs[d].full_text() not in positives  # a copy of a positive is none,
                and not is_blank(docs[d].full_text())]                            # nor a document without text
        copies += len(ranked[q.qid]) - len(pool) - sum(d in q.positives for d in ranked[q.qid])
        for p in q.positives:
            negs = sample_negatives(pool, set(q.positives), s.num_negatives, rng)
            no_negatives += not negs
            groups.append(Group(q.text, [docs[p].full_text()] + [docs[n].full_text() for n in negs],
                                [1.0] + [0.0] * len(negs), "qrels"))
    counts.update(groups=len(groups), no_negatives=no_negatives, few_negatives=_few(groups, s), copies_not_negatives=copies)
    if no_negatives:
        logger.warning("qrels: %d of %d training examples have no hard negative (%s's top %d holds only positives); "
                       "raise negatives_depth or use another negatives stage", no_negatives, len(groups), s.negatives,
                       s.negatives_depth)
    return groups, counts, {q.qid: q.text for q in queries}


def synthetic_queries(dataset: Dataset, s: TrainSettings, rng: np.random.Generator
                      ) -> tuple[list[tuple[PseudoQuery, list[str]]], dict[str, int]]:
    """Generated queries that pass the round-trip filter, each with its first-stage top list.

    Reads only ``dataset.corpus()``.
    """
    from rerank.train.synthetic import roundtrip_filter, sample_documents

    with _naming("encoder", s.encoder):
        encoder = _stage(s.encoder, dataset)
    if getattr(encoder, "embeddings", None) is None:
        raise ConfigError(f"encoder={s.encoder!r} is not a dense retriever with document embeddings (e.g. 'dense')")
    sample, counts = sample_documents(encoder.docs, np.asarray(encoder.embeddings), s.num_documents, s.clusters,
                                      s.min_words, rng, s.seed)
    gen = make_generator(s.generator, backend=s.backend, prompt=s.prompt, cache=s.cache, progress=s.progress)
    logger.info("synthetic: %d documents from %d clusters; generating queries (%s)", len(sample), counts["clusters"], gen.name)
    made = [q for per_doc in gen.generate(sample, s.queries_per_document, rng) for q in per_doc]
    counts.update(generated=len(made), **{f"generator_{k}": v for k, v in gen.dropped.items()},
                  **{f"generator_{k}": getattr(gen, k) for k in ("cache_hits", "cache_misses") if hasattr(gen, k)})
    if not made:
        raise DataError(f"the {gen.name} generator made no query from {len(sample)} documents ({dict(gen.dropped)})")
    with _naming("roundtrip", s.roundtrip):
        kept, filtered = roundtrip_filter(made, _stage(s.roundtrip, dataset), s.roundtrip_k, s.negatives_depth)
    counts.update(filtered)
    if not kept:
        raise DataError(f"no generated query kept its source document in the top {s.roundtrip_k} of {s.roundtrip} "
                        f"({len(made)} generated); raise roundtrip_k or change the generator")
    if s.negatives != s.roundtrip:
        with _naming("negatives", s.negatives):
            ranked = ranked_docids(_stage(s.negatives, dataset), {f"syn{i}": q.query for i, (q, _) in enumerate(kept)},
                                   s.negatives_depth)
        kept = [(q, ranked[f"syn{i}"]) for i, (q, _) in enumerate(kept)]
    return kept, counts


def synthetic_groups(dataset: Dataset, kept: list[tuple[PseudoQuery, list[str]]], s: TrainSettings,
                     rng: np.random.Generator) -> tuple[list[Group], dict[str, int]]:
    docs = dataset.docstore
    groups, copies = [], 0
    for q, pool in kept:
        source = docs[q.docid].full_text()
        distinct = [d for d in pool if d == q.docid or docs[d].full_text() != source]  # a copy of the source is no negative
        copies += len(pool) - len(distinct)
        negs = sample_negatives(distinct, {q.docid}, s.num_negatives, rng)
        groups.append(Group(q.query, [q.passage] + [docs[n].full_text() for n in negs], [1.0] + [0.0] * len(negs), "synthetic"))
    return groups, {"groups": len(groups), "no_negatives": sum(len(g.texts) == 1 for g in groups),
                    "few_negatives": _few(groups, s), "copies_not_negatives": copies}


def _few(groups: list[Group], s: TrainSettings) -> int:
    """Groups with some negatives but fewer than ``num_negatives`` (a shallow or small first stage)."""
    return sum(1 < len(g.texts) < s.num_negatives + 1 for g in groups)


def distill_groups(dataset: Dataset, queries: Mapping[str, str], s: TrainSettings,
                   rng: np.random.Generator) -> tuple[list[Group], dict[str, int]]:
    """Per query: the teacher's best document and ``teacher_docs - 1`` others of its top, with its scores."""
    from rerank.train.distill import TeacherScores, normalize

    if not queries:
        raise DataError("distillation has no queries: combine it with qrels or synthetic data")
    logger.info("distill: teacher %s over %d queries", s.teacher, len(queries))
    with _naming("teacher", s.teacher):
        teacher = TeacherScores(s.teacher, dataset, s.teacher_depth, s.cache)
        scored = teacher.scores(queries)
    docs = dataset.docstore
    groups, short = [], 0
    for qid, text in queries.items():
        ranked = scored[qid]
        if len(ranked) < s.teacher_docs:
            short += 1
            continue
        if not all(math.isfinite(sc) for _, sc in ranked):
            raise DataError(f"the teacher {s.teacher!r} gave query {qid!r} a score that is not a finite number; "
                            "distillation needs finite scores")
        labels = normalize([sc for _, sc in ranked], s.teacher_norm, s.teacher_scale)
        rest = np.sort(rng.choice(np.arange(1, len(ranked)), size=s.teacher_docs - 1, replace=False))
        picked = [0, *rest.tolist()]
        groups.append(Group(text, [docs[ranked[i][0]].full_text() for i in picked], [labels[i] for i in picked], "distill"))
    return groups, {"queries": len(queries), "groups": len(groups), "short_teacher_lists": short,
                    "teacher_cache_hits": teacher.hits, "teacher_cache_misses": teacher.misses}
