"""Recipe checks that read a library or a file, run when the recipe is read (``recipe.py``), long
before any model loads: TRL's batch arithmetic, TRL's own config checks, and the local prompt
file's first row.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

from ..errors import ConfigError


def check_batch(trainer: str, training: dict[str, Any]) -> None:
    """The batch arithmetic TRL checks in its config (``GRPOConfig``/``RLOOConfig.__post_init__``),
    checked here, before any model loads: every prompt's completions in one generation batch."""
    from trl import GRPOConfig, RLOOConfig

    defaults = {f.name: f.default for f in dataclasses.fields({"rloo": RLOOConfig, "grpo": GRPOConfig}[trainer])}
    get = lambda key: training.get(key, defaults.get(key))  # noqa: E731
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch / torchrun
    per_device, generations = get("per_device_train_batch_size"), get("num_generations")
    if not isinstance(per_device, int) or not isinstance(generations, int):
        return  # None or another type: TRL's own check says what it wants
    if generations < 2:
        raise ConfigError(f"training.num_generations={generations}: {trainer.upper()} compares several completions of one prompt; use 2 or more")
    steps, size = get("steps_per_generation"), get("generation_batch_size")
    if size is None:
        steps = steps or get("gradient_accumulation_steps") or 1
        size = per_device * processes * steps
        said = f"per_device_train_batch_size={per_device} x {processes} process(es) x steps_per_generation={steps} = {size}"
    else:
        said = f"generation_batch_size={size}"
    if size % generations:
        raise ConfigError(
            f"training: {said} completions per generation batch is not a multiple of num_generations={generations}, and TRL "
            f"would refuse it after loading the models (each prompt's {generations} completions must share a batch): make the "
            f"batch a multiple of {generations}, or num_generations a divisor of {size}"
        )


# Settings of the machine, not of the run: checked by TRL on the real device when training starts. The
# check builds the config as a CPU run would (bf16 on a CPU is refused by transformers), and without
# DeepSpeed/FSDP (a DeepSpeed config would become the process's global one, partitioning later loads).
DEVICE_SETTINGS = {"use_cpu": True, "bf16": False, "fp16": False, "tf32": None}
NOT_CHECKED = ("deepspeed", "fsdp", "fsdp_config", "accelerator_config",
               "seed", "reward_weights")  # the recipe's own places for these say so (recipe.py)


def check_trl_config(trainer: str, training: dict[str, Any], seed: int, reward_weights: list[float]) -> None:
    """Build TRL's config (``GRPOConfig``/``RLOOConfig(**training)``, as the runner does) now, so its own
    checks (``generation_batch_size`` with ``steps_per_generation``, ...) fail in seconds, naming the keys,
    not after the weights load; and refuse a run that would train 0 steps."""
    import torch
    from trl import GRPOConfig, RLOOConfig

    config_class = {"rloo": RLOOConfig, "grpo": GRPOConfig}[trainer]

    class Checked(config_class):  # no device set-up: it would start accelerate's process-wide state
        distributed_state = None  # read by world_size, process_index, ...: one CPU process
        _n_gpu = 0

        @property
        def device(self):
            return torch.device("cpu")

        @property
        def n_gpu(self):
            return 0

        @property
        def world_size(self):  # the batch arithmetic counts every process (accelerate launch / torchrun set it)
            return int(os.environ.get("WORLD_SIZE", "1"))

    kwargs = {k: v for k, v in training.items() if k not in NOT_CHECKED}
    kwargs = {"output_dir": "unused", **kwargs, **{k: v for k, v in DEVICE_SETTINGS.items() if k != "tf32" or k in kwargs}}
    try:
        with warnings.catch_warnings():  # TRL's deprecation notes: said once, when the runner builds it
            warnings.simplefilter("ignore")
            config = Checked(seed=seed, reward_weights=reward_weights, **kwargs)
    except (TypeError, ValueError) as error:
        said = " ".join(str(error).split())
        keys = [f"training.{k}" for k, v in training.items() if k in said or (isinstance(v, str) and len(v) > 2 and v in said)]
        keys = keys or ["training"]
        raise ConfigError(
            f"{', '.join(keys)}: TRL's {config_class.__name__} refuses these settings (it would say so only after the "
            f"models load): {said}"
        ) from None
    zero = [f"{key}={getattr(config, key)}" for key in ("num_iterations",) if getattr(config, key, 1) < 1]
    if config.max_steps == 0 or (config.max_steps < 0 and config.num_train_epochs <= 0):
        zero.append(f"max_steps={config.max_steps}" if config.max_steps == 0 else f"num_train_epochs={config.num_train_epochs}")
    if zero:
        raise ConfigError(
            f"training.{zero[0]}: this run would train 0 steps and exit as if it had trained; set it to 1 or more"
        )


def check_first_row(dataset) -> None:
    """A local prompt file's first row has the column the recipe reads (``dataset``: a ``DatasetSpec``; a folder must be a dataset)."""
    from ..errors import RewardBridgeError
    from ..jobs.rows import read_rows

    try:
        first = next(iter(read_rows(dataset.path)), None)
    except RewardBridgeError as error:
        raise ConfigError(f"dataset.path: {error}") from None
    wanted = ["prompt", "split"] if dataset.format == "helpsteer2_preference" else [dataset.prompt_column]
    if first is not None and first.data is not None and any(c not in first.data for c in wanted):
        missing = next(c for c in wanted if c not in first.data)
        raise ConfigError(
            f"dataset.path={dataset.path!r}: its rows have no {missing!r} column (the first has {sorted(first.data)}); "
            "TRL reads the prompt column: set dataset.prompt_column to the one holding the prompts"
        )
