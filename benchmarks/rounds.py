"""Interleaved rounds for the benchmarks: A, B, C, A, B, C, ... and the median of each.

The machines these run on are shared, so a slow patch of seconds must hit every contender
alike: each round runs every contender once, in turn, and the figures are medians over
rounds. ``free_port`` and ``wait_until_up`` start the subprocess servers the benchmarks use.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from typing import Callable


def interleaved(contenders: dict[str, Callable[[], dict[str, float]]], rounds: int) -> dict[str, dict[str, float]]:
    """Run each contender once per round, in turn; per contender, the median of each figure it
    returns, and its minimum as ``<figure>_min`` (the least disturbed round).

    >>> interleaved({"a": lambda: {"s": 1.0}, "b": lambda: {"s": 2.0}}, rounds=3)
    {'a': {'s': 1.0, 's_min': 1.0}, 'b': {'s': 2.0, 's_min': 2.0}}
    """
    seen: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            seen[name].append(run())
    out = {}
    for name, results in seen.items():
        out[name] = {}
        for key in results[0]:
            out[name][key] = statistics.median(r[key] for r in results)
            out[name][f"{key}_min"] = min(r[key] for r in results)
    return out


def timed(fn: Callable[[], object]) -> dict[str, float]:
    """Wall seconds and this process's CPU seconds (every thread) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(port: int, process, timeout_s: float = 300.0, path: str = "/ready") -> None:
    """Poll ``path`` until it answers 200 (the server subprocess must stay alive)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the server on port {port} did not come up in {timeout_s:.0f} s")


def machine_line() -> str:
    """What else was running: the load average when the benchmark started."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start"
