"""What loads when (issue 18): ``import rewardbridge``, ``rewardbridge --help``, ``rewardbridge
inspect URL`` and building a remote reward import no torch, transformers or TRL; each case
runs in a fresh interpreter, which then prints the heavy modules it holds."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "trl", "deepspeed")
PROBE = "import sys, json; {code}; print('\\nHEAVY=' + json.dumps([m for m in {heavy!r} if m in sys.modules]))"


@pytest.mark.parametrize("code", [
    "import rewardbridge",
    "from rewardbridge.cli import main; main(['--help'])",
    "from rewardbridge.cli import main; main(['inspect', 'http://127.0.0.1:9', '--option', 'protocol=nim'])",
    *[f"from rewardbridge import load_reward; load_reward('http://127.0.0.1:9', protocol={p!r})"
      for p in ("rewardbridge", "nim", "vllm", "openrlhf", "triton", "genrm")],
    "from rewardbridge import load_reward; load_reward('http://127.0.0.1:9', protocol='principle', principle='correctness')",
    "from rewardbridge.scorers.transport import Transport; from rewardbridge.protocols import protocol_module; "
    "[protocol_module(p) for p in ('nim', 'vllm', 'openrlhf', 'rewardbridge')]",
], ids=["import", "help", "inspect-url", "remote-rewardbridge", "remote-nim", "remote-vllm", "remote-openrlhf", "remote-triton",
        "remote-genrm", "remote-principle", "transport-and-codecs"])
def test_nothing_heavy_is_imported(code):
    wrapped = f"try:\n    {code}\nexcept SystemExit:\n    pass\n"  # argparse's --help exits
    probe = PROBE.format(code=f"exec({wrapped!r})", heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.rpartition("HEAVY=")[2])
    assert loaded == [], f"{code!r} imported {loaded}"


@pytest.mark.parametrize("recipe", ["modle: {path: x}\n", "max_steps: 2\nmodel: {path: x}\n"], ids=["typo", "misplaced-key"])
def test_a_recipe_key_mistake_is_told_without_importing_trl(recipe, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("trainer: grpo\n" + recipe)
    code = f"from rewardbridge.cli import main; main(['train', {str(path)!r}])"
    probe = PROBE.format(code=code, heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "did you mean" in result.stderr, result.stderr[-2000:]  # 'model'?, training.max_steps?
    loaded = json.loads(result.stdout.rpartition("HEAVY=")[2])
    assert loaded == [], f"a recipe key mistake imported {loaded} (issue 15 review 24: 6.8 s for a typo)"


def test_trl_config_fields_read_from_source_are_its_fields():
    import dataclasses

    from trl import GRPOConfig, RLOOConfig

    from rewardbridge.training.config_fields import config_fields

    for module, cls in [("trl.trainer.grpo_config", GRPOConfig), ("trl.trainer.rloo_config", RLOOConfig)]:
        assert config_fields(module, cls.__name__) == [f.name for f in dataclasses.fields(cls)]


def test_public_names_still_load_on_use():
    import rewardbridge

    assert set(rewardbridge.__all__) <= set(dir(rewardbridge))
    assert callable(rewardbridge.load_reward) and rewardbridge.Scores.__name__ == "Scores"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rewardbridge.nope  # noqa: B018
