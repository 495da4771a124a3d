"""Recipes and the recipe runner: every recipe loads; `rewardbridge train` trains and plots."""

import json
from pathlib import Path

import pytest
import yaml

from rewardbridge.cli import main as cli_main
from rewardbridge.train import Recipe, load_recipe, resolve_path

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_loads_and_opens_with_its_header(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    header = path.read_text().split("\n\n")[0]
    for line in ("Reproduces:", "Tested on:", "Launch:"):
        assert line in header, f"{path.name} header lacks {line!r}"
    if not recipe.dataset.path.startswith(("nvidia/", "trl-lib/")):
        assert Path(recipe.dataset.path).exists(), "a local dataset path resolves against the recipe folder"


def test_overrides_and_unknown_keys(tmp_path):
    recipe = load_recipe(RECIPES[0], ["training.max_steps=3", "reward.normalize=zscore"])
    assert recipe.training["max_steps"] == 3 and recipe.reward["normalize"] == "zscore"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"trainer": "rloo", "modle": {}}))
    with pytest.raises(ValueError, match=r"unknown recipe keys \['modle'\]"):
        load_recipe(bad)


def test_pkg_paths_resolve_to_the_installed_package():
    assert Path(resolve_path("pkg:rewardbridge"), "reward_fn.py").exists()
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_path("pkg:no_such_package_here")


def test_train_command_runs_a_recipe_end_to_end(tmp_path, causal_dir, classifier_dir):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": [{"role": "user", "content": q}]}) for q in ["Hi?", "2+2?", "Sky?", "Sea?"]))
    recipe = {
        "trainer": "rloo",
        "model": {"path": causal_dir},
        "reward": {"source": classifier_dir, "name": "rm", "normalize": "zscore"},
        "dataset": {"path": "prompts.jsonl"},
        "training": {
            "output_dir": str(tmp_path / "out"), "use_cpu": True, "bf16": False, "max_steps": 2,
            "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 6,
            "logging_steps": 1, "report_to": "none", "save_strategy": "no",
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert cli_main(["train", str(path)]) == 0
    history = json.loads((tmp_path / "out" / "log_history.json").read_text())
    assert sum("rewards/rm/mean" in entry for entry in history) == 2
    png = (tmp_path / "out" / "reward.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.multiprocess
def test_accelerate_launch_with_the_shipped_ddp_config_runs_a_recipe(tmp_path, causal_dir, classifier_dir):
    """`accelerate launch --config_file configs/accelerate/ddp.yaml -m rewardbridge.cli train` in 2 CPU processes."""
    import os
    import subprocess
    import sys

    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps({"prompt": q}) for q in ["Hi?", "2+2?", "Sky?", "Sea?"]))
    recipe = {
        "trainer": "grpo",
        "model": {"path": causal_dir},
        "reward": {"source": classifier_dir, "name": "rm", "normalize": "zscore", "device": "cpu"},
        "dataset": {"path": "prompts.jsonl"},
        "training": {
            # 3 per process x 2 processes: one prompt's 2 generations land on different ranks.
            "output_dir": str(tmp_path / "out"), "use_cpu": True, "bf16": False, "max_steps": 2,
            "per_device_train_batch_size": 3, "num_generations": 2, "max_completion_length": 6,
            "logging_steps": 1, "report_to": "none", "save_strategy": "no",
        },
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    repo = Path(__file__).parent.parent
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(repo / "configs/accelerate/ddp.yaml"),
               "--num_processes", "2", "--mixed_precision", "no", "-m", "rewardbridge.cli", "train", str(tmp_path / "recipe.yaml")]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=repo,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-5000:]
    history = json.loads((tmp_path / "out" / "log_history.json").read_text())
    steps = [entry for entry in history if "rm/normalized_mean" in entry]
    assert len(steps) == 2
    for entry in steps:
        assert entry["rm/normalized_mean"] == pytest.approx(0.0, abs=1e-5)  # zscore over whole groups: mean 0
