"""E2Rank: one embedding model as retriever *and* listwise reranker (Liu et al. 2025, arXiv:2510.22733).

The query and its top-``num_input_docs`` candidates are written into one listwise prompt
(``rerank/prompts/e2rank__*.yaml``: instruction, ``[1] doc`` ... ``[K] doc``, ``Search Query: q``).
That prompt is embedded as a single "pseudo query" -- embedding-space pseudo-relevance feedback --
and every candidate is re-scored by cosine similarity with it. Reranking therefore costs one query
encoding when the document embeddings already exist.

Where document embeddings come from (``doc_embeddings=``):

* a first stage that holds them (:class:`~rerank.encoders.EmbeddingSource`, i.e. a
  :class:`~rerank.retrievers.dense.Dense` index) whose encoder computes exactly the vectors E2Rank
  would (same model, pooling, runtime, no prefix, full length): rows are looked up by docid. In a
  pipeline (``dense % 20 >> e2rank``, in Python or as an expression) E2Rank takes them from the
  nearest earlier Dense stage by itself; a Dense with other settings is not used;
* a mapping ``docid -> vector`` (L2-normalized, from the same model);
* otherwise, or for docids the lookup lacks, the reranker embeds the candidate texts itself and
  memoizes them by text, so a document shared by several queries is embedded once
  (``bm25 >> e2rank`` never indexes the whole corpus); the memo keeps the most recently used
  256 MiB of vectors.

Truncation: the prompt must fit ``max_length`` tokens (default: the model's limit, 256 for MiniLM).
Each document in the prompt gets an equal share of what the instruction and query leave, capped by
``doc_max_tokens``; documents are cut at token boundaries.

Any sentence-transformers model works (default: the offline all-MiniLM-L6-v2, not trained for
this, so the prompt acts as plain embedding PRF). The released checkpoints use last-token pooling
and a chat template::

    E2Rank("Alibaba-NLP/E2Rank-0.6B", pooling="last", prompt="e2rank/checkpoint")
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rerank.backends.base import prompt_text
from rerank.encoders import DEFAULT_ENCODER, EmbeddingSource, Encoder, is_embedding_source
from rerank.errors import ConfigError, DataError
from rerank.params import checked
from rerank.prompts import PromptTemplate
from rerank.prompts import load as load_prompt
from rerank.rerankers.base import Reranker
from rerank.types import Candidates

logger = logging.getLogger("rerank")


@checked(ranges={"max_length": (16, None)})  # arguments checked as in a pipeline expression
class E2Rank(Reranker):
    """Re-score candidates by cosine similarity with the embedding of a listwise prompt.

    Args:
        model: sentence-transformers hub id or folder (``pooling="model"``), or a decoder embedding
            model such as ``Alibaba-NLP/E2Rank-0.6B`` (``pooling="last"``).
        prompt: prompt name (``"e2rank/default"``, ``"e2rank/scifact"``, ``"e2rank/checkpoint"``),
            YAML path or :class:`~rerank.prompts.PromptTemplate`.
        num_input_docs: K, the number of top candidates written into the prompt (all candidates
            are re-scored).
        doc_max_tokens: cap on the tokens of each document inside the prompt; default: an equal
            share of the room left in ``max_length``.
        max_length: token limit of the prompt; default: the model's (``max_seq_length`` for
            sentence-transformers, 8192 for ``pooling="last"``).
        pooling: ``"model"`` (the sentence-transformers model's own pooling) or ``"last"``
            (last-token hidden state through transformers, as E2Rank and Qwen3-Embedding).
        doc_embeddings: a Dense index with the same encoder or a mapping docid -> vector (not part
            of the reranker's identity: it changes cost, not scores).
        batch_size: texts per encoder batch.
        runtime: encoder runtime (:data:`rerank.encoders.RUNTIMES`).
        device: torch device; default: the library's choice.
        progress: show a progress bar (``None``: only in a terminal at INFO level).
    """

    def __init__(self, model: str = DEFAULT_ENCODER, prompt: str | PromptTemplate = "e2rank/default",
                 num_input_docs: int = 20, doc_max_tokens: int | None = None, max_length: int | None = None,
                 pooling: str = "model", doc_embeddings: Any = None, batch_size: int = 32, runtime: str = "auto",
                 device: str | None = None, progress: bool | None = None):
        template = load_prompt(prompt)
        if template.paradigm != "e2rank" or "{query}" not in template.prefix + template.suffix:
            raise ConfigError(f"prompt {template.name!r} is not an E2Rank prompt (paradigm 'e2rank' with {{query}})")
        self.model, self.prompt, self.num_input_docs, self.doc_max_tokens = model, prompt, num_input_docs, doc_max_tokens
        self.max_length, self.pooling, self.batch_size, self.device, self.progress = max_length, pooling, batch_size, device, progress
        self.runtime, self.template = runtime, template
        self.encoder = Encoder(model, pooling=pooling, runtime=runtime, device=device, batch_size=batch_size)
        self.doc_embeddings = None
        self._memo = _Memo()
        if doc_embeddings is not None:
            self._check_lookup(doc_embeddings)
            self.doc_embeddings = doc_embeddings

    def params(self) -> dict[str, Any]:
        out = super().params()
        out.pop("doc_embeddings", None)
        out.pop("device", None)
        return out

    # -- document embeddings from an earlier stage ------------------------------------------------
    def with_embedding_source(self, source: EmbeddingSource | None) -> E2Rank:
        """A copy that reads document embeddings from ``source`` when they are the ones it would compute, else
        ``self``; with None, a copy that embeds every candidate itself (``doc_embeddings`` dropped)."""
        if source is None:
            unchanged = self.doc_embeddings is None
        else:
            unchanged = self.doc_embeddings is not None or not self._same_vectors(source)
        if unchanged:
            return self
        other = copy.copy(self)
        other.doc_embeddings, other._memo = source, _Memo()
        return other

    def _same_vectors(self, source: EmbeddingSource) -> bool:
        if source.encoder.model != self.model or self.template.meta.get("doc_suffix", ""):
            return False
        same = source.encoder.identity("doc") == self.encoder.identity("doc")
        if not same:
            logger.debug("%r: %r encodes documents differently; embedding candidates instead", self, source)
        return same

    def _check_lookup(self, lookup: Any) -> None:
        if is_embedding_source(lookup):
            if not self._same_vectors(lookup):
                raise ConfigError(f"doc_embeddings: {lookup!r} must encode documents exactly as E2Rank does "
                                  f"({self.encoder.identity('doc')}, no doc_suffix); it uses {lookup.encoder.identity('doc')}")
        elif not isinstance(lookup, Mapping):
            raise ConfigError(f"doc_embeddings must be a Dense index or a mapping docid -> vector, got {type(lookup).__name__}")

    @property
    def prompt_tokens(self) -> int:
        """Token limit of the listwise prompt."""
        return self.max_length or self.encoder.max_tokens

    # -- reranking --------------------------------------------------------------------------------

    def rerank_many(self, batch: Sequence[Candidates]) -> list[Candidates]:
        batch = [c for c in batch]
        if not any(len(c) for c in batch):
            return list(batch)
        prompts = [self.listwise_prompt(c.query, c.texts) for c in batch]
        pseudo = self.encoder.encode(prompts, kind="query", max_length=self.prompt_tokens)
        docs = self._doc_vectors(batch, pseudo.shape[1])
        out, start = [], 0
        for c, q in zip(batch, pseudo):
            # each distinct vector scored once: BLAS rounds copies of one row differently, and ties keep input order
            unique, inverse = np.unique(docs[start:start + len(c)], axis=0, return_inverse=True)
            scores = (unique @ q)[inverse.reshape(-1)]
            out.append(c.with_scores(scores, input_docs=min(self.num_input_docs, len(c))))
            start += len(c)
        return out

    def listwise_prompt(self, query: str, texts: Sequence[str]) -> str:
        """The listwise prompt for ``query`` and its candidates (best first), truncated to fit."""
        texts = list(texts[: self.num_input_docs])
        fixed = self.encoder.count(self._render(query, [""] * len(texts)))
        room = self.prompt_tokens - fixed
        share = room // max(1, len(texts))
        if self.doc_max_tokens is not None:
            share = min(share, self.doc_max_tokens)
        if texts and share < 1:
            bare = self.encoder.count(self._render("", [""] * len(texts)))
            if bare + len(texts) <= self.prompt_tokens:  # it is the query that leaves no room
                raise DataError(f"the query {query[:60]!r}... takes {fixed - bare} tokens and leaves no room for its "
                                f"{len(texts)} documents in the E2Rank prompt of max_length={self.prompt_tokens}; "
                                "shorten the query or raise max_length")
            raise ConfigError(f"the E2Rank prompt for {len(texts)} documents needs {bare} tokens before any document text, "
                              f"over max_length={self.prompt_tokens}; lower num_input_docs or raise max_length")
        return self._render(query, [self.encoder.head(t, share) for t in texts])

    def _render(self, query: str, texts: Sequence[str]) -> str:
        messages = self.template.render(query, [{"index": i + 1, "text": t} for i, t in enumerate(texts)])
        if self.template.meta.get("chat_template"):
            return self.encoder.chat(messages)
        return prompt_text(messages)

    def _doc_vectors(self, batch: Sequence[Candidates], dim: int) -> np.ndarray:
        """Embeddings of every candidate of ``batch`` in order: looked up, memoized or encoded now."""
        suffix = self.template.meta.get("doc_suffix", "")
        keys = [(d, t + suffix) for c in batch for d, t in zip(c.docids, c.texts)]
        found = dict(self._lookup([d for c in batch for d in c.docids], [t for c in batch for t in c.texts], dim))
        todo = list(dict.fromkeys(t for d, t in keys if d not in found and t not in self._memo))
        made = dict(zip(todo, self.encoder.encode(todo, kind="doc"))) if todo else {}
        vectors = np.stack([found[d] if d in found else made[t] if t in made else self._memo[t]
                            for d, t in keys]).astype(np.float32)
        self._memo.update(made)  # after reading: a batch larger than the memo is still whole
        return vectors

    def _lookup(self, docids: Sequence[str], texts: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        source = self.doc_embeddings
        if is_embedding_source(source):
            return source.embeddings_for(docids, texts)
        found = {d: np.asarray(source[d]) for d in docids if d in source} if source is not None else {}
        for d, v in found.items():  # a mapping given by the user: unit vectors of this encoder's size
            numbers = v.shape == (dim,) and np.issubdtype(v.dtype, np.number)
            if not numbers or abs(np.linalg.norm(v) - 1) > 1e-3:
                got = f"norm {np.linalg.norm(v):.4g}" if numbers else f"{v.dtype} of shape {v.shape}"
                raise DataError(f"doc_embeddings[{d!r}] must be a unit vector of {dim} numbers, as {self.model!r} "
                                f"embeds (E2Rank scores by cosine), got {got}")
        return found


class _Memo:
    """Document embeddings by text, the most recently used kept up to :attr:`BYTES` of vectors (a
    long-running server sees ever new documents)."""

    BYTES = 256 << 20

    def __init__(self) -> None:
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0

    def __contains__(self, text: str) -> bool:
        return text in self._vectors

    def __getitem__(self, text: str) -> np.ndarray:
        self._vectors.move_to_end(text)
        return self._vectors[text]

    def __len__(self) -> int:
        return len(self._vectors)

    def update(self, made: Mapping[str, np.ndarray]) -> None:
        for text, vector in made.items():
            self._bytes += vector.nbytes - (self._vectors[text].nbytes if text in self._vectors else 0)
            self._vectors[text] = vector
        while self._bytes > self.BYTES and self._vectors:
            self._bytes -= self._vectors.popitem(last=False)[1].nbytes
