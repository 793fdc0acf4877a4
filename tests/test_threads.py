"""One encoder or cross-encoder called from several threads at once (a web server's requests) answers
each call as it answers alone, on the real offline MiniLM: a fast tokenizer keeps its truncation and
padding in state that every call sets, so unguarded calls were cut to another call's token limit,
silently, or failed ('Unable to create tensor') (review helper-92)."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rerank.data import load
from rerank.encoders import DEFAULT_ENCODER, Encoder, resolve_encoder
from rerank.rerankers.cross_encoder import CrossEncoderReranker


@pytest.fixture(scope="module")
def long_texts() -> list[str]:
    """SciFact abstracts of 300 words or more: over MiniLM's 256 tokens."""
    return [d.full_text() for d in load("scifact").corpus()[:200] if len(d.full_text().split()) >= 300][:4]


@pytest.fixture
def switching():
    """Threads switched every microsecond (Python's default: 5 ms), so that a race shows in a short test."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_encoders_of_one_model_answer_threads_as_alone(long_texts, switching):
    short = Encoder(max_length=32, runtime="torch", batch_size=1)
    full = Encoder(max_length=256, runtime="torch", batch_size=1)
    alone = {id(e): e.encode(long_texts, kind="doc") for e in (short, full)}
    lengths = full.lengths(long_texts, kind="doc")
    assert min(lengths) > 256

    def call(i: int):
        if i % 2:
            return full.lengths(long_texts, kind="doc") == lengths
        enc = (short, full)[i // 2 % 2]
        return bool(np.allclose(enc.encode(long_texts, kind="doc"), alone[id(enc)], atol=1e-5))

    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(call, range(200)))


def test_cross_encoder_answers_threads_as_alone(long_texts, tmp_path_factory, switching):
    from sentence_transformers import CrossEncoder

    folder = tmp_path_factory.mktemp("tiny-ce")
    CrossEncoder(resolve_encoder(DEFAULT_ENCODER), num_labels=1).save(str(folder))
    ce = CrossEncoderReranker(str(folder), batch_size=4)
    docs = long_texts + [t.split(". ")[0] for t in long_texts]  # long ones read in passages, and short ones
    queries = ["what drives cerebral white matter development", "vitamin D and bone fractures"]
    alone = {q: [(r.docid, round(r.score, 5)) for r in ce.rerank(q, docs)] for q in queries}

    def call(i: int):
        q = queries[i % 2]
        return [(r.docid, round(r.score, 5)) for r in ce.rerank(q, docs)] == alone[q]

    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(call, range(80)))


LLAMACPP_IN_THREADS = """
import sys
from concurrent.futures import ThreadPoolExecutor
from rerank.rerankers.listwise import Listwise
from rerank.rerankers.pointwise import YesNo

sys.setswitchinterval(1e-6)
docs = ["Fleas live for about 100 days.", "Paris is the capital of France.", "Cats purr.", "A flea jumps 30 cm."]
queries = ["flea life cycle", "capital of France", "why do cats purr", "how high can fleas jump"]
yes_no, listwise = YesNo("llamacpp:smollm2"), Listwise("llamacpp:smollm2", window=4, step=2)
answer = lambda q: ([(r.docid, round(r.score, 4)) for r in yes_no.rerank(q, docs)], listwise.rerank(q, docs).docids)
alone = {q: answer(q) for q in queries}
with ThreadPoolExecutor(4) as pool:
    print(sum(pool.map(lambda i: answer(queries[i % 4]) == alone[queries[i % 4]], range(16))), "of 16 as alone")
"""


def test_a_llamacpp_model_answers_threads_as_alone():
    """Two threads scoring on one llama.cpp context at once crashed the process (segmentation fault), as
    they share its KV cache; run in a child process, so that such a crash fails this test only."""
    pytest.importorskip("llama_cpp")
    done = subprocess.run([sys.executable, "-c", LLAMACPP_IN_THREADS], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "16 of 16 as alone" in done.stdout, (done.returncode, done.stderr[-1500:])
