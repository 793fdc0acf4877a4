"""Labelled training queries: the qrels of a training split, checked against the test split for leakage.

The training split is ``qrels/<split>.tsv`` of the same BEIR folder, or a separate dataset
(``irds:beir/scifact/train`` online) with the same corpus. Training refuses a split whose query ids
overlap the test split's; training queries whose words equal a test query's (case, punctuation and
spacing aside) are dropped and counted.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from rerank.data import Dataset
from rerank.data.beir import BeirDataset
from rerank.errors import DataError
from rerank.io import find_file
from rerank.types import is_blank

logger = logging.getLogger("rerank")


@dataclass(frozen=True)
class LabelledQuery:
    qid: str
    text: str
    positives: tuple[str, ...]


def training_split(collection: Dataset, split: str = "train", train_dataset: str | None = None) -> Dataset:
    """The dataset holding the training queries and qrels."""
    if train_dataset:
        from rerank.data import load

        if split != "train":
            logger.warning("train_split=%r (--train-split) is not read: the training queries come from train_dataset=%r",
                           split, train_dataset)
        return load(train_dataset)
    if not isinstance(collection, BeirDataset):
        raise DataError(f"{collection.name}: pass train_dataset= (e.g. irds:<id of its train split>) for labelled training")
    if split == collection.split:
        raise DataError(f"{collection.name}: the training split {split!r} is the evaluation split; choose another")
    if find_file(collection.path, f"qrels/{split}.tsv") is None:
        raise DataError(f"{collection.name} has no qrels/{split}.tsv: give the training queries as another dataset "
                        "(--train-dataset, train_dataset=, e.g. irds:beir/scifact/train online), or train without "
                        "labels (--data synthetic)")
    return collection.with_split(split)  # the corpus and queries read once for both


def test_qids(collection: Dataset) -> dict[str, str]:
    """``{qid: text}`` of the collection's evaluation queries (none when a BEIR folder has no qrels
    file for its split). Unreadable or mismatched qrels raise: the leakage guard never turns itself off."""
    if isinstance(collection, BeirDataset) and find_file(collection.path, f"qrels/{collection.split}.tsv") is None:
        logger.warning("%s has no qrels/%s.tsv: the leakage guard has no test queries to keep out of training "
                       "(evaluate only on queries you know were not trained on)", collection.name, collection.split)
        return {}
    judged = collection.qrels()
    texts = {q.qid: q.text for q in collection.queries()}
    return {q: texts.get(q, "") for q in judged}


def labelled_queries(collection: Dataset, train: Dataset) -> tuple[list[LabelledQuery], dict[str, int]]:
    """Judged training queries with their positives, and counts (``queries``, ``positives``,
    ``dropped_no_positive``, ``dropped_test_text``, ``dropped_unknown_docs``, ``dropped_blank_positives``:
    relevant documents with neither text nor title, ``dropped_unknown_queries``: judged queries that the
    split does not have, which its loader warns about).

    Raises DataError when train and test query ids overlap, or when the split has no judgments.
    """
    qrels = train.qrels()
    if not qrels:
        raise DataError(f"{train.name}: the training qrels are empty")
    tests = test_qids(collection)
    overlap = sorted(set(qrels) & set(tests))
    if overlap:
        raise DataError(f"{train.name}: {len(overlap)} training query ids are also test query ids of {collection.name} "
                        f"(e.g. {overlap[:3]}); refusing to train on evaluation queries")
    check_same_corpus(collection, train)
    texts = {q.qid: q.text for q in train.queries()}
    test_texts = {_words(t) for t in tests.values() if t}
    docs = collection.docstore
    counts = {"queries": 0, "positives": 0, "dropped_no_positive": 0, "dropped_test_text": 0, "dropped_unknown_docs": 0,
              "dropped_blank_positives": 0, "dropped_unknown_queries": sum(q not in texts for q in qrels)}
    out = []
    for qid, judged in qrels.items():
        text = texts.get(qid)
        if text is None:
            continue
        if _words(text) in test_texts:
            counts["dropped_test_text"] += 1
            continue
        unknown = [d for d in judged if d not in docs]
        counts["dropped_unknown_docs"] += len(unknown)
        relevant = [d for d, r in judged.items() if r >= train.rel_threshold and d in docs]
        positives = tuple(d for d in relevant if not is_blank(docs[d].full_text()))  # nothing to learn from
        counts["dropped_blank_positives"] += len(relevant) - len(positives)
        if not positives:
            counts["dropped_no_positive"] += 1
            continue
        counts["queries"] += 1
        counts["positives"] += len(positives)
        out.append(LabelledQuery(qid, text, positives))
    if not out:
        raise DataError(f"{train.name}: no training query has a relevant document in {collection.name}'s corpus ({counts})")
    if counts["dropped_test_text"]:
        logger.warning("%s: %d training queries have the text of a test query of %s; dropped", train.name,
                       counts["dropped_test_text"], collection.name)
    if counts["dropped_blank_positives"]:
        logger.warning("%s: %d relevant judgments name documents with neither text nor title; dropped", train.name,
                       counts["dropped_blank_positives"])
    if counts["dropped_unknown_docs"]:
        logger.warning("%s: %d judgments name documents that are not in %s's corpus; dropped", train.name,
                       counts["dropped_unknown_docs"], collection.name)
    return out, counts


def _words(text: str) -> str:
    """A query's words as the leakage guard compares them: case, punctuation and spacing aside."""
    return " ".join(re.findall(r"[^\W_]+", text.casefold()))


def check_same_corpus(collection: Dataset, train: Dataset) -> None:
    """DataError when the training dataset holds a corpus other than the collection's: its judgments name
    documents by id, and would pair its queries with the collection's documents of those ids. A training
    split of the same folder, or a dataset without its own corpus at hand, is judged against the collection's."""
    if train is collection or (isinstance(train, BeirDataset) and isinstance(collection, BeirDataset)
                               and train.path.resolve() == collection.path.resolve()):
        return
    try:
        theirs = train.fingerprint
    except DataError:
        return
    if theirs != collection.fingerprint:
        raise DataError(f"{train.name} holds another corpus than {collection.name}; its judgments name documents by id, "
                        f"so they would pair its queries with {collection.name}'s documents of those ids: train on the "
                        "collection the judgments were made for")
