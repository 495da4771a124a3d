"""What the recipe runner settles about remote rewards before it trains: a pairwise judge's
groups (TRL's ``num_generations``), and how long one request may hold every rank.

TRL's advantage groups are positional: ``num_generations`` consecutive completions. The
runner knows that number, so a pairwise judge (``protocol="genrm"``) gets it as
``group_size`` and judges exactly TRL's groups, even when a prompt appears twice in a batch.

In a multi-process run every rank waits for the slowest in a collective (a pairwise judge's
gather, per-prompt normalization, TRL's own gather of the rewards), and torch.distributed
gives up after ``ddp_timeout`` (transformers: 1800 s): the job dies before ``on_error="skip"``
can act. So the longest a request can take (``scorers.remote.worst_case_seconds``) must fit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError

DDP_TIMEOUT_DEFAULT_S = 1800  # transformers' TrainingArguments.ddp_timeout


def trainer_default(trainer: str, key: str) -> Any:
    """The default of a field of TRL's config class for ``trainer`` (``num_generations``: GRPO 8, RLOO 2)."""
    from trl import GRPOConfig, RLOOConfig

    config_class = {"rloo": RLOOConfig, "grpo": GRPOConfig}[trainer]
    return {f.name: f.default for f in dataclasses.fields(config_class)}[key]


def fill_group_size(recipe: Any) -> None:
    """Give each pairwise judge ``group_size = training.num_generations``; refuse another value.
    (GRPO and RLOO only: the preference trainers score pairs, not TRL's generation groups.)"""
    if recipe.trainer not in ("grpo", "rloo"):
        return
    generations = recipe.training.get("num_generations", trainer_default(recipe.trainer, "num_generations"))
    for index, spec in enumerate(recipe.rewards):
        if spec.source is None or spec.options.get("protocol") != "genrm":
            continue
        given = spec.options.get("group_size")
        if given is None:
            spec.options["group_size"] = generations
        elif given != generations:
            raise ConfigError(
                f"rewards[{index}].group_size={given}, but training.num_generations={generations}: TRL's groups are "
                "num_generations consecutive completions; drop group_size (the runner sets it)"
            )


def check_collective_timeout(recipe: Any, world_size: int) -> None:
    """With several processes, refuse a remote reward whose worst request outlasts ``ddp_timeout``."""
    if world_size <= 1:
        return
    from ..options import RewardOptions
    from ..scorers.remote import worst_case_seconds

    limit = recipe.training.get("ddp_timeout", DDP_TIMEOUT_DEFAULT_S)
    for index, spec in enumerate(recipe.rewards):
        if spec.source is None or not spec.source.startswith(("http://", "https://")):
            continue
        options = RewardOptions.from_kwargs(**spec.options)
        worst = worst_case_seconds(options)
        if worst > limit:
            judge = " x (parse_retries + 1)" if options.protocol in ("genrm", "principle") else ""
            raise ConfigError(
                f"rewards[{index}] ({spec.source}): one request can take up to {worst:g} s (timeout x (max_retries + 1) "
                f"+ backoff{judge}), longer than training.ddp_timeout={limit} s, so with {world_size} processes a hung "
                "request kills the job before on_error can act; lower timeout, max_retries or parse_retries, or raise "
                f"training.ddp_timeout to {int(worst) + 600} or more"
            )
