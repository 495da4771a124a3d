"""An inference server started for one iteration's sampling (``pairs.engine_command``), stopped after.

Each iteration samples from a new checkpoint, which a long-running vLLM cannot know about; so
the runner starts ``engine_command`` with ``{policy}`` filled in, waits until ``GET
<engine>/v1/models`` lists this policy, and stops the server when the pairs are written. Its
output goes to ``iter-k/engine.log``.

The samples must come from this iteration's policy and from nothing else, so:

- a port that already answers before the command starts is refused (a vLLM left behind by a
  SIGKILL of an earlier run would otherwise be sampled from, silently);
- the served model must be the policy (vLLM names a model by the path it was given) or
  ``pairs.engine_model`` (its ``--served-model-name``), never whatever the server lists first;
- the command must still be running once the port answers (else something else answers there);
- the command starts in its own session, without torchrun's variables (RANK, WORLD_SIZE,
  MASTER_ADDR, ...: vLLM would try to join the trainer's process group), and its whole process
  group is stopped (SIGTERM, then SIGKILL): vLLM's worker processes go with it.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ConfigError, RemoteError

# torchrun's (and torch.distributed's) launcher variables: a child that sees them acts as a rank.
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
                      "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")
LAUNCHER_PREFIXES = ("TORCHELASTIC_",)
STOP_TIMEOUT_S = 60.0


class EngineProcess:
    """``with EngineProcess(spec, policy, log) as name:``; ``name`` is the served model (None without a command)."""

    def __init__(self, spec, policy: str, log: Path):
        self.spec, self.policy, self.log = spec, policy, log
        self.process: subprocess.Popen | None = None
        self._log_file = None

    def __enter__(self) -> str | None:
        if self.spec.engine_command is None:
            return None
        base = self.spec.engine.rstrip("/").removesuffix("/v1")
        host, port = _host_port(base)
        if _answers(host, port):
            raise ConfigError(f"{host}:{port} already answers before pairs.engine_command started: the pairs would come from "
                              f"that server, not from {self.policy}. A server left from an earlier run (after a kill)? Stop it "
                              f"(`ss -ltnp` names the process on port {port}), or move pairs.engine and engine_command to a free port")
        command = shlex.split(self.spec.engine_command.replace("{policy}", shlex.quote(self.policy)))
        self._log_file = open(self.log, "a", encoding="utf-8")
        try:
            self.process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT, env=engine_environment(),
                                            start_new_session=True)  # its own process group: stopped whole
        except OSError as error:
            self._log_file.close()
            raise ConfigError(f"pairs.engine_command {command[0]!r} could not start ({error})") from None
        try:
            return self._wait_until_served(base + "/v1/models")
        except BaseException:
            self._stop()
            raise

    def __exit__(self, *exc) -> None:
        self._stop()

    def _wait_until_served(self, url: str) -> str:
        import httpx

        wanted = [name for name in (self.policy, self.spec.engine_model) if name]
        deadline = time.monotonic() + self.spec.engine_start_timeout
        while time.monotonic() < deadline:
            served = None
            try:
                answer = httpx.get(url, timeout=5)
                if answer.status_code == 200:
                    served = [m.get("id") for m in answer.json().get("data", []) if isinstance(m, dict)]
            except (httpx.HTTPError, ValueError, AttributeError):
                pass
            code = self.process.poll()  # after the answer: a port that answers for a dead command is not ours
            if code is not None:
                raise RemoteError(f"pairs.engine_command exited with {code} {'though' if served else 'before'} {url} "
                                  f"answered{'; something else serves there' if served else ''}; see {self.log}: "
                                  f"{self.log.read_text()[-1500:]}")
            if served:
                name = next((n for n in wanted if n in served), None)
                if name is None:
                    raise ConfigError(f"{url} serves {served}, not {' or '.join(repr(n) for n in wanted)}: the samples must come "
                                      "from this iteration's policy. Serve it under its path (vllm serve {policy}), or set "
                                      "pairs.engine_model to the name engine_command serves it under (--served-model-name)")
                return name
            time.sleep(0.5)
        raise RemoteError(f"pairs.engine_command did not serve {url} within engine_start_timeout="
                          f"{self.spec.engine_start_timeout:g} s; see {self.log}")

    def _stop(self) -> None:
        """SIGTERM to the command's process group, SIGKILL after STOP_TIMEOUT_S, and to whatever of it is left."""
        process, self.process = self.process, None
        if process is not None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(process.pid, signal.SIGKILL)  # workers that outlived the command (or a command that hung)
            process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def engine_environment() -> dict[str, str]:
    """This process's environment without the launcher's variables (the engine is not one of the trainer's ranks)."""
    return {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES and not k.startswith(LAUNCHER_PREFIXES)}


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already
