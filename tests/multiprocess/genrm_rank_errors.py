"""Run under `torchrun --nproc_per_node 2`: a pairwise judge (protocol="genrm") whose input is
wrong on one rank only, then a group split across the ranks with group_size.

1. Rank 1 passes a completion that is a lone message dict (TRL never sends one): both ranks
   must raise that InputError, naming rank 1 (not wait, not a "connection closed" error).
2. api_key_env names a variable set on rank 0 only: both ranks raise, naming rank 1.
3. A good call after them: 8 rows of one prompt split 3 | 5, group_size=4, normalize="center"
   (the ranks are still in step, and the blocks span them).
Each rank writes OUT_DIR/rank<r>.json; the test checks both.
"""

import json
import os
import sys

import torch.distributed as dist

from rewardbridge import load_reward

url, out_dir = sys.argv[1:3]
dist.init_process_group("gloo")
rank = dist.get_rank()
results = {}


def outcome(call):
    try:
        return f"returned {call()}"
    except Exception as error:  # noqa: BLE001: the test reads what each rank raised
        return f"{type(error).__name__}: {error}"


reward = load_reward(url, protocol="genrm", name="g", timeout=30)
completions = ["a", "b c"] if rank == 0 else [{"role": "assistant", "content": "c"}, "d e"]
results["bad_completion"] = outcome(lambda: reward(prompts=["Q", "Q"], completions=completions))

if rank == 0:
    os.environ["JUDGE_KEY"] = "secret"
else:
    os.environ.pop("JUDGE_KEY", None)
keyed = load_reward(url, protocol="genrm", api_key_env="JUDGE_KEY", timeout=30)
results["missing_key"] = outcome(lambda: keyed(prompts=["Q", "Q"], completions=["a", "b c"]))

split = load_reward(url, protocol="genrm", group_size=4, normalize="center", timeout=30)
eight = ["a", "b c", "d e f", "g h i j", "k", "l m", "n o p", "q r s t"]
local = eight[:3] if rank == 0 else eight[3:]
results["split"] = split(prompts=["Q"] * len(local), completions=local)

with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump(results, f)
# Both ranks done before either leaves: a gloo peer that exits first can abort the other at exit
# ("terminate called without an active exception", seen under a loaded machine).
dist.barrier()
dist.destroy_process_group()
