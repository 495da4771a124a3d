"""A recipe's local paths, checked and made absolute before anything loads.

Every path a recipe names (the policy, the prompts, each reward's ``source:``, ``tokenizer:`` and
``zero3:``) is read relative to the recipe's own folder, so a recipe runs from any working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..policy import check_policy_config
from .early_checks import check_first_row

# Files load_prompts reads itself; anything else is a hub dataset id.
LOCAL_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def resolve_files(recipe, base_dir: Path) -> None:  # recipe: recipe.Recipe (not imported: recipe.py imports this)
    """Relative local paths -> paths under the recipe's folder; a missing local file is an error now."""
    dataset = recipe.dataset
    if dataset.path.endswith(LOCAL_DATA_SUFFIXES) or dataset.path.startswith((".", "/", "~")) or (base_dir / dataset.path).exists():
        dataset.path = str(_existing(dataset.path, base_dir, "dataset.path"))
        check_first_row(dataset)
    if recipe.evaluation is not None:
        recipe.evaluation.prompts = str(_existing(recipe.evaluation.prompts, base_dir, "evaluation.prompts"))
    extra = [("pairs.reward.source", recipe.pairs.reward)] if recipe.pairs is not None else []
    for where, spec in [("model.path", recipe.model)] + [(f"rewards[{i}].source", r) for i, r in enumerate(recipe.rewards)] + extra:
        attr = "path" if where == "model.path" else "source"
        value = getattr(spec, attr)
        if value is None or value.startswith(("pkg:", "http://", "https://")):
            continue
        if value.startswith((".", "/", "~")) or (base_dir / value).exists():  # a path (relative to the recipe): check it now
            setattr(spec, attr, str(_existing(value, base_dir, where)))
        if where == "model.path" and os.path.isdir(spec.path):  # a reward model's folder as the policy, before any weights
            check_policy_config(spec.path, where, spec.gguf_file)  # (a folder an earlier recipe will write: at load time)
    for where, spec in [(f"rewards[{i}]", r) for i, r in enumerate(recipe.rewards)] + [(w.split(".source")[0], s) for w, s in extra]:
        resolve_option_paths(spec.options or {}, base_dir, where)


PATH_OPTIONS = ("tokenizer", "zero3")  # reward options that may name a local file or folder


def resolve_option_paths(options: dict, base_dir: Path, where: str) -> None:
    """A reward's ``tokenizer:`` and ``zero3:`` paths, as its ``source:``: beside the recipe first; else,
    as before, from the working directory (the shipped nemotron70b recipe names
    ``configs/deepspeed/zero3_inference.json`` from the repository root); a path that is neither (``./tok``)
    is an error now, not a hub lookup. A bare name found in neither place stays a hub id."""
    for key in PATH_OPTIONS:
        value = options.get(key)
        if not isinstance(value, str) or value.startswith(("http://", "https://")):
            continue
        path = Path(value).expanduser()
        beside = path if path.is_absolute() else base_dir / path
        if beside.exists():
            options[key] = str(beside)
        elif path.exists():
            options[key] = str(path)
        elif value.startswith((".", "/", "~")) or (key == "zero3" and value.endswith(".json")):
            raise ConfigError(f"{where}.{key}={value!r}: no such file or folder (looked beside the recipe, {beside.resolve()}, "
                              f"and in the working directory, {path.resolve()}); paths are relative to the recipe's folder")


def _existing(value: str, base_dir: Path, where: str) -> Path:
    path = Path(value).expanduser()
    resolved = path if path.is_absolute() else (base_dir / path)
    if not resolved.exists():
        raise ConfigError(f"{where}={value!r}: no such file (resolved to {resolved.resolve()}); paths are relative to the recipe's folder")
    return resolved
