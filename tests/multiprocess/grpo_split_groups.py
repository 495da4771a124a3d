"""Run under `torchrun --nproc_per_node 2`: a real GRPOTrainer whose groups span ranks.

per_device_train_batch_size=3 with num_generations=2 puts one member of some prompt's
group on each rank. Each rank records, per reward call, the prompt keys, the raw scores
(from rewardbridge's log_extra column) and the normalized rewards it returned, in
OUT_DIR/rank<r>.jsonl, so the test can recompute the normalization in one process.
"""

import json
import os
import sys

from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from rewardbridge import Conversation, load_reward

policy_dir, reward_dir, out_dir = sys.argv[1:4]


class Recorder:
    """Wraps a reward function (TRL sees the same name) and logs what it returned."""

    def __init__(self, reward):
        self.reward, self.__name__ = reward, reward.__name__
        self.path = os.path.join(out_dir, f"rank{os.environ['RANK']}.jsonl")

    def __call__(self, prompts, completions, **kwargs):
        extra = {}
        log_extra = kwargs.pop("log_extra")
        kwargs["log_extra"] = lambda column, values: (extra.__setitem__(column, values), log_extra(column, values))
        rewards = self.reward(prompts=prompts, completions=completions, **kwargs)
        keys = [Conversation.from_trl(p, c).prompt_key() for p, c in zip(prompts, completions)]
        with open(self.path, "a") as f:
            f.write(json.dumps({"keys": keys, "raw": extra[f"{self.__name__}/raw"], "rewards": rewards}) + "\n")
        return rewards


questions = ["What is the capital of France?", "Tell me a joke.", "How many legs does a spider have?", "Explain gradient descent."]
args = GRPOConfig(
    output_dir=out_dir, use_cpu=True, bf16=False, per_device_train_batch_size=3, num_generations=2,
    max_completion_length=6, max_steps=3, logging_steps=1, report_to="none", save_strategy="no", seed=0,
)
trainer = GRPOTrainer(
    model=policy_dir,
    reward_funcs=[Recorder(load_reward(reward_dir, normalize="zscore", name="rm", device="cpu"))],
    args=args,
    train_dataset=Dataset.from_dict({"prompt": questions * 4}),
    processing_class=AutoTokenizer.from_pretrained(policy_dir),
)
trainer.train()
if trainer.accelerator.is_main_process:
    with open(os.path.join(out_dir, "log_history.json"), "w") as f:
        json.dump(trainer.state.log_history, f)

from rewardbridge.cli import leave_process_group  # noqa: E402

leave_process_group()  # as `rewardbridge train` ends: both ranks meet, then close the group
