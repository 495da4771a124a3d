"""ZeRO-3 reward model: parameter bytes held per rank and scoring time, N = 1 and N = 2.

One run launches ``torchrun`` with 1 and then 2 processes. Each rank loads the same reward
model (a Llama sequence classifier built from a config) three ways: whole, ZeRO-3, ZeRO-3
with parameters offloaded to CPU. It scores its share of one batch with each and reports
the parameter bytes it holds (its ZeRO-3 partitions, measured from the partitioned
tensors) and the median scoring time.

    python benchmarks/zero3_memory.py            # or: make bench

On a CPU-only machine the "device" is the CPU, so offload moves bytes from one part of host
memory to another: the offload row shows the cost of the extra copies, not a saving.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def worker(model_dir: str, out_dir: str, repeats: int, device: str) -> None:
    import torch
    import torch.distributed as dist

    from rewardbridge import load_reward
    from rewardbridge.scorers.zero3 import DEFAULT_CONFIG, partitioned_param_bytes

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    questions = [f"Question {i}: explain gradient descent in plain words." for i in range(8)]
    answers = ["It moves parameters against the gradient of the loss. " * (1 + i % 4) for i in range(4)]
    prompts = [q for q in questions for _ in answers]
    completions = [a for _ in questions for a in answers]
    share = slice(rank * len(prompts) // world, (rank + 1) * len(prompts) // world)

    offload = copy.deepcopy(DEFAULT_CONFIG)
    offload["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": False}
    rows = {}
    for label, zero3 in (("whole", False), ("zero3", True), ("zero3 + CPU offload", offload)):
        on_gpu = torch.cuda.is_available() and device != "cpu"
        if on_gpu:
            torch.cuda.synchronize()
            gpu_before = torch.cuda.memory_allocated()
        reward = load_reward(model_dir, device=device, zero3=zero3)
        gpu_bytes = torch.cuda.memory_allocated() - gpu_before if on_gpu else None
        run = functools.partial(reward, prompts=prompts[share], completions=completions[share])
        run()  # warm-up
        times = []
        for _ in range(repeats):
            if dist.is_initialized():
                dist.barrier()
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        rows[label] = {"bytes": partitioned_param_bytes(reward.scorer.model), "seconds": statistics.median(times),
                       "gpu_bytes": gpu_bytes}
        del reward
    with open(os.path.join(out_dir, f"n{world}_rank{rank}.json"), "w") as f:
        json.dump(rows, f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="'auto' (this rank's GPU if any), 'cpu', 'cuda'")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL_DIR", "OUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.repeats, args.device)
        return

    import torch
    from transformers import LlamaForSequenceClassification

    from rewardbridge.testing import build_tokenizer, llama_config, save_model

    workdir = tempfile.mkdtemp()
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = llama_config(tokenizer, hidden_size=args.hidden, intermediate_size=args.hidden * 11 // 4,
                          num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                          num_key_value_heads=args.hidden // 128, num_labels=1)
    model = LlamaForSequenceClassification(config)
    params = sum(p.numel() for p in model.parameters())
    model_dir = save_model(f"{workdir}/reward", model, tokenizer)

    for n in (1, 2):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
                   __file__, "--worker", model_dir, workdir, "--repeats", str(args.repeats), "--device", args.device]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // n))}
        subprocess.run(command, check=True, capture_output=True, env=env)

    whole_bytes = params * 4
    print(f"reward model: {params / 1e6:.1f}M parameters, {whole_bytes / 2**20:.1f} MiB in float32; "
          f"32 conversations split evenly across ranks")
    print(f"{'ranks':>5}  {'mode':<20}{'MiB held per rank':>18}{'share':>8}{'scoring s':>11}{'vs whole':>10}{'GPU MiB':>9}")
    for n in (1, 2):
        ranks = [json.load(open(f"{workdir}/n{n}_rank{r}.json")) for r in range(n)]
        whole_time = max(r["whole"]["seconds"] for r in ranks)
        for label in ranks[0]:
            held = max(r[label]["bytes"] for r in ranks)
            seconds = max(r[label]["seconds"] for r in ranks)  # the slowest rank sets the step time
            gpu = ranks[0][label]["gpu_bytes"]
            gpu_text = f"{gpu / 2**20:>9.1f}" if gpu is not None else f"{'-':>9}"
            print(f"{n:>5}  {label:<20}{held / 2**20:>18.1f}{held / whole_bytes:>8.0%}{seconds:>11.3f}"
                  f"{seconds / whole_time:>9.2f}x{gpu_text}")


if __name__ == "__main__":
    main()
