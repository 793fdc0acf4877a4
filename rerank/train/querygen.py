"""Query generators: a document in, pseudo-queries out, each with the passage the model trains on.

* :class:`SentenceGenerator` (no LLM, inverse cloze): a sentence of the document is the query, and the
  passage is the document without that sentence, so the model cannot learn plain string matching.
* :class:`TitleGenerator` (no LLM): the title is the query, the passage is the document without it.
* :class:`LLMGenerator`: an LLM backend writes a query from a few-shot prompt template
  (``rerank/prompts/querygen__fewshot.yaml``); calls go through the call cache.

Each generator returns, per document, a list of :class:`PseudoQuery` (empty when it could not make one)
and counts what it could not use in ``dropped``.

>>> import numpy as np
>>> from rerank.types import Doc
>>> doc = Doc("d1", "Scurvy follows a lack of vitamin C in the diet. Sailors once died of it on long voyages.", "Scurvy")
>>> [q.query for q in SentenceGenerator(min_words=4).generate([doc], 1, np.random.default_rng(0))[0]]
['Sailors once died of it on long voyages.']
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rerank._progress import progress_bar
from rerank.errors import ConfigError
from rerank.types import Doc

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class PseudoQuery:
    docid: str
    query: str
    passage: str


def _without(text: str, span: str) -> str:
    """``text`` with ``span`` cut out wherever its words stand, however they are spaced there."""
    words = r"\s+".join(map(re.escape, span.split()))
    return re.sub(r"\s{2,}", " ", re.sub(words, " ", text)).strip()


@dataclass
class SentenceGenerator:
    """A sentence of ``min_words``..``max_words`` words (or, in text of one sentence, a window of ``window``
    words) as the query; ``keep_in_passage=False`` removes it from the passage (inverse cloze)."""

    min_words: int = 5
    max_words: int = 40
    window: int = 12
    keep_in_passage: bool = False
    dropped: Counter = field(default_factory=Counter)
    name = "sentence"

    def generate(self, docs: Sequence[Doc], per_doc: int, rng: np.random.Generator) -> list[list[PseudoQuery]]:
        return [self._one(d, per_doc, rng) for d in docs]

    def _one(self, doc: Doc, per_doc: int, rng: np.random.Generator) -> list[PseudoQuery]:
        full = doc.full_text()
        sentences = _SENTENCE_END.split(doc.text.strip())
        spans = [s for s in dict.fromkeys(sentences) if self.min_words <= len(s.split()) <= self.max_words
                 and s.strip().lower() != doc.title.strip().lower()] if len(sentences) > 1 else []
        if not spans:
            words = doc.text.split()
            if len(words) < 2 * self.window:
                self.dropped["no_sentence"] += 1
                return []
            starts = rng.choice(len(words) - self.window + 1, size=min(per_doc, len(words) - self.window + 1), replace=False)
            spans = [" ".join(words[s:s + self.window]) for s in sorted(starts)]
        else:
            spans = [spans[i] for i in sorted(rng.choice(len(spans), size=min(per_doc, len(spans)), replace=False))]
        return [PseudoQuery(doc.docid, s, full if self.keep_in_passage else _without(full, s)) for s in spans]


@dataclass
class TitleGenerator:
    """The title (at least ``min_words`` words) as the query, the rest of the document as the passage."""

    min_words: int = 3
    dropped: Counter = field(default_factory=Counter)
    name = "title"

    def generate(self, docs: Sequence[Doc], per_doc: int, rng: np.random.Generator) -> list[list[PseudoQuery]]:
        out = []
        for d in docs:
            title = d.title.strip()
            if len(title.split()) < self.min_words:
                self.dropped["no_title"] += 1
                out.append([])
                continue
            passage = _without(d.text, title)
            if not passage:
                self.dropped["no_passage"] += 1
            out.append([PseudoQuery(d.docid, title, passage)] if passage else [])
        return out


@dataclass
class LLMGenerator:
    """One query per document from ``backend`` (a spec such as ``"hf:smollm2"`` or a Backend) with ``prompt``.

    The document is cut to ``doc_words`` words. An answer is usable when its first line, without a
    ``Query:`` label and quotes, has 2..``max_query_words`` words; the rest are counted as ``unusable``,
    and answers that copy one of the template's few-shot answers as ``copied_example``.
    """

    backend: object = "hf:smollm2"
    prompt: str = "querygen/fewshot"
    cache: str | Path | None = None
    doc_words: int = 160
    max_query_words: int = 24
    batch_size: int = 8
    progress: bool | None = None
    dropped: Counter = field(default_factory=Counter)
    name = "llm"

    def __post_init__(self) -> None:
        from rerank.prompts import load

        self.template = load(self.prompt)
        if self.template.paradigm != "querygen":
            raise ConfigError(f"prompt {self.template.name!r} is a {self.template.paradigm!r} prompt; a query generator needs paradigm 'querygen'")

    def llm(self):
        from rerank.backends import load_backend
        from rerank.cache import CachedBackend

        return CachedBackend(load_backend(self.backend), self.cache)

    def generate(self, docs: Sequence[Doc], per_doc: int, rng: np.random.Generator) -> list[list[PseudoQuery]]:
        assert per_doc == 1, "TrainSettings refuses more for the llm generator"
        llm = self.llm()
        prompts = [self.template.render("", text=" ".join(d.full_text().split()[: self.doc_words])) for d in docs]
        cap = self.template.max_new_tokens or 32
        answers: list[str] = []
        batches = [prompts[i:i + self.batch_size] for i in range(0, len(prompts), self.batch_size)]
        for batch in progress_bar(batches, "generate queries", self.progress, unit="batch"):
            answers.extend(g.text for g in llm.generate(batch, max_new_tokens=cap, stop=["\n"]))
        self.cache_hits, self.cache_misses = llm.hits, llm.misses
        shots = {str(ex["answer"]).strip().lower() for ex in self.template.examples}
        out = []
        for d, answer in zip(docs, answers):
            query = self.clean(answer)
            if query is None or query.lower() in shots:
                self.dropped["unusable" if query is None else "copied_example"] += 1
                out.append([])
            else:
                out.append([PseudoQuery(d.docid, query, d.full_text())])
        return out

    def clean(self, answer: str) -> str | None:
        """The query in an answer, or None when there is none."""
        lines = [ln.strip() for ln in answer.strip().splitlines() if ln.strip()]
        if not lines:
            return None
        query = re.sub(r"^(query|search query)\s*:\s*", "", lines[0], flags=re.I).strip().strip("\"'`").strip()
        return query if 2 <= len(query.split()) <= self.max_query_words else None


def make_generator(name: str, *, backend: object = "hf:smollm2", prompt: str = "querygen/fewshot",
                   cache: str | Path | None = None, progress: bool | None = None):
    """A generator by name: ``sentence``, ``title`` or ``llm``."""
    if name == "sentence":
        return SentenceGenerator()
    if name == "title":
        return TitleGenerator()
    if name == "llm":
        return LLMGenerator(backend, prompt, cache, progress=progress)
    raise ConfigError(f"unknown query generator {name!r}; choose sentence, title or llm")
