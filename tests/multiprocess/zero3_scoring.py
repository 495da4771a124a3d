"""Run under `torchrun --nproc_per_node 2`: a ZeRO-3-sharded reward model scores like the whole one.

Each rank scores an uneven local slice (rank 0: five conversations in several micro-batches,
rank 1: one), then a call where rank 1 has none: lockstep must keep both ranks' collective
forwards matched. Done with parameters on the compute device and offloaded to CPU.
Writes OUT_DIR/rank<r>.json.
"""

import copy
import json
import os
import sys

import torch.distributed as dist

from rewardbridge import load_reward
from rewardbridge.scorers.zero3 import DEFAULT_CONFIG, partitioned_param_bytes

model_dir, out_dir = sys.argv[1], sys.argv[2]
prompts = ["What is the capital of France?"] * 3 + ["Tell me a joke."] * 3
completions = ["Paris.", "It is Paris, on the Seine, " * 6, "Lyon?", "No.", "Why did the model cross the road? " * 3, "Ha"]

# The whole model, loaded before any ZeRO-3 config exists: the reference scores.
whole = load_reward(model_dir, device="cpu", max_tokens_per_batch=64)
expected = whole(prompts=prompts, completions=completions)
whole_bytes = partitioned_param_bytes(whole.scorer.model)

offload = copy.deepcopy(DEFAULT_CONFIG)
offload["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": False}
rank = int(os.environ["RANK"])
mine = slice(0, 5) if rank == 0 else slice(5, 6)
results = {"expected": expected, "whole_bytes": whole_bytes}
for label, zero3 in (("sharded", True), ("offload_cpu", offload)):
    sharded = load_reward(model_dir, device="cpu", zero3=zero3, max_tokens_per_batch=64)
    got = sharded(prompts=prompts[mine], completions=completions[mine])
    # Rank 1 has nothing to score this time; rank 0 still needs it in every forward.
    empty = sharded(prompts=prompts[:2] if rank == 0 else [], completions=completions[:2] if rank == 0 else [])
    results[label] = {"scores": got, "second_call": empty, "held_bytes": partitioned_param_bytes(sharded.scorer.model)}

with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump(results, f)
dist.barrier()
