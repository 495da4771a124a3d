"""GRPO and RLOO with a ZeRO-3 reward model, beside a policy run as POLICY: ``ddp``, ``zero2``
or ``zero3`` (under `torchrun --nproc_per_node 2`), or ``single`` (plain `python`: one process,
where rewardbridge starts a one-rank process group itself).

With a ZeRO-3 policy, the trainer's DeepSpeed config is active when a second, unsharded
reward is loaded afterwards: it must still load whole and score like before.
Writes OUT_DIR/<trainer>_rank<r>.json with the logged history and checks.
"""

import json
import os
import sys

from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from rewardbridge import load_reward

policy_dir, reward_dir, out_dir, policy_mode = sys.argv[1:5]
rank = int(os.environ.get("RANK", 0))
questions = ["What is the capital of France?", "Tell me a joke.", "How many legs does a spider have?", "Explain gradient descent."]

# Rewards first: a ZeRO-3 trainer config makes later loads partitioned.
reward = load_reward(reward_dir, zero3=True, device="cpu", normalize="zscore", name="rm")
probe = {"prompts": ["Hi?", "Hi?"], "completions": ["Hello!", "Go away."]}
whole = load_reward(reward_dir, device="cpu")
before = whole(**probe)

def policy_deepspeed(stage: int) -> dict:
    """A CPU-friendly DeepSpeed training config: torch's AdamW, no bf16."""
    zero = {"stage": stage, **({"stage3_param_persistence_threshold": 0} if stage == 3 else {})}
    return {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": False},
    }


# Two ranks x 3 splits a group across ranks; one process needs a multiple of num_generations.
per_device_batch = 4 if policy_mode == "single" else 3
deepspeed = {"zero2": policy_deepspeed(2), "zero3": policy_deepspeed(3)}.get(policy_mode)
for name, config_class, trainer_class in (("grpo", GRPOConfig, GRPOTrainer), ("rloo", RLOOConfig, RLOOTrainer)):
    args = config_class(
        output_dir=os.path.join(out_dir, name), use_cpu=True, bf16=False, per_device_train_batch_size=per_device_batch,
        num_generations=2, max_completion_length=6, max_steps=2, logging_steps=1, report_to="none",
        save_strategy="no", seed=0, deepspeed=deepspeed,
    )
    # The trap: this config is active now. An unsharded reward loaded here must still be whole.
    after = load_reward(reward_dir, device="cpu")(**probe)
    trainer = trainer_class(
        model=policy_dir, reward_funcs=[reward], args=args,
        train_dataset=Dataset.from_dict({"prompt": questions * 4}),
        processing_class=AutoTokenizer.from_pretrained(policy_dir),
    )
    trainer.train()
    with open(os.path.join(out_dir, f"{name}_rank{rank}.json"), "w") as f:
        json.dump({"history": trainer.state.log_history, "before": before, "after": after,
                   "policy_is_deepspeed": trainer.is_deepspeed_enabled,
                   "policy_zero_stage": deepspeed["zero_optimization"]["stage"] if deepspeed else None,
                   "world_size": trainer.accelerator.num_processes}, f)

from rewardbridge.cli import leave_process_group  # noqa: E402

leave_process_group()  # as `rewardbridge train` ends: both ranks meet, then close the group
