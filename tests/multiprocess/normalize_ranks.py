"""Run under `torchrun --nproc_per_node 2`: per-prompt normalization across ranks.

Part 1: rank-local (key, score) rows with uneven sizes and a group split across ranks,
normalized by normalize_across_ranks. Part 2: the same through a real RewardFunction on a
tiny classifier. Each rank writes its results to OUT_DIR/rank<r>.json.
"""

import json
import os
import sys

import torch
import torch.distributed as dist

from rewardbridge import load_reward
from rewardbridge.normalize import normalize_across_ranks

model_dir, out_dir = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")
rank = dist.get_rank()

# Group "b" spans both ranks; rank 0 has 3 rows, rank 1 has 5 (uneven local sizes).
local = {
    0: (["a", "a", "b"], [1.0, 3.0, 2.0]),
    1: (["b", "b", "c", "c", "d"], [4.0, float("nan"), 5.0, 5.0, 7.0]),
}[rank]
results = {}
for mode in ("center", "zscore", "rank"):
    out = normalize_across_ranks(local[0], torch.tensor(local[1]), mode)
    results[mode] = {"values": out.values.tolist(), "groups": out.num_groups, "zero_spread": out.num_zero_spread}

questions = ["What is the capital of France?", "Tell me a joke.", "How many legs does a spider have?"]
answers = ["Paris.", "No.", "Eight legs, like every spider.", "Why did the model cross the road?", "Eight.", "Six?"]
# Prompt 1 is split: two answers on rank 0, one on rank 1.
prompts = {0: [questions[0], questions[0], questions[1]], 1: [questions[1], questions[2], questions[2]]}[rank]
completions = {0: answers[:3], 1: answers[3:]}[rank]
reward = load_reward(model_dir, normalize="zscore", device="cpu")
results["reward_fn"] = {"prompts": prompts, "completions": completions, "rewards": reward(prompts=prompts, completions=completions)}
results["local"] = {"keys": local[0], "scores": local[1]}

with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump(results, f)
# Both ranks done before either leaves: a gloo peer that exits first can abort the other at exit
# ("terminate called without an active exception", seen under a loaded machine).
dist.barrier()
dist.destroy_process_group()
