"""The preference-training part of the recipe schema: ``trainer: dpo | rpo``, ``iterations`` and
the ``pairs:`` section, checked before anything loads (recipe.py calls :func:`check_preference`).

A ``dpo`` / ``rpo`` recipe either trains once on a preference dataset (``dataset``: rows of
``prompt``, ``chosen``, ``rejected``, plus ``chosen_reward`` / ``rejected_reward`` for RPO), or,
with ``iterations: K`` and ``pairs:``, runs Nemotron-4's loop: each iteration samples pairs
from the current policy (``dataset`` holds the prompts), trains on them with that policy as
the reference, and goes on from the result (iterations.py).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from typing import Any, Callable

from ..errors import ConfigError
from .typecheck import check_value

PREFERENCE_TRAINERS = ("dpo", "rpo")
PAIR_COLUMNS = ("prompt", "chosen", "rejected")
REWARD_COLUMNS = ("chosen_reward", "rejected_reward")


@dataclass
class PairsSpec:
    """How each iteration makes its pairs (``rewardbridge pairs`` with these settings).

    ``reward``: one reward model, as a ``rewards`` entry (``source`` + load_reward options).
    ``engine``: an OpenAI-compatible server's URL; since each iteration samples from a new
    policy, ``engine_command`` (with ``{policy}``) starts one for each iteration's checkpoint.
    ``prompts_per_iteration``: iteration k takes the k-th slice of the prompts (default: all).
    ``drop_truncated``: responses cut at ``max_new_tokens`` are left out of the pairs (docs/rpo.md).
    """

    reward: Any
    n: int = 4
    min_margin: float = 0.0
    drop_truncated: bool = False
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 8
    prompts_per_iteration: int | None = None
    as_chat: bool = False
    engine: str | None = None
    engine_model: str | None = None  # the name the engine serves the policy under (default: model.path)
    engine_command: str | None = None
    engine_key_env: str | None = None
    engine_timeout: float = 600.0
    engine_concurrency: int = 16
    engine_start_timeout: float = 900.0


def parse_pairs(value: Any, parse_reward: Callable[[Any, int], Any], reject_unknown: Callable) -> PairsSpec:
    """The ``pairs:`` mapping -> PairsSpec; ``reward`` goes through the rewards-entry parser."""
    if not isinstance(value, dict):
        raise ConfigError(f"pairs must be a mapping of {[f.name for f in fields(PairsSpec)]}")
    reject_unknown(value, [f.name for f in fields(PairsSpec)], "pairs: unknown key")
    if not isinstance(value.get("reward"), dict):
        raise ConfigError("pairs.reward is required: the reward model that scores the samples (source + load_reward options)")
    if "weight" in value["reward"]:
        raise ConfigError("pairs.reward.weight: the pairs' reward is the only one, and its own scores make the pairs (RPO's "
                          "target is eta * their gap); a weight would be ignored: drop it, and scale with training.eta")
    try:
        reward = parse_reward(value["reward"], 0)
    except ConfigError as error:
        raise ConfigError(str(error).replace("rewards[0]", "pairs.reward")) from None
    if reward.source is None:
        raise ConfigError("pairs.reward needs a reward model ('source'); rule-based functions cannot rank responses here")
    hints = typing.get_type_hints(PairsSpec)
    spec = PairsSpec(reward=reward, **{k: check_value(f"pairs.{k}", v, hints[k]) for k, v in value.items() if k != "reward"})
    from ..jobs.generate import Sampling

    try:
        Sampling(n=spec.n, max_new_tokens=spec.max_new_tokens, temperature=spec.temperature, top_p=spec.top_p).check()
    except ConfigError as error:  # the same check as the command line's, in the recipe's words
        text = str(error)
        for flag, key in (("--max-new-tokens ", "pairs.max_new_tokens="), ("--max-new-tokens", "pairs.max_new_tokens"),
                          ("--temperature ", "pairs.temperature="), ("--top-p", "pairs.top_p"), ("pass -n ", "set pairs.n to "),
                          ("-n ", "pairs.n=")):
            text = text.replace(flag, key)
        raise ConfigError(text) from None
    if spec.min_margin < 0 or spec.batch_size < 1 or (spec.prompts_per_iteration is not None and spec.prompts_per_iteration < 1):
        raise ConfigError("pairs: min_margin must be >= 0, batch_size >= 1, prompts_per_iteration >= 1 (or null)")
    if spec.engine_command is not None and (spec.engine is None or "{policy}" not in spec.engine_command):
        raise ConfigError("pairs.engine_command must hold '{policy}' (each iteration's checkpoint) and needs pairs.engine, "
                          "the URL it serves on; for example engine: http://127.0.0.1:8011, "
                          "engine_command: 'vllm serve {policy} --port 8011'")
    return spec


def check_preference(data: dict, trainer: str) -> tuple[int | None, bool]:
    """The keys that only preference trainers take, against ``trainer``; returns (iterations, needs rewards)."""
    iterations = check_value("iterations", data.get("iterations"), int | None)
    if trainer not in PREFERENCE_TRAINERS:
        for key in ("iterations", "pairs"):
            if data.get(key) is not None:
                raise ConfigError(f"{key}: is for trainer dpo or rpo (iterations of sampled pairs); trainer={trainer!r} "
                                  "samples online every step already")
        return None, True
    if iterations is not None and iterations < 1:
        raise ConfigError(f"iterations={iterations} must be at least 1")
    if iterations is not None and data.get("pairs") is None:
        raise ConfigError(f"iterations: {iterations} needs a pairs: section (how each iteration samples and scores its pairs: "
                          "reward, n, min_margin); without it, dataset must already hold the pairs")
    if data.get("pairs") is not None and iterations is None:
        iterations = 1
    return iterations, False


def check_engine_iterations(spec: PairsSpec | None, iterations: int | None) -> None:
    if spec is not None and spec.engine is not None and spec.engine_command is None and (iterations or 1) > 1:
        raise ConfigError(f"pairs.engine serves one fixed policy, but iteration 2 of {iterations} must sample from iteration 1's "
                          "checkpoint; add pairs.engine_command (e.g. 'vllm serve {policy} --port 8011'), which the runner "
                          "starts for each iteration, or drop pairs.engine to generate in-process")


def check_iteration_training(training: dict, spec: PairsSpec | None) -> None:
    """What the iterations decide themselves: each iteration's reference is the previous policy."""
    if spec is not None and training.get("sync_ref_model"):
        raise ConfigError("training.sync_ref_model: true mixes the policy into the reference during an iteration (TR-DPO); "
                          "with iterations the reference is the previous iteration's policy, held fixed: drop sync_ref_model")


def check_preference_dataset(path: str, trainer: str) -> None:
    """A local preference file's first row has the columns the trainer reads (hub datasets: at load time)."""
    import os

    if not os.path.isfile(path):
        return
    from ..jobs.rows import read_rows

    first = next(iter(read_rows(path)), None)
    if first is None:
        raise ConfigError(f"dataset.path={path!r} has no rows")
    if first.data is None:
        raise ConfigError(f"dataset.path={path!r} {first.where}: {first.error}")
    needed = PAIR_COLUMNS + (REWARD_COLUMNS if trainer == "rpo" else ())
    missing = [c for c in needed if c not in first.data]
    if missing:
        hint = ("; RPO needs each response's reward-model score: make the pairs with `rewardbridge pairs`, or add a pairs: "
                "section and iterations" if set(missing) <= set(REWARD_COLUMNS) else
                "; a dpo/rpo recipe without a pairs: section trains on pairs (prompt, chosen, rejected)")
        raise ConfigError(f"dataset.path={path!r}: row 1 has no {', '.join(missing)} (it has {sorted(first.data)}){hint}")
