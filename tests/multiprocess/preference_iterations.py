"""Run under `torchrun --nproc_per_node 2`: a 2-iteration RPO recipe in 2 real processes (DDP, gloo).

Rank 0 samples and scores each iteration's pairs; rank 1 waits for them; both train on them
and go on from the policy rank 0 saved. Each rank writes what it trained on and its final
weights' sum to OUT_DIR/rank<r>.json.
"""

import json
import os
import sys

from rewardbridge.training import iterations
from rewardbridge.training.recipe import load_recipe

recipe_path, out_dir = sys.argv[1], sys.argv[2]
rank = int(os.environ["RANK"])
seen = []
original = iterations.build_preference_trainer


def capture(recipe, model, tokenizer, dataset, output_dir, **kwargs):
    trainer = original(recipe, model, tokenizer, dataset, output_dir, **kwargs)
    seen.append({"iteration": output_dir.parent.name, "pairs": sorted(dataset["chosen_reward"]),
                 "start": model.config._name_or_path, "world": trainer.accelerator.num_processes})
    return trainer


iterations.build_preference_trainer = capture
iterations.run_preference(load_recipe(recipe_path))
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump(seen, f)

from rewardbridge.cli import leave_process_group  # noqa: E402

leave_process_group()  # as `rewardbridge train` ends: both ranks meet, then close the group
