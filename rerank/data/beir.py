"""A folder in BEIR layout: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv`` (each optionally
``.gz``), plus optional first-stage runs ``run.<name>[.<more>].trec[.gz]`` and an optional ``dataset.toml``
holding the collection's relevance threshold (``rel_threshold = 2`` for TREC-DL), so that a copy of
the folder is evaluated as the collection is."""

from __future__ import annotations

import re
from pathlib import Path

from rerank.data.base import Dataset, checked_threshold, memoized
from rerank.errors import ConfigError, DataError
from rerank.io import find_file, read_corpus, read_qrels, read_queries, read_toml
from rerank.types import Doc, Query, Ranking

SETTINGS_FILE = "dataset.toml"
RUN_FILE = re.compile(r"run\.([^.]+)(?:\.[^.]+)*\.trec(?:\.gz)?")
"""A shipped run's file name, its name first: ``run.bm25.top100.trec.gz`` is the run ``bm25``."""


class BeirDataset(Dataset):
    """The folder's files are read once per object, when first asked for. ``rel_threshold``: the
    folder's ``dataset.toml``'s when not given, else 1."""

    def __init__(self, path: str | Path, name: str | None = None, split: str = "test", rel_threshold: int | None = None):
        self.path = Path(path)
        self.name = name or self.path.name
        self.split = split
        if not self.path.is_dir():
            raise DataError(f"{self.path} is not a folder")
        given = checked_threshold(rel_threshold, self.name) if rel_threshold is not None else None
        self.rel_threshold = given or folder_threshold(self.path) or 1

    def _file(self, stem: str) -> Path:
        found = find_file(self.path, stem)
        if found is None:
            hint = ("; the folder holds no corpus (a bundled BEIR set may ship only its queries and qrels): give a BEIR "
                    "folder with its corpus by path, or an irds: id") if stem == "corpus.jsonl" else ""
            raise DataError(f"{self.name}: {self.path / stem}[.gz] not found{hint}")
        return found

    @memoized
    def queries(self) -> list[Query]:
        path = self._file("queries.jsonl")
        return self._checked_queries(read_queries(path), str(path))

    @memoized
    def corpus(self) -> list[Doc]:
        path = self._file("corpus.jsonl")
        return self._checked_corpus(read_corpus(path), str(path))

    def qrels(self) -> dict[str, dict[str, int]]:
        """The split's judgments, checked against the queries and (when the folder has one) the corpus."""
        return self._split_qrels(self.split)

    @memoized
    def _split_qrels(self, split: str) -> dict[str, dict[str, int]]:
        qrels = read_qrels(self._file(f"qrels/{split}.tsv"))
        has_corpus = find_file(self.path, "corpus.jsonl") is not None
        return self._checked_qrels(qrels, {d.docid for d in self.corpus()} if has_corpus else None)

    def with_split(self, split: str, name: str | None = None) -> BeirDataset:
        """The same folder with the judgments of ``split``. The two share what they read (the corpus and
        queries, which no split changes, are read and checked once; judgments are kept per split)."""
        other = BeirDataset(self.path, name or f"{self.name}/{split}", split, self.rel_threshold)
        other.__dict__["_memo"] = self.__dict__.setdefault("_memo", {})
        return other

    def _run_files(self) -> dict[Path, str]:
        """``{file: run name}`` of ``run.<name>[.<more>].trec[.gz]`` (a ``run.x.trec.bak`` beside them is none)."""
        found = (RUN_FILE.fullmatch(p.name) for p in sorted(self.path.glob("run.*.trec*")))
        return {self.path / m.group(0): m.group(1) for m in found if m}

    def run_names(self) -> list[str]:
        return sorted(set(self._run_files().values()))

    @memoized
    def run(self, name: str = "bm25") -> Ranking:
        files = [f for f, own in self._run_files().items() if own == name]
        if not files:
            raise DataError(f"{self.name}: no run named {name!r}; shipped runs: {', '.join(self.run_names()) or 'none'}")
        if len(files) > 1:
            raise DataError(f"{self.name}: run {name!r} has {len(files)} files ({', '.join(f.name for f in files)}); remove all but one")
        queries = {q.qid: q.text for q in self.queries()}
        ranking = Ranking.read_trec(files[0], queries)
        store = self.docstore
        missing = {d for d in ranking.to_pandas()["docid"] if d not in store}
        if missing:
            raise DataError(f"{self.name}: run {name!r} names {len(missing)} docids absent from the corpus (e.g. {sorted(missing)[:3]})")
        frame = ranking.to_pandas()
        unknown = set(frame["qid"]) - set(queries)
        if unknown:
            raise DataError(f"{self.name}: run {name!r} has queries absent from queries.jsonl: {sorted(unknown)[:3]}")
        return ranking.with_texts(store)


def folder_threshold(folder: Path) -> int | None:
    """The ``rel_threshold`` of ``folder/dataset.toml``, None without one; DataError naming the file when it
    is not a readable TOML file holding only a threshold :func:`~rerank.data.base.checked_threshold` accepts."""
    path = folder / SETTINGS_FILE
    if not (path.exists() or path.is_symlink()):
        return None
    try:  # what is wrong is the file's, a DataError
        if not path.is_file():
            raise ConfigError(f"{path}: not a file")
        settings = read_toml(path)
        if set(settings) != {"rel_threshold"}:
            raise ConfigError(f"{path}: holds only rel_threshold (the lowest grade binary measures count as relevant), "
                              f"got {sorted(settings) or 'nothing'}")
        return checked_threshold(settings["rel_threshold"], str(path))
    except ConfigError as e:
        raise DataError(str(e)) from None
