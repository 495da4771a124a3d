"""ZeRO-3 reward models: sharded like the issue says, scoring like the whole model, beside any trainer."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import torchrun
from rewardbridge.scorers.zero3 import DEFAULT_CONFIG, resolve_config

CONFIGS = Path(__file__).parent.parent / "configs"


def test_shipped_inference_config_is_the_default_and_nested():
    assert json.loads((CONFIGS / "deepspeed" / "zero3_inference.json").read_text()) == DEFAULT_CONFIG
    for path in (CONFIGS / "deepspeed").glob("*.json"):
        config = json.loads(path.read_text())
        assert not [k for k in config if "." in k], f"{path.name}: DeepSpeed ignores dotted top-level keys"
        if path.stem.startswith("zero3_offload") or path.stem == "zero3_inference":
            # Partition every tensor: the DeepSpeed default keeps small ones whole on every rank.
            assert config["zero_optimization"]["stage3_param_persistence_threshold"] in (0, "auto")


@pytest.mark.parametrize("path", sorted((CONFIGS / "accelerate").glob("*.yaml")), ids=lambda p: p.stem)
def test_accelerate_configs_load_and_name_existing_deepspeed_files(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    ds_file = (config.deepspeed_config or {}).get("deepspeed_config_file")
    if ds_file:
        assert (CONFIGS.parent / ds_file).exists()


@pytest.mark.parametrize(
    "zero3, message",
    [
        ({"zero_optimization": {"stage": 2}}, "needs stage 3"),
        ({"zero_optimization": {"stage": 3}, "zero_optimization.stage3_param_persistence_threshold": 0}, "dotted"),
        ("/no/such/config.json", "no such DeepSpeed config file"),
    ],
)
def test_bad_zero3_configs_are_refused(zero3, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        resolve_config(zero3, torch.float32)


def test_precision_follows_the_reward_dtype():
    assert resolve_config(True, torch.bfloat16)["bf16"] == {"enabled": True}
    assert resolve_config(str(CONFIGS / "deepspeed" / "zero3_offload_cpu.json"), torch.float32)["fp16"] == {"enabled": False}


def test_single_process_zero3_scores_like_the_whole_model(classifier_dir):
    # A fresh interpreter: ZeRO-3 starts a process group, which must not leak into other tests.
    code = (
        "import sys, json; from rewardbridge import load_reward\n"
        "p, c = ['Hi?', 'Hi?', 'Sea?'], ['Hello!', 'Go away. ' * 9, 'Blue.']\n"
        f"a = load_reward({classifier_dir!r}, device='cpu')(prompts=p, completions=c)\n"
        f"b = load_reward({classifier_dir!r}, device='cpu', zero3=True)(prompts=p, completions=c)\n"
        "print(json.dumps([a, b]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    whole, sharded = json.loads(out.stdout.strip().splitlines()[-1])
    assert sharded == pytest.approx(whole, abs=1e-5)


@pytest.mark.multiprocess
def test_two_ranks_each_hold_half_and_score_like_the_whole_model(classifier_dir, tmp_path):
    torchrun("zero3_scoring.py", classifier_dir, str(tmp_path))  # also: uneven and empty local batches, no hang
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    expected = ranks[0]["expected"]
    for label in ("sharded", "offload_cpu"):
        # Rank 0 scored conversations 0-4, rank 1 conversation 5.
        assert ranks[0][label]["scores"] + ranks[1][label]["scores"] == pytest.approx(expected, abs=1e-5)
        assert ranks[0][label]["second_call"] == pytest.approx(expected[:2], abs=1e-5)
        assert ranks[1][label]["second_call"] == []
        for rank in ranks:
            # Each rank holds its partition of every tensor: about half the parameter bytes.
            assert rank[label]["held_bytes"] / rank["whole_bytes"] == pytest.approx(0.5, abs=0.02)


@pytest.mark.multiprocess
@pytest.mark.parametrize("policy", ["single", "ddp", "zero2", "zero3"])
def test_grpo_and_rloo_train_with_a_zero3_reward(policy, causal_dir, classifier_dir, tmp_path):
    args = (causal_dir, classifier_dir, str(tmp_path), policy)
    if policy == "single":
        script = Path(__file__).parent / "multiprocess" / "zero3_trainers.py"
        out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=420)
        assert out.returncode == 0, out.stderr[-5000:]
    else:
        torchrun("zero3_trainers.py", *args, timeout=420)
    for trainer in ("grpo", "rloo"):
        run = json.loads((tmp_path / f"{trainer}_rank0.json").read_text())
        assert run["world_size"] == (1 if policy == "single" else 2)
        assert run["policy_is_deepspeed"] == policy.startswith("zero")
        assert run["policy_zero_stage"] == {"zero2": 2, "zero3": 3}.get(policy)
        assert sum("rewards/rm/mean" in entry for entry in run["history"]) == 2
        # An unsharded reward loaded while the trainer's ZeRO-3 config is active still loads whole.
        assert run["after"] == pytest.approx(run["before"], abs=1e-6)


def test_a_checkpoint_without_its_score_head_is_refused_under_zero3_too(classifier_dir, tmp_path):
    # Without ZeRO-3 this is tests/test_bad_input.py's; serve --option zero3=true loads through the same path.
    from safetensors.torch import load_file, save_file

    headless = tmp_path / "headless"
    shutil.copytree(classifier_dir, headless)
    weights = load_file(str(headless / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("score.")}, str(headless / "model.safetensors"),
              metadata={"format": "pt"})
    # A fresh interpreter: ZeRO-3 starts a process group (gloo on CPU), which must not leak into other tests.
    code = (
        "from rewardbridge import load_reward\n"
        "from rewardbridge.errors import ConfigError\n"
        "try:\n"
        f"    r = load_reward({str(headless)!r}, device='cpu', zero3=True)\n"
        "    print('SCORED', r(prompts=['Hi?'], completions=['Hello!']))\n"
        "except ConfigError as e:\n"
        "    print('REFUSED', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # Before, under ZeRO-3: "SCORED [...]", a random head's score.
    assert "REFUSED the checkpoint has no weights for score.weight" in out.stdout, out.stdout[-2000:]
