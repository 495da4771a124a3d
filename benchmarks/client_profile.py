"""cProfile of rewardbridge's client per-request path: 64 requests of 1 conversation per call,
against ``client.py``'s stub endpoint (in its own process), both the transport's event-loop
thread and the calling thread (the top 25 by self time of each), then the garbage collections
the same calls set off without the profiler (per generation: count and milliseconds; with torch
imported a full collection walks every object it holds, and what a request keeps alive while
in flight decides how often one comes).

    python benchmarks/client_profile.py [CALLS]   # 100 calls by default, a few seconds
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import subprocess
import sys
import time
from pathlib import Path

from rounds import free_port, wait_until_up


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    port = free_port()
    stub = subprocess.Popen([sys.executable, str(Path(__file__).parent / "client.py"), "--serve", str(port)])
    try:
        wait_until_up(port, stub)
        from rewardbridge import load_reward
        from rewardbridge.scorers.event_loop import EventLoopThread

        reward = load_reward(f"http://127.0.0.1:{port}", protocol="rewardbridge", request_batch_size=1, max_concurrency=64)
        prompts, completions = [f"q{i}" for i in range(64)], [f"a{i}" for i in range(64)]
        for _ in range(20):  # warm-up: connections open, imports done
            reward(prompts=prompts, completions=completions)
        loop = EventLoopThread.loop()
        on_loop, caller = cProfile.Profile(), cProfile.Profile()
        loop.call_soon_threadsafe(on_loop.enable)  # a profiler sees only the thread that enabled it
        time.sleep(0.1)
        caller.enable()
        began = time.perf_counter()
        for _ in range(calls):
            reward(prompts=prompts, completions=completions)
        spent = time.perf_counter() - began
        caller.disable()
        loop.call_soon_threadsafe(on_loop.disable)
        time.sleep(0.1)
        print(f"{calls * 64 / spent:.0f} requests/s under the profiler")
        for name, profile in (("event-loop thread", on_loop), ("calling thread", caller)):
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
            print(f"===== {name}\n{out.getvalue()}")
        collections = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
        started = [0.0]

        def count(phase, info):
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                collections[info["generation"]][0] += 1
                collections[info["generation"]][1] += (time.perf_counter() - started[0]) * 1000

        gc.callbacks.append(count)
        cpu = time.process_time()
        for _ in range(calls):
            reward(prompts=prompts, completions=completions)
        cpu = time.process_time() - cpu
        gc.callbacks.remove(count)
        spent = sum(ms for _, ms in collections.values())
        print(f"without the profiler: {cpu * 1e6 / (calls * 64):.1f} us CPU per request, of which {spent * 1e3 / (calls * 64):.1f} in "
              f"garbage collection: " + ", ".join(f"gen{g} {n} ({ms:.0f} ms)" for g, (n, ms) in collections.items())
              + f", over {len(gc.get_objects())} tracked objects")
    finally:
        stub.terminate()


if __name__ == "__main__":
    main()
