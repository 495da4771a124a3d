"""What a dpo/rpo ``training.output_dir`` already holds, and what a ``--resume`` may change.

The first run of a recipe with iterations saves the recipe as resolved (overrides applied, paths
made absolute) to ``output_dir/recipe.json``. A resume compares the recipe with it and refuses a
change that would make the finished work and the rest disagree (another policy, trainer, slicing
of the prompts, seed, loss, sampling, reward, held-out check), naming each key. It allows what
cannot change finished work: more (or fewer) iterations, logging, W&B, the engine's and the
reward's time-outs and concurrency, and, while the first unfinished iteration has not made its
pairs, ``pairs.min_margin`` / ``pairs.drop_truncated`` (its pairs are then chosen again from the
responses it sampled; nothing is sampled twice).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..jobs.output import RUNTIME_OPTIONS

RECIPE_FILE = "recipe.json"
RESUMABLE = frozenset({
    "iterations", "threads", "plot", "training.output_dir", "training.logging_steps", "training.logging_first_step",
    "training.report_to", "training.disable_tqdm", "training.save_steps", "training.save_total_limit",
    "pairs.engine_timeout", "pairs.engine_concurrency", "pairs.engine_start_timeout", "pairs.engine_key_env",
})
RESUMABLE_PREFIXES = ("wandb.",)
SELECTION = ("pairs.min_margin", "pairs.drop_truncated")  # re-selected from the unfinished iteration's responses
PATH_KEYS = ("model.path", "dataset.path", "evaluation.prompts", "pairs.reward.source")


def recipe_record(recipe) -> dict[str, Any]:
    """The recipe as flat dotted keys (``"pairs.n": 4``; reward options under their entry:
    ``"pairs.reward.timeout"``), local paths absolute, as JSON values."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(prefix if key == "options" else f"{prefix}.{key}" if prefix else key, item)  # options are flat in YAML
        else:
            flat[prefix] = value

    data = recipe.to_dict()
    for index, reward in enumerate(data.pop("rewards") or []):
        walk(f"rewards[{index}]", reward)
    walk("", data)
    for key in [*PATH_KEYS, *(k for k in flat if k.startswith("rewards[") and k.endswith(".source"))]:
        if isinstance(flat.get(key), str) and os.path.exists(flat[key]):
            flat[key] = os.path.abspath(flat[key])
    return json.loads(json.dumps(flat, default=str))


def check_iterations_folder(recipe, out: Path, resume: bool) -> list[str]:
    """Refuse a rerun over earlier iterations (without ``--resume``) and a resume with another recipe;
    then save the recipe as this run's (main process only). Returns the iterations that hold work
    (none: the folder is this run's to start over)."""
    work = _work(out)
    if work and not resume:
        raise ConfigError(f"{out} already holds iterations ({', '.join(work)}); pass --resume to continue that run (sampled "
                          "responses are kept; a changed pairs.min_margin or pairs.drop_truncated chooses their pairs again), "
                          "or set training.output_dir to a new folder")
    path, now = out / RECIPE_FILE, recipe_record(recipe)
    if work and path.exists():
        before = json.loads(path.read_text())
        changed = [key for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key) and not _resumable(key)]
        pending = _first_unfinished(out, recipe.iterations)
        if pending is not None and (out / pending / "pairs.done.json").exists():
            changed += [key for key in SELECTION if before.get(key) != now.get(key)]  # its pairs are made: too late to choose again
        if changed:
            shown = "; ".join(f"{key}: {before.get(key)!r} then, {now.get(key)!r} now" for key in changed)
            raise ConfigError(f"--resume: {out} was run with another recipe ({shown}); finished work would disagree with the "
                              f"rest. Resume with the recipe as it was ({path} holds it), or set training.output_dir to a new folder")
    elif work:
        print(f"note: {out} has no {RECIPE_FILE} (an older rewardbridge made it): the recipe cannot be compared with that run's",
              flush=True)
    out.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps(now, indent=1))
    os.replace(path.with_suffix(".tmp"), path)
    return work


CLOCK_MARGIN_S = 300.0  # nodes' clocks (and a network filesystem's) may differ by this much


def wait_for_main_folder(out: Path, started: float, timeout: float = 300.0) -> list[str]:
    """Ranks other than the main one: wait until the main process has written this run's
    ``recipe.json`` into ``out`` (modified after ``started``, this process's wall-clock start,
    less ``CLOCK_MARGIN_S``), then return. Every rank reads the pairs and each
    iteration's policy that the main process writes there, so on several nodes ``out`` must be
    a folder they all share; a node-local one used to leave this rank waiting in silence for the
    pairs until the trainer's collective timed out (30 minutes by default).
    """
    path, deadline = out / RECIPE_FILE, time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if path.stat().st_mtime >= started - CLOCK_MARGIN_S:
                return ["(checked by the main process)"]
        except FileNotFoundError:
            pass
        time.sleep(1.0)
    raise ConfigError(
        f"rank {os.environ.get('RANK', '?')} on {socket.gethostname()} waited {timeout:.0f} s for the main process to write "
        f"{path}: training.output_dir must be a folder every node shares (a network filesystem), as the main process "
        "writes the pairs and each iteration's policy there for every rank to read; on one node, check that the main "
        "process is still running"
    )


def check_training_folder(out: Path, resume: bool, what: str = "training", refuse_existing: bool = True) -> None:
    """One training into ``out``: ``--resume`` needs a checkpoint there; a fresh run (``refuse_existing``)
    needs no earlier run's files."""
    checkpoints = sorted(out.glob("checkpoint-*")) if out.is_dir() else []
    if resume and not checkpoints:
        raise ConfigError(f"--resume: {out} has no checkpoint-* to resume from (training.save_strategy 'no', or the run stopped "
                          f"before its first save); drop --resume to start the {what} again (in an empty training.output_dir)")
    if not resume and refuse_existing:
        found = [p.name for p in sorted(out.iterdir()) if p.name in ("log_history.json", "config.json", "heldout.json")
                 or p.name.startswith("checkpoint-") or p.suffix == ".safetensors"] if out.is_dir() else []
        if found:
            raise ConfigError(f"{out} already holds a {what} ({', '.join(found[:4])}); pass --resume to continue it from its last "
                              "checkpoint, or set training.output_dir to a new folder")


def _work(out: Path) -> list[str]:
    """The iterations that hold work: finished, training, or with sampled responses."""
    found = []
    for folder in sorted(out.glob("iter-*"), key=lambda p: p.name):
        responses = folder / "pairs.jsonl.responses.jsonl"
        if (folder / "done.json").exists():
            found.append(f"{folder.name} finished")
        elif any(folder.glob("train/checkpoint-*")):
            found.append(f"{folder.name} training")
        elif responses.exists() and responses.stat().st_size > 0:
            found.append(f"{folder.name} sampled")
    return found


def _first_unfinished(out: Path, iterations: int | None) -> str | None:
    for k in range(1, (iterations or 1) + 1):
        if not (out / f"iter-{k}" / "done.json").exists():
            return f"iter-{k}"
    return None


def _resumable(key: str) -> bool:
    if key in RESUMABLE or key in SELECTION or key.startswith(RESUMABLE_PREFIXES):
        return True
    entry, _, option = key.rpartition(".")
    return (entry == "pairs.reward" or entry.startswith("rewards[")) and option in RUNTIME_OPTIONS
