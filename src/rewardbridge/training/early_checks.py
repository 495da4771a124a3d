"""Recipe checks that read a library or a file, run when the recipe is read (``recipe.py``), long
before any model loads: TRL's batch arithmetic and the local prompt file's first row.
"""

from __future__ import annotations

import dataclasses
import os
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
