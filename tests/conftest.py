"""Tiny reward models (sequence classifier, multi-output head, causal LM) saved to temp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rewardbridge.testing import build_tokenizer, llama_config, save_model  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory, tokenizer):
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(0)
    model = LlamaForSequenceClassification(llama_config(tokenizer, num_labels=1))
    return save_model(tmp_path_factory.mktemp("classifier"), model, tokenizer)


@pytest.fixture(scope="session")
def attributes_dir(tmp_path_factory, tokenizer):
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(1)
    model = LlamaForSequenceClassification(llama_config(tokenizer, num_labels=3))
    return save_model(tmp_path_factory.mktemp("attributes"), model, tokenizer)


@pytest.fixture(scope="session")
def causal_dir(tmp_path_factory, tokenizer):
    from transformers import LlamaForCausalLM

    torch.manual_seed(2)
    model = LlamaForCausalLM(llama_config(tokenizer))
    return save_model(tmp_path_factory.mktemp("causal"), model, tokenizer)


@pytest.fixture(scope="session")
def plain_tokenizer_classifier_dir(tmp_path_factory):
    """A classifier whose tokenizer has no chat template."""
    from transformers import LlamaForSequenceClassification

    tok = build_tokenizer(chat_template=None)
    torch.manual_seed(3)
    model = LlamaForSequenceClassification(llama_config(tok, num_labels=1))
    return save_model(tmp_path_factory.mktemp("plain"), model, tok)


@pytest.fixture
def chat_batch():
    """Two prompts (one multi-turn with a system message) x varied-length completions."""
    p1 = [{"role": "user", "content": "What is the capital of France?"}]
    p2 = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "No."},
        {"role": "user", "content": "Please, a joke."},
    ]
    answers = ["Paris.", "The capital of France is Paris, a city on the Seine " * 3, "Why did the model cross the road?", "No"]
    prompts = [p1, p1, p2, p2]
    completions = [[{"role": "assistant", "content": a}] for a in answers]
    return prompts, completions


def torchrun(script: str, *args: str, timeout: int = 300) -> str:
    """Run tests/multiprocess/<script> in 2 real processes (gloo on CPU); returns its output.

    The timeout turns a deadlock (a collective one rank never joins) into a failure.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(__file__).parent / "multiprocess" / script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout
