"""Remote scoring cost: the same 64 conversations in-process vs through `rewardbridge serve`.

1. Batched traffic (the rewardbridge protocol, 64 conversations per request): throughput
   through the server over in-process throughput, same model, same machine (target >= 0.8).
2. NIM-style traffic (one conversation per request, 32 in flight): the server with dynamic
   batching on (--max-batch-size 64 --max-wait-ms 5) vs off (--max-batch-size 1).

Servers run as subprocesses on 127.0.0.1 and share this machine's cores with the client.
Prints conversations/s, the ratios, and the largest score difference from in-process.

    python benchmarks/remote.py            # or: make bench
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

import torch



def build_reward(workdir: str, hidden: int, layers: int) -> str:
    from transformers import LlamaForSequenceClassification

    from rewardbridge.testing import build_tokenizer, llama_config, save_model

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = llama_config(
        tokenizer, hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
        num_attention_heads=max(hidden // 64, 1), num_key_value_heads=max(hidden // 128, 1), num_labels=1,
    )
    return save_model(f"{workdir}/reward", LlamaForSequenceClassification(config), tokenizer)


def start(source: str, *flags: str):
    import httpx

    with socket.socket() as s:  # a free port on 127.0.0.1
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "rewardbridge.cli", "serve", source, "--port", str(port), *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={k: v for k, v in os.environ.items() if k != "REWARDBRIDGE_API_KEY"},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not become ready")


def throughput(reward, prompts, completions, repeats: int) -> tuple[float, list]:
    """Conversations per second over ``repeats`` calls (after one warm-up call)."""
    out = reward(prompts=prompts, completions=completions)
    began = time.perf_counter()
    for _ in range(repeats):
        reward(prompts=prompts, completions=completions)
    return repeats * len(prompts) / (time.perf_counter() - began), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from scoring import skewed_batch  # benchmarks/scoring.py: rollout-like lengths

    from rewardbridge import load_reward

    num_prompts = max(args.conversations // 8, 1)
    prompts, completions = skewed_batch(num_prompts, args.conversations // num_prompts, long_fraction=0.125)
    with tempfile.TemporaryDirectory() as workdir:
        source = build_reward(workdir, args.hidden, args.layers)
        local = load_reward(source)
        local_rate, reference = throughput(local, prompts, completions, args.repeats)

        rows = [("in-process", local_rate, 0.0)]
        for label, flags, protocol, concurrency in [
            ("server, 64 per request (rewardbridge)", ("--max-batch-size", "64", "--max-wait-ms", "5"), "rewardbridge", 1),
            ("server, 1 per request x32 (nim), batching on", ("--max-batch-size", "64", "--max-wait-ms", "5"), "nim", 32),
            ("server, 1 per request x32 (nim), batching off", ("--max-batch-size", "1", "--max-wait-ms", "0"), "nim", 32),
        ]:
            process, url = start(source, *flags)
            try:
                remote = load_reward(url, protocol=protocol, max_concurrency=concurrency, request_batch_size=64)
                rate, out = throughput(remote, prompts, completions, args.repeats)
            finally:
                process.terminate()
                process.wait()
            diff = max(abs(a - b) for a, b in zip(out, reference))
            rows.append((label, rate, diff))

    print(f"{args.conversations} conversations, reward model hidden={args.hidden} layers={args.layers}, "
          f"torch threads={torch.get_num_threads()}, {args.repeats} repeats")
    print(f"{'path':<48} {'conv/s':>8} {'max |diff|':>11}")
    for label, rate, diff in rows:
        print(f"{label:<48} {rate:8.1f} {diff:11.2e}")
    print(f"server (batched requests) / in-process throughput: {rows[1][1] / rows[0][1]:.2f}x")
    print(f"NIM-style traffic, dynamic batching on / off:      {rows[2][1] / rows[3][1]:.2f}x")


if __name__ == "__main__":
    main()
