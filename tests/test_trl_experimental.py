"""TRL 1.16's experimental online trainers that take ``reward_funcs`` train with rewardbridge rewards.

- ``OnlineDPOTrainer`` calls a reward function with prompts, completions, completion_ids,
  the dataset columns and ``trainer_state`` (no log_metric / log_extra: online_dpo_trainer.py
  ``_calculate_rewards_from_functions``), and logs the mean reward as ``objective/scores``.
- ``AsyncGRPOTrainer`` pickles reward functions into a spawned, CUDA-free child process
  (async_rollout_worker.py ``AsyncRolloutWorker``) that generates through a vLLM server's
  ``/v1/completions`` and scores there. vLLM cannot run here, so a stand-in server speaks
  vLLM's wire format (token ids in, ``choices[0].token_ids`` + ``logprobs.token_logprobs``
  out), and weight sync (NCCL to vLLM) is the no-op that TRL's constructor accepts for tests.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from rewardbridge import RewardFunction, load_reward

QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "Tell me a joke.", "Explain gradient descent."]


class RecordingReward(RewardFunction):
    """A rewardbridge reward that also appends what it scored to a JSON-lines file (any process)."""

    def __init__(self, reward: RewardFunction, log_path: str):
        super().__init__(reward.source, reward.options, reward._scorer)
        self.log_path = log_path

    def __getstate__(self):
        return {**super().__getstate__(), "log_path": self.log_path}

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        scores = super().__call__(prompts, completions, completion_ids, **kwargs)
        with open(self.log_path, "a") as log:
            for p, c, s in zip(prompts, completions, scores):
                log.write(json.dumps({"prompt": p, "completion": c, "score": s, "pid": os.getpid(),
                                      "kwargs": sorted(kwargs)}) + "\n")
        return scores


def recorded(path) -> list[dict]:
    with open(path) as log:
        return [json.loads(line) for line in log]


def assert_scores_are_the_rewards_own(reward, rows):
    """Each recorded score == the reward's own score for that (prompt, completion), scored here."""
    expected = reward(prompts=[r["prompt"] for r in rows], completions=[r["completion"] for r in rows])
    torch.testing.assert_close(torch.tensor([r["score"] for r in rows]), torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_online_dpo_trains_with_a_rewardbridge_reward(causal_dir, classifier_dir, tmp_path):
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    log_path = str(tmp_path / "scored.jsonl")
    reward = RecordingReward(load_reward(classifier_dir, name="rm"), log_path)
    args = OnlineDPOConfig(
        output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=2, max_new_tokens=8, max_steps=2,
        logging_steps=1, report_to="none", save_strategy="no", learning_rate=1e-4,
    )
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in QUESTIONS]})
    trainer = OnlineDPOTrainer(
        model=causal_dir, reward_funcs=[reward], args=args, train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(causal_dir),
    )
    trainer.train()

    rows = recorded(log_path)
    steps = [entry for entry in trainer.state.log_history if "objective/scores" in entry]
    assert trainer.state.global_step == 2 and len(steps) == 2
    # 2 prompts x 2 completions per step, scored in one call each step; trainer_state came along.
    assert len(rows) == 8 and all(r["kwargs"] == ["trainer_state"] for r in rows)
    for step, entry in enumerate(steps):
        # OnlineDPO logs mean(rewards) of the step as objective/scores.
        assert entry["objective/scores"] == pytest.approx(sum(r["score"] for r in rows[4 * step: 4 * step + 4]) / 4, abs=1e-5)
    assert_scores_are_the_rewards_own(load_reward(classifier_dir), rows)
