"""The recipe runner behind ``rewardbridge train RECIPE.yaml``.

``load_recipe`` (recipe.py) validates everything first; :func:`run` then loads the rewards
(before any TRL config: an active ZeRO-3 config would partition every later load), the
policy (LoRA when the recipe has a ``peft`` section), builds TRL's RLOO or GRPO trainer,
optionally scores greedy answers to held-out prompts before and after training, trains,
prints one line per step and a summary, and writes ``log_history.json`` and a plot under
``training.output_dir``. Launch it with ``accelerate launch -m rewardbridge.cli train`` for
several processes.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from transformers import TrainerCallback

from ..errors import ConfigError
from .prompts import read_rows
from .recipe import Recipe, RewardSpec, load_recipe, resolve_path  # noqa: F401  (load_recipe: its old home)

__all__ = ["build_trainer", "load_recipe", "run"]


def quiet_libraries() -> None:
    """No library deprecation noise, progress bars or raw log dicts on the console."""
    import torch

    if not torch.cuda.is_available():
        # DeepSpeed (imported by accelerate/TRL when installed) warns on every import without a GPU.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    # Upstream UserWarnings that say nothing actionable about a recipe.
    for message in (r".*generation flags are not valid.*", r".*attention mask.*", r".*pad_token_id.*",
                    r".*use_cache=True.*", r".*torch_dtype.*", r".*The tokenizer has new PAD/BOS/EOS.*"):
        warnings.filterwarnings("ignore", message=message)
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def resolve_model(path: str, gguf_file: str | None = None) -> str:
    """A directory ``from_pretrained`` can load without extra arguments.

    A GGUF checkpoint is unpacked once into a plain Hugging Face folder under
    ``$REWARDBRIDGE_CACHE`` (default ``~/.cache/rewardbridge``): TRL reloads the policy by
    path for its reference model, and that reload knows nothing of ``gguf_file``.
    """
    import shutil
    import tempfile

    path = resolve_path(path)
    if not gguf_file:
        return path
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..scorers.loading import gguf_kwargs

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


def build_rewards(specs: Sequence[RewardSpec], functions: list[Callable | None] | None = None) -> list[Callable]:
    """One TRL reward function per recipe entry: ``load_reward`` for models, the named callable
    (a class is instantiated with ``kwargs``) for rule-based entries.

    ``preflight.check_rewards`` runs first (unless its ``functions`` are given), so a mistake in
    any of them stops the run before the weights of any load.
    """
    from ..reward_fn import load_reward
    from .preflight import check_rewards

    functions = check_rewards(specs) if functions is None else functions
    rewards = []
    for spec, function in zip(specs, functions):
        if function is not None:
            rewards.append(function)
            continue
        options = dict(spec.options)
        source = resolve_model(spec.source, options.pop("gguf_file", None)) if not spec.source.startswith(("http://", "https://")) else spec.source
        rewards.append(load_reward(source, **options))
    return rewards


def build_trainer(recipe: Recipe):
    """Rewards, policy (+ LoRA), prompts and TRL's trainer for ``recipe``; returns the trainer."""
    from .preflight import preflight

    quiet_libraries()
    prompts, functions = preflight(recipe)  # prompts read and rewards resolved before any trainer import or weights
    import torch
    from transformers import AutoTokenizer, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from ..policy import load_causal_lm

    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    set_seed(recipe.seed)  # before LoRA's random init, which TRL does before the Trainer seeds
    rewards = build_rewards(recipe.rewards, functions)
    model_path = resolve_model(recipe.model.path, recipe.model.gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=recipe.model.trust_remote_code)
    dtype = "auto" if recipe.model.dtype == "auto" else getattr(torch, recipe.model.dtype)
    policy = load_causal_lm(model_path, "model.path", dtype=dtype, trust_remote_code=recipe.model.trust_remote_code)
    peft_config = None
    if recipe.peft is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(**recipe.peft)

    config_class, trainer_class = {"rloo": (RLOOConfig, RLOOTrainer), "grpo": (GRPOConfig, GRPOTrainer)}[recipe.trainer]
    training = dict(recipe.training)
    if recipe.wandb is not None and recipe.wandb.name and "run_name" not in training:
        training["run_name"] = recipe.wandb.name
    args = config_class(seed=recipe.seed, reward_weights=[spec.weight for spec in recipe.rewards], **training)
    trainer = trainer_class(
        model=policy,
        reward_funcs=rewards,
        args=args,
        train_dataset=prompts,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[StepPrinter([getattr(r, "__name__", type(r).__name__) for r in rewards])],
    )
    # Our StepPrinter prints one line per step; these would print raw log dicts beside it.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def run(recipe: Recipe, resume: bool = False) -> list[dict]:
    """Train; print one line per step and a summary; write the plot. Returns TRL's log history.

    ``resume``: continue from the last checkpoint in ``training.output_dir``.
    """
    if recipe.trainer not in ("rloo", "grpo"):
        raise ConfigError(f"trainer={recipe.trainer!r} runs in rewardbridge.training.iterations.run_preference (the CLI picks it)")
    started = time.monotonic()
    from .resume import check_training_folder

    # --resume needs a checkpoint (TRL's own error is a bare ValueError after the weights loaded); a rerun
    # over a finished run is allowed here, as `make demo` reruns the quickstart.
    check_training_folder(Path(recipe.training.get("output_dir") or "trainer_output"), resume, refuse_existing=False)
    trainer = build_trainer(recipe)
    main = trainer.accelerator.is_main_process
    wandb_run = start_wandb(recipe) if (main and recipe.reports_to_wandb) else None
    heldout = None
    if recipe.evaluation is not None:
        if trainer.accelerator.num_processes > 1:
            if main:
                print("held-out check skipped: it runs in single-process runs only", flush=True)
        else:
            heldout = HeldOut(trainer, recipe)
            heldout.before = heldout.score()
    if main:
        print(f"training: {recipe.trainer.upper()} for {trainer.args.max_steps} steps, "
              f"{trainer.args.per_device_train_batch_size * trainer.accelerator.num_processes} rollouts per step", flush=True)
    trained = time.monotonic()
    trainer.train(resume_from_checkpoint=True if resume else None)
    train_seconds = time.monotonic() - trained
    if heldout is not None:
        heldout.after = heldout.score()
    history = trainer.state.log_history
    if main:
        out = Path(trainer.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "log_history.json").write_text(json.dumps(history, indent=1))
        written = [out / "log_history.json"]
        if heldout is not None:
            heldout.print_table()
            (out / "heldout.json").write_text(json.dumps(heldout.rows(), indent=1))
            written.append(out / "heldout.json")
        if recipe.plot:
            policy = Path(recipe.model.gguf_file or recipe.model.path.removeprefix("pkg:")).stem
            plot_run(history, out / recipe.plot, title=f"{recipe.trainer.upper()} on {policy}: reward per step", heldout=heldout)
            written.append(out / recipe.plot)
        print_summary(history, train_seconds, time.monotonic() - started, heldout, written)
        if wandb_run is not None:
            finish_wandb(wandb_run, heldout)
    return history


def start_wandb(recipe: Recipe):
    """``wandb.init`` with the recipe's project/name/group/tags and the whole resolved recipe as
    config (TRL's callback then adds TrainingArguments to the same run)."""
    import wandb

    spec = recipe.wandb
    if wandb.run is not None:
        wandb.run.config.update({"recipe": recipe.to_dict()}, allow_val_change=True)
        return wandb.run
    kwargs = dict(project=os.environ.get("WANDB_PROJECT") or "rewardbridge")
    if spec is not None:
        kwargs = dict(project=spec.project, name=spec.name, group=spec.group, tags=spec.tags or None,
                      entity=spec.entity, notes=spec.notes)
    return wandb.init(config={"recipe": recipe.to_dict()}, **kwargs)


def finish_wandb(run, heldout: HeldOut | None) -> None:
    import wandb

    if heldout is not None and heldout.after is not None:
        rows = heldout.rows()
        table = wandb.Table(columns=["prompt", "answer_before", "reward_before", "answer_after", "reward_after"],
                            data=[[r["prompt"], r["answer_before"], r["reward_before"], r["answer_after"], r["reward_after"]] for r in rows])
        run.log({"heldout/answers": table})
        run.summary["heldout/reward_before"] = heldout.mean("before")
        run.summary["heldout/reward_after"] = heldout.mean("after")
    run.finish()


class HeldOut:
    """Greedy answers to held-out prompts, scored by the recipe's own rewards (weighted sum of raw scores)."""

    def __init__(self, trainer, recipe: Recipe):
        spec = recipe.evaluation
        rows = read_rows(spec.prompts)[: spec.limit]
        self.prompts = [row["prompt"] for row in rows]
        self.trainer = trainer
        self.max_new_tokens = spec.max_new_tokens
        self.weights = [r.weight for r in recipe.rewards]
        self.before: list[tuple[str, float]] | None = None
        self.after: list[tuple[str, float]] | None = None

    def score(self) -> list[tuple[str, float]]:
        """[(answer, reward)] per prompt: greedy decoding, then each reward's raw score, weighted."""
        import torch
        from transformers import GenerationConfig

        model, tokenizer = self.trainer.model, self.trainer.processing_class
        messages = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in self.prompts]
        texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # generation continues at the right edge
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        tokenizer.padding_side = side
        config = GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            output = model.generate(**batch, generation_config=config)
        model.train(was_training)
        answers = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        completions = [[{"role": "assistant", "content": a}] for a in answers]
        total = [0.0] * len(answers)
        for reward, weight in zip(self.trainer.reward_funcs, self.weights):
            if hasattr(reward, "scorer"):  # a rewardbridge reward: its raw score (per-prompt normalization needs a group)
                from ..conversation import conversations_from_trl

                values = reward.combine(reward.scorer.score(conversations_from_trl(messages, completions))).tolist()
            else:
                values = reward(prompts=messages, completions=completions)
            total = [t + weight * float(v) for t, v in zip(total, values)]
        return list(zip(answers, total))

    def mean(self, which: str) -> float:
        values = [score for _, score in getattr(self, which)]
        return sum(values) / len(values)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"prompt": p if isinstance(p, str) else p[-1]["content"], "answer_before": b[0], "reward_before": b[1],
             "answer_after": a[0], "reward_after": a[1]}
            for p, b, a in zip(self.prompts, self.before, self.after)
        ]

    def print_table(self) -> None:
        print("\nheld-out prompts, greedy answers scored by the same reward (before -> after training):")
        for row in self.rows():
            print(f"  {row['reward_before']:+7.3f} -> {row['reward_after']:+7.3f}  {_clip(row['prompt'], 44)}")
            print(f"      before: {_clip(row['answer_before'], 96)}")
            print(f"      after:  {_clip(row['answer_after'], 96)}")
        print(f"  mean {self.mean('before'):+7.3f} -> {self.mean('after'):+7.3f}")


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def step_rewards(history: list[dict]) -> tuple[list[int], list[float]]:
    points = [(entry["step"], entry["reward"]) for entry in history if "reward" in entry]
    return [s for s, _ in points], [r for _, r in points]


def print_summary(history, train_seconds: float, total_seconds: float, heldout: HeldOut | None, written) -> None:
    steps, rewards = step_rewards(history)
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    lines = [f"\ndone: {len(steps)} logged steps, {train_seconds:.0f} s training ({total_seconds:.0f} s in all, "
             f"{usage.ru_utime + usage.ru_stime:.0f} s of CPU time)"]
    if len(rewards) >= 2:
        half = len(rewards) // 2
        first, last = sum(rewards[:half]) / half, sum(rewards[half:]) / (len(rewards) - half)
        lines.append(f"  reward per step: first half mean {first:+.4f}, second half mean {last:+.4f} ({last - first:+.4f})")
    if heldout is not None and heldout.after is not None:
        before, after = heldout.mean("before"), heldout.mean("after")
        lines.append(f"  held-out reward (greedy, {len(heldout.prompts)} prompts): {before:+.4f} -> {after:+.4f} ({after - before:+.4f})")
    lines.append("  wrote " + ", ".join(str(p) for p in written))
    print("\n".join(lines), flush=True)


def plot_run(history: list[dict], path: Path, title: str, heldout: HeldOut | None = None) -> None:
    """PNG: mean reward per step (and its rolling mean); beside it, the held-out before/after scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, rewards = step_rewards(history)
    if not steps:
        return
    panels = 2 if heldout is not None and heldout.after is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4), squeeze=False)
    ax = axes[0][0]
    window = max(1, len(rewards) // 4)
    rolling = [sum(rewards[max(0, i - window + 1): i + 1]) / len(rewards[max(0, i - window + 1): i + 1]) for i in range(len(rewards))]
    ax.plot(steps, rewards, "o", alpha=0.4, label="mean reward of the step's rollouts")
    ax.plot(steps, rolling, "-", linewidth=2, label=f"rolling mean ({window} steps)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.legend()
    if panels == 2:
        ax = axes[0][1]
        before = [s for _, s in heldout.before]
        after = [s for _, s in heldout.after]
        xs = list(range(len(before)))
        ax.bar([x - 0.2 for x in xs], before, width=0.4, label=f"before (mean {heldout.mean('before'):+.2f})")
        ax.bar([x + 0.2 for x in xs], after, width=0.4, label=f"after (mean {heldout.mean('after'):+.2f})")
        ax.set_xticks(xs, [f"P{x + 1}" for x in xs])
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_ylabel("reward of the greedy answer")
        ax.set_title("held-out prompts, same reward model")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)




class StepPrinter(TrainerCallback):
    """One line per logged step: step, reward (and each reward's mean when several), the first
    reward model's raw mean, KL, completion length, seconds per step."""

    def __init__(self, reward_names: list[str]):
        self.reward_names = reward_names
        self.last = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.last is None:
            self.last = (state.global_step, time.monotonic())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "reward" not in logs:
            return
        parts = [f"step {state.global_step:4d}/{state.max_steps}", f"reward {logs['reward']:+.4f}"]
        if len(self.reward_names) > 1:
            parts.append("(" + ", ".join(f"{name} {logs.get(f'rewards/{name}/mean', math.nan):+.3f}" for name in self.reward_names) + ")")
        for name in self.reward_names:
            if f"{name}/normalized_mean" in logs and f"{name}/raw_mean" in logs:
                parts.append(f"raw {logs[f'{name}/raw_mean']:+.4f}")
                break
        if "kl" in logs:
            parts.append(f"kl {logs['kl']:.4f}")
        if "completions/mean_length" in logs:
            parts.append(f"length {logs['completions/mean_length']:5.1f}")
        now = time.monotonic()
        if self.last is not None and state.global_step > self.last[0]:
            parts.append(f"{(now - self.last[1]) / (state.global_step - self.last[0]):5.1f} s/step")
        self.last = (state.global_step, now)
        print("  ".join(parts), flush=True)
