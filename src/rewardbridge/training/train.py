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
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ConfigError
from .recipe import Recipe, RewardSpec, load_recipe, resolve_path  # noqa: F401  (load_recipe: its old home)

from .report import HeldOut, StepPrinter, plot_run, print_summary

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
