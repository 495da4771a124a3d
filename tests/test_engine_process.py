"""The engine the recipe runner starts for each iteration (training/engine_process.py): never a
server that was there before it, only one that serves this iteration's policy, started without
torchrun's variables, and stopped with everything it started."""

import json
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from rewardbridge.errors import ConfigError, RemoteError
from rewardbridge.training.engine_process import EngineProcess
from servers.faulty import free_port
from servers.generation import GenerationServer

GENERATION_SERVER = Path(__file__).parent / "servers" / "generation.py"


def spec(port, command, engine_model=None):
    return SimpleNamespace(engine=f"http://127.0.0.1:{port}/v1", engine_command=command, engine_model=engine_model,
                           engine_start_timeout=60)


def serving(port, model="{policy}", *extra):
    return f"{sys.executable} {GENERATION_SERVER} --model {model} --port {port} {' '.join(extra)}"


def closed(port, within=10.0) -> bool:
    """Nothing answers on the port (waiting a little: a killed process's socket closes as it exits)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return True
        time.sleep(0.1)
    return False


def test_a_server_already_on_the_port_is_refused_before_the_command_starts(tmp_path):
    leftover = GenerationServer(model="/old/iter-1/policy").start()  # a vLLM left by a killed run
    marker = tmp_path / "started"
    try:
        with pytest.raises(ConfigError, match=rf"127.0.0.1:{leftover.port} already answers before pairs.engine_command started"):
            with EngineProcess(spec(leftover.port, f"touch {marker} {{policy}}"), "/new/iter-2/policy", tmp_path / "engine.log"):
                pass
    finally:
        leftover.stop()
    assert not marker.exists()  # the command never ran


@pytest.mark.parametrize("served, engine_model, expected", [
    ("{policy}", None, "POLICY"),  # vLLM names a model by the path it was given
    ("my-policy", "my-policy", "my-policy"),  # --served-model-name, said in pairs.engine_model
    ("other-model", None, None),  # no falling back to whatever the server lists
    ("other-model", "my-policy", None),
])
def test_only_a_server_of_this_policy_is_sampled_from(served, engine_model, expected, tmp_path):
    port, policy = free_port(), str(tmp_path / "iter-1" / "policy")
    engine = EngineProcess(spec(port, serving(port, served), engine_model), policy, tmp_path / "engine.log")
    if expected is None:
        with pytest.raises(ConfigError, match=r"serves \['other-model'\], not '.*policy'"):
            engine.__enter__()
    else:
        with engine as name:
            assert name == (policy if expected == "POLICY" else expected)
    assert closed(port)  # stopped, refused or not


def test_a_command_that_exits_is_refused_and_what_it_left_running_is_stopped(tmp_path):
    port = free_port()
    forks = tmp_path / "forks.py"  # starts the server as its own child, then exits: the port answers for a dead command
    forks.write_text(f"import subprocess, sys\nsubprocess.Popen([sys.executable, {str(GENERATION_SERVER)!r}, '--model', sys.argv[1], "
                     f"'--port', '{port}'])\n")
    with pytest.raises(RemoteError, match=r"pairs.engine_command exited with 0"):
        with EngineProcess(spec(port, f"{sys.executable} {forks} {{policy}}"), "/p", tmp_path / "engine.log"):
            pass
    assert closed(port)  # the server it left was in its process group, and was stopped with it


def test_the_engine_starts_without_torchruns_variables(tmp_path, monkeypatch):
    launcher = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": "29500", "GROUP_RANK": "0", "TORCHELASTIC_RUN_ID": "none"}
    for name, value in {**launcher, "REWARDBRIDGE_KEEP_ME": "1"}.items():
        monkeypatch.setenv(name, value)
    port, dump = free_port(), tmp_path / "env.json"
    with EngineProcess(spec(port, serving(port, "{policy}", "--dump-env", str(dump))), "/p", tmp_path / "engine.log") as name:
        assert name == "/p"
    env = json.loads(dump.read_text())
    assert env["REWARDBRIDGE_KEEP_ME"] == "1" and not set(launcher) & set(env)
    assert closed(port)
