"""`rewardbridge serve` as a real subprocess on 127.0.0.1, for any test that needs a live server."""

import os
import subprocess
import sys
import time

import httpx

from servers.faulty import free_port


def start_server(source, *args, port=None, env=None, log=None, launcher=("-m",)):
    """Start `rewardbridge serve` and wait for /ready; its output goes to ``log`` (a temp file by default)."""
    import tempfile

    port = port or free_port()
    own_log = log is None
    log = log or tempfile.NamedTemporaryFile("w+", prefix="rewardbridge-serve-", suffix=".log", delete=False)
    command = [sys.executable, *launcher, "rewardbridge.cli", "serve", source, "--port", str(port), *args]
    inherited = {k: v for k, v in os.environ.items() if k != "REWARDBRIDGE_API_KEY"}  # a key only when asked
    full_env = {**inherited, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    process = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    process.own_log = log.name if own_log else None  # removed by stop()
    url = f"http://127.0.0.1:{port}"
    key = (env or {}).get("REWARDBRIDGE_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = time.monotonic() + 180  # generous: CI machines are shared
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited with {process.returncode}: {open(log.name).read()[-3000:]}"
        try:
            if httpx.get(url + "/ready", headers=headers, timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise TimeoutError(f"server not ready in 180 s: {open(log.name).read()[-3000:]}")


def stop(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    if getattr(process, "own_log", None) and os.path.exists(process.own_log):
        os.unlink(process.own_log)
