"""Run under `torchrun --nproc_per_node 2`: a pairwise judge (protocol="genrm") whose groups span ranks.

Part 1: a real GRPOTrainer (per_device_train_batch_size=3, num_generations=2, so TRL itself
splits groups) against the second judge; each rank records the prompts, completions and
rewards of every call. Part 2: a direct call with uneven local sizes (3 and 5 rows) and two
prompts split across the ranks, against the first judge. Each rank writes OUT_DIR/rank<r>.json;
the test recomputes every call in one process and counts the comparisons at the servers.
"""

import json
import os
import sys

from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from rewardbridge import load_reward

policy_dir, url_direct, url_grpo, out_dir = sys.argv[1:5]
rank = int(os.environ["RANK"])
results = {}

# -- part 1: GRPO, groups split by TRL --------------------------------------------------------

class Recorder:
    """The reward as TRL sees it (same name), recording what each call got and returned."""

    def __init__(self, reward):
        self.reward, self.__name__, self.calls = reward, reward.__name__, []

    def __call__(self, prompts, completions, **kwargs):
        rewards = self.reward(prompts=prompts, completions=completions, **kwargs)
        self.calls.append({"prompts": prompts, "completions": completions, "rewards": rewards})
        return rewards


recorder = Recorder(load_reward(url_grpo, protocol="genrm", name="genrm", normalize="zscore", timeout=30))
questions = ["What is the capital of France?", "Tell me a joke.", "How many legs does a spider have?", "Explain gradient descent."]
args = GRPOConfig(
    output_dir=os.path.join(out_dir, "grpo"), use_cpu=True, bf16=False, per_device_train_batch_size=3, num_generations=2,
    max_completion_length=6, max_steps=2, logging_steps=1, report_to="none", save_strategy="no", seed=0,
)
trainer = GRPOTrainer(
    model=policy_dir, reward_funcs=[recorder], args=args, train_dataset=Dataset.from_dict({"prompt": questions * 3}),
    processing_class=AutoTokenizer.from_pretrained(policy_dir),
)
trainer.train()
results["grpo"] = recorder.calls
results["logged"] = [entry for entry in trainer.state.log_history if "genrm/comparisons" in entry]

# -- part 2: a direct call, on the process group the trainer's accelerator set up ----------------
local = {
    0: (["Q1", "Q1", "Q2"], ["yes", "it is four", "a"]),
    1: (["Q2", "Q2", "Q1", "Q3", "Q3"], ["b c", "d e f g h i", "the answer is four", "j k", "l m n"]),
}[rank]
reward = load_reward(url_direct, protocol="genrm", name="genrm", timeout=30, max_concurrency=4)
results["direct"] = {"prompts": local[0], "completions": local[1], "rewards": reward(prompts=local[0], completions=local[1])}

with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump(results, f)
