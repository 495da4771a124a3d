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


def test_public_names_still_load_on_use():
    import rewardbridge

    assert set(rewardbridge.__all__) <= set(dir(rewardbridge))
    assert callable(rewardbridge.load_reward) and rewardbridge.Scores.__name__ == "Scores"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rewardbridge.nope  # noqa: B018
