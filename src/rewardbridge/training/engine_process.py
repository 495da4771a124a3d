"""An inference server started for one iteration's sampling (``pairs.engine_command``), stopped after.

Each iteration samples from a new checkpoint, which a long-running vLLM cannot know about; so
the runner starts ``engine_command`` with ``{policy}`` filled in, waits until ``GET
<engine>/v1/models`` lists a model (vLLM serves a model under the path it was given), and
stops the server (SIGTERM, then SIGKILL) when the pairs are written. Its output goes to
``iter-k/engine.log``.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

from ..errors import ConfigError, RemoteError


class EngineProcess:
    """``with EngineProcess(spec, policy, log) as name:``; ``name`` is the served model (None without a command)."""

    def __init__(self, spec, policy: str, log: Path):
        self.spec, self.policy, self.log = spec, policy, log
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> str | None:
        if self.spec.engine_command is None:
            return None
        import httpx

        command = shlex.split(self.spec.engine_command.replace("{policy}", shlex.quote(self.policy)))
        log = open(self.log, "a", encoding="utf-8")
        try:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        except OSError as error:
            raise ConfigError(f"pairs.engine_command {command[0]!r} could not start ({error})") from None
        url = self.spec.engine.rstrip("/").removesuffix("/v1") + "/v1/models"
        deadline = time.monotonic() + self.spec.engine_start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RemoteError(f"pairs.engine_command exited with {self.process.returncode} before serving; "
                                  f"see {self.log}: {self.log.read_text()[-1500:]}")
            try:
                answer = httpx.get(url, timeout=5)
                models = [m.get("id") for m in answer.json().get("data", [])] if answer.status_code == 200 else []
                if models:
                    return self.policy if self.policy in models else models[0]
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RemoteError(f"pairs.engine_command did not serve {url} within engine_start_timeout="
                          f"{self.spec.engine_start_timeout:g} s; see {self.log}")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
