"""Tiny reward models (sequence classifier, multi-output head, causal LM) saved to temp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rewardbridge.testing import build_tokenizer, llama_config, save_model  # noqa: E402


@pytest.fixture(scope="session")
def judge_dir(tmp_path_factory):
    """A tiny causal LM whose tokenizer has " Yes" and " No" as single tokens (the demo's judge);
    the recipe tests' yes/no judge."""
    from transformers import LlamaForCausalLM

    tok = build_tokenizer()
    tok.add_tokens([" Yes", " No"])
    torch.manual_seed(4)
    return save_model(tmp_path_factory.mktemp("judge"), LlamaForCausalLM(llama_config(tok)), tok)


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


@pytest.fixture
def no_weights(monkeypatch):
    """Loading any model's weights fails: an error raised under this came before the weights."""

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the error was found")

    import transformers

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B offline into tmp_path/wandb; torn down after, since W&B keeps its settings (WANDB_DIR)
    per process and a later test would otherwise write into this one's folder."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield tmp_path / "wandb"
    import wandb

    wandb.teardown()


class CountingScorer:
    """A reward's real scorer, counting the conversations in each call (to prove batching)."""

    def __init__(self, scorer):
        self.scorer, self.batch_sizes = scorer, []

    def score(self, conversations):
        self.batch_sizes.append(len(conversations))
        return self.scorer.score(conversations)


def torchrun(script: str, *args: str, timeout: int = 300) -> str:
    """Run tests/multiprocess/<script> in 2 real processes (gloo on CPU); returns its output.

    The timeout turns a deadlock (a collective one rank never joins) into a failure.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(__file__).parent / "multiprocess" / script), *args]
    result = launch(command, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def launch(command: list[str], timeout: int, **kwargs) -> subprocess.CompletedProcess:
    """Run a multi-process launcher (torchrun, `accelerate launch`) once, twice on a machine race.

    --standalone picks a free port and frees it before the ranks bind it: another process on the
    machine can take it in between. And gloo's C++ threads have aborted a rank at interpreter exit,
    after its work was written, when its peer left first; the scripts and `rewardbridge train` now
    meet and close the group before leaving (cli.leave_process_group), so a rerun on that abort
    also warns, to be seen in the run's warnings summary rather than hidden.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **kwargs.pop("env", {})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
    races = [word for word in MACHINE_RACES if word in result.stderr]
    if result.returncode != 0 and races:
        warnings.warn(f"{Path(command[-1]).name}: reran after a machine race ({races[0]!r})", stacklevel=2)
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
    return result


MACHINE_RACES = ("EADDRINUSE", "address already in use", "DistNetworkError", "RendezvousConnectionError",
                 "terminate called without an active exception")


# Custom-code reward models (issue 9): the modelling code in tests/custom_models/ is copied into
# the saved folder and named in config.json's auto_map, so only trust_remote_code=True loads it.
# The folders are named like the hub models, so presets match them by name.
CUSTOM_MODELS = Path(__file__).parent / "custom_models"


def save_custom_code_model(folder: Path, model, tokenizer, module: str, auto_map: dict) -> str:
    import json
    import shutil

    folder.mkdir(parents=True)
    save_model(folder, model, tokenizer)
    shutil.copy(CUSTOM_MODELS / f"{module}.py", folder / f"{module}.py")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {auto: f"{module}.{name}" for auto, name in auto_map.items()}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return str(folder)


def load_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_rb_test_{name}", CUSTOM_MODELS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_bert_tokenizer():
    """A WordPiece BERT tokenizer over the test corpus' words: [CLS] q [SEP] a [SEP] pairs."""
    from transformers import BertTokenizer

    from rewardbridge.testing import CORPUS

    words = sorted({w.strip(".,?!").lower() for line in CORPUS for w in line.split()} | set("abcdefghijklmnopqrstuvwxyz0123456789+=?.,!"))
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tokenizer = BertTokenizer(vocab=vocab)
    tokenizer.model_max_length = 512
    return tokenizer


@pytest.fixture(scope="session")
def pair_rm_dir(tmp_path_factory):
    """nicholasKluge/RewardModel-shaped: BERT pair encoder, forward(..., alpha) -> tanh(head) * alpha."""
    module = load_module("modeling_pair_reward")
    tok = build_bert_tokenizer()
    config = module.PairRewardConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=512, pad_token_id=tok.pad_token_id, architectures=["RewardModel"],
    )
    torch.manual_seed(4)
    model = module.RewardModel(config).eval()
    folder = tmp_path_factory.mktemp("hub") / "nicholasKluge" / "RewardModel"
    return save_custom_code_model(
        folder, model, tok, "modeling_pair_reward", {"AutoConfig": "PairRewardConfig", "AutoModel": "RewardModel"}
    )


@pytest.fixture(scope="session")
def armorm_dir(tmp_path_factory, tokenizer):
    """ArmoRM-shaped: Llama backbone, 19 objectives in output.rewards, gated into output.score."""
    module = load_module("modeling_tiny_armorm")
    config = module.TinyArmoConfig(
        num_objectives=19, gating_token_id=tokenizer.convert_tokens_to_ids("<|assistant|>"),
        architectures=["TinyArmoRewardModel"], vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(5)
    model = module.TinyArmoRewardModel(config).eval()
    folder = tmp_path_factory.mktemp("hub") / "RLHFlow" / "ArmoRM-Llama3-8B-v0.1"
    return save_custom_code_model(
        folder, model, tokenizer, "modeling_tiny_armorm",
        {"AutoConfig": "TinyArmoConfig", "AutoModelForSequenceClassification": "TinyArmoRewardModel"},
    )
