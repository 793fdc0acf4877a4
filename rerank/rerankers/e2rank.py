"""E2Rank: one embedding model as retriever *and* listwise reranker (Liu et al. 2025, arXiv:2510.22733).

The query and its top-``num_input_docs`` candidates are written into one listwise prompt
(``rerank/prompts/e2rank__*.yaml``: instruction, ``[1] doc`` ... ``[K] doc``, ``Search Query: q``).
That prompt is embedded as a single "pseudo query" -- embedding-space pseudo-relevance feedback --
and every candidate is re-scored by cosine similarity with it. Reranking therefore costs one query
encoding when the document embeddings already exist.

Where document embeddings come from (``doc_embeddings=``):

* a :class:`~rerank.retrievers.dense.Dense` index built with the same model: rows are looked up by
  docid (``E2Rank(doc_embeddings=dense)``);
* a mapping ``docid -> vector`` (L2-normalized, from the same model);
* otherwise, or for docids the lookup lacks, the reranker embeds the candidate texts itself and
  memoizes them by text, so a document shared by several queries is embedded once.

In a pipeline expression bound to a dataset (``rerank eval --dataset scifact --pipeline
"dense % 20 >> e2rank"``) :meth:`E2Rank.bind` picks up the dense index of the same model that the
``dense`` stage left in the index cache; if there is none (``bm25 >> e2rank``) it embeds candidates
on demand instead of indexing the whole corpus.

Truncation: the prompt must fit ``max_length`` tokens (default: the model's limit, 256 for MiniLM).
Each document in the prompt gets an equal share of what the instruction and query leave, capped by
``doc_max_tokens``; documents are cut at token boundaries.

Any sentence-transformers model works (default: the offline all-MiniLM-L6-v2, not trained for
this, so the prompt acts as plain embedding PRF). The released checkpoints use last-token pooling
and a chat template::

    E2Rank("Alibaba-NLP/E2Rank-0.6B", pooling="last", prompt="e2rank/checkpoint")
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rerank.encoders import DEFAULT_ENCODER, load_sentence_transformer
from rerank.errors import ConfigError, DataError, require
from rerank.models import cache_root
from rerank.prompts import PromptTemplate
from rerank.prompts import load as load_prompt
from rerank.rerankers.base import Reranker
from rerank.types import Candidates

POOLINGS = ("model", "last")


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
        doc_embeddings: a Dense index of the same model or a mapping docid -> vector (not part of
            the reranker's identity: it changes cost, not scores).
        batch_size: texts per encoder batch.
        device: torch device; default: the library's choice.
        progress: show a progress bar (``None``: only in a terminal at INFO level).
    """

    def __init__(self, model: str = DEFAULT_ENCODER, prompt: str | PromptTemplate = "e2rank/default",
                 num_input_docs: int = 20, doc_max_tokens: int | None = None, max_length: int | None = None,
                 pooling: str = "model", doc_embeddings: Any = None, batch_size: int = 32,
                 device: str | None = None, progress: bool | None = None):
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling={pooling!r}; choose one of {POOLINGS}")
        if num_input_docs < 1 or batch_size < 1:
            raise ConfigError("num_input_docs and batch_size must be positive")
        if (doc_max_tokens is not None and doc_max_tokens < 1) or (max_length is not None and max_length < 16):
            raise ConfigError("doc_max_tokens must be positive and max_length at least 16")
        template = load_prompt(prompt)
        if template.paradigm != "e2rank" or "{query}" not in template.prefix + template.suffix:
            raise ConfigError(f"prompt {template.name!r} is not an E2Rank prompt (paradigm 'e2rank' with {{query}})")
        self.model, self.prompt, self.num_input_docs, self.doc_max_tokens = model, prompt, num_input_docs, doc_max_tokens
        self.max_length, self.pooling, self.batch_size, self.device, self.progress = max_length, pooling, batch_size, device, progress
        self.template = template
        self.doc_embeddings = None
        self._memo: dict[str, np.ndarray] = {}
        if doc_embeddings is not None:
            self._check_lookup(doc_embeddings)
            self.doc_embeddings = doc_embeddings

    def params(self) -> dict[str, Any]:
        out = super().params()
        out.pop("doc_embeddings", None)
        return out

    # -- pipeline binding -------------------------------------------------------------------------
    def bind(self, dataset: Any, cache_dir: str | Path | None = None) -> E2Rank:
        """A copy that reuses the cached dense index of ``dataset`` for this model, when one exists."""
        if self.pooling != "model" or self.doc_embeddings is not None:
            return self
        from rerank.index_cache import index_folder
        from rerank.retrievers.dense import Dense

        cache_dir = Path(cache_dir) if cache_dir else cache_root()
        folder = index_folder(Dense(model=self.model), dataset, cache_dir)
        if not (folder / "params.json").exists():
            return self
        try:
            dense = Dense.load(folder, mmap=True)
        except (DataError, OSError, ValueError):
            return self
        other = copy.copy(self)
        other.doc_embeddings, other._memo = dense, {}
        return other

    def _check_lookup(self, lookup: Any) -> None:
        from rerank.retrievers.dense import Dense

        if isinstance(lookup, Dense):
            if lookup.model != self.model or self.pooling != "model" or lookup.embeddings is None:
                raise ConfigError(f"doc_embeddings: the Dense index must be built with {self.model!r} (it uses "
                                  f"{lookup.model!r}, indexed: {lookup.embeddings is not None}) and pooling='model'")
        elif not isinstance(lookup, Mapping):
            raise ConfigError(f"doc_embeddings must be a Dense index or a mapping docid -> vector, got {type(lookup).__name__}")

    # -- encoders ---------------------------------------------------------------------------------
    @cached_property
    def _encoder(self) -> _STEncoder | _LastTokenEncoder:
        if self.pooling == "last":
            return _LastTokenEncoder(self.model, self.device, self.batch_size)
        return _STEncoder(self.model, self.device, self.batch_size)

    @property
    def prompt_tokens(self) -> int:
        """Token limit of the listwise prompt."""
        return self.max_length or self._encoder.max_tokens

    # -- reranking --------------------------------------------------------------------------------

    def rerank_many(self, batch: Sequence[Candidates]) -> list[Candidates]:
        batch = [c for c in batch]
        if not any(len(c) for c in batch):
            return list(batch)
        prompts = [self.listwise_prompt(c.query, c.texts) for c in batch]
        pseudo = self._encoder.encode(prompts, self.prompt_tokens)
        docs = self._doc_vectors(batch)
        out, start = [], 0
        for c, q in zip(batch, pseudo):
            out.append(c.with_scores(docs[start:start + len(c)] @ q, input_docs=min(self.num_input_docs, len(c))))
            start += len(c)
        return out

    def listwise_prompt(self, query: str, texts: Sequence[str]) -> str:
        """The listwise prompt for ``query`` and its candidates (best first), truncated to fit."""
        texts = list(texts[: self.num_input_docs])
        fixed = self._encoder.count(self._render(query, [""] * len(texts)))
        room = self.prompt_tokens - fixed
        share = room // max(1, len(texts))
        if self.doc_max_tokens is not None:
            share = min(share, self.doc_max_tokens)
        if texts and share < 1:
            raise ConfigError(f"the E2Rank prompt for {len(texts)} documents needs {fixed} tokens before any document text, "
                              f"over max_length={self.prompt_tokens}; lower num_input_docs or raise max_length")
        return self._render(query, [self._encoder.head(t, share) for t in texts])

    def _render(self, query: str, texts: Sequence[str]) -> str:
        messages = self.template.render(query, [{"index": i + 1, "text": t} for i, t in enumerate(texts)])
        if self.template.meta.get("chat_template"):
            return self._encoder.chat(messages)
        return "\n".join(m["content"] for m in messages)

    def _doc_vectors(self, batch: Sequence[Candidates]) -> np.ndarray:
        """Embeddings of every candidate of ``batch`` in order: looked up, memoized or encoded now."""
        suffix = self.template.meta.get("doc_suffix", "")
        keys = [(d, t + suffix) for c in batch for d, t in zip(c.docids, c.texts)]
        found = dict(self._lookup([d for d, _ in keys]))
        todo = list(dict.fromkeys(t for d, t in keys if d not in found and t not in self._memo))
        if todo:
            self._memo.update(zip(todo, self._encoder.encode(todo, self._encoder.max_tokens)))
        return np.stack([found[d] if d in found else self._memo[t] for d, t in keys]).astype(np.float32)

    def _lookup(self, docids: Sequence[str]) -> Iterator[tuple[str, np.ndarray]]:
        from rerank.retrievers.dense import Dense

        source = self.doc_embeddings
        if isinstance(source, Dense):
            position = source._position  # docid -> row of source.embeddings
            for d in docids:
                if d in position:
                    yield d, np.asarray(source.embeddings[position[d]])
        elif source is not None:
            for d in docids:
                if d in source:
                    yield d, np.asarray(source[d])


class _STEncoder:
    """A sentence-transformers model (its own pooling), normalized output, per-call token limit."""

    def __init__(self, model: str, device: str | None, batch_size: int):
        self.st = load_sentence_transformer(model, device)
        self.tokenizer, self.batch_size = self.st.tokenizer, batch_size
        self.max_tokens = int(self.st.max_seq_length)

    def encode(self, texts: Sequence[str], max_tokens: int) -> np.ndarray:
        with self._limit(max_tokens):
            out = self.st.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    @contextlib.contextmanager
    def _limit(self, max_tokens: int) -> Iterator[None]:
        limit = getattr(self.st[0].auto_model.config, "max_position_embeddings", max_tokens)
        if max_tokens > limit:
            raise ConfigError(f"max_length={max_tokens} exceeds the model's {limit} positions")
        saved, self.st.max_seq_length = self.st.max_seq_length, max_tokens  # the model is shared: restore it
        try:
            yield
        finally:
            self.st.max_seq_length = saved

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, verbose=False)["input_ids"])

    def head(self, text: str, n: int) -> str:
        return _head(self.tokenizer, text, n)

    def chat(self, messages: list[dict[str, str]]) -> str:
        return _chat(self.tokenizer, messages)


class _LastTokenEncoder:
    """A decoder embedding model: last-token hidden state (left padding), L2-normalized."""

    def __init__(self, model: str, device: str | None, batch_size: int):
        torch = require("torch", "dense")
        transformers = require("transformers", "dense")
        from rerank.models import hf_location

        source, kwargs = hf_location(model)
        self.torch, self.batch_size = torch, batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, padding_side="left", **kwargs)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.net = transformers.AutoModel.from_pretrained(source, **kwargs).to(self.device).eval()
        self.max_tokens = min(8192, int(getattr(self.net.config, "max_position_embeddings", 8192)))

    def encode(self, texts: Sequence[str], max_tokens: int) -> np.ndarray:
        out = []
        for s in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[s:s + self.batch_size]), padding=True, truncation=True, max_length=max_tokens,
                                 add_special_tokens=False, return_tensors="pt").to(self.device)
            with self.torch.inference_mode():
                hidden = self.net(**enc).last_hidden_state[:, -1]  # left padding: the last position is real
            out.append(self.torch.nn.functional.normalize(hidden.float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def head(self, text: str, n: int) -> str:
        return _head(self.tokenizer, text, n)

    def chat(self, messages: list[dict[str, str]]) -> str:
        return _chat(self.tokenizer, messages)


def _head(tokenizer: Any, text: str, n: int) -> str:
    """The first ``n`` tokens of ``text``, cut at a token boundary of the original string."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    return text if len(offsets) <= n else text[: offsets[n - 1][1]]


def _chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the prompt asks for a chat template but the model's tokenizer has none; "
                          "use a prompt with meta.chat_template: false (e.g. 'e2rank/default')")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
