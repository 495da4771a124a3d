"""Real TRL trainers (GRPO and RLOO, trl 1.16) train with rewardbridge rewards on CPU."""

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from rewardbridge import load_reward

QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "Tell me a joke.", "Explain gradient descent."]


def length_penalty(completions, **kwargs):
    """A second, plain reward function, to combine with a reward model."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [-len(t) / 100 for t in texts]


def dataset(conversational: bool) -> Dataset:
    if conversational:
        return Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in QUESTIONS]})
    return Dataset.from_dict({"prompt": QUESTIONS})


def train(trainer_name, policy_dir, reward_funcs, conversational, tmp_path, reward_weights=None):
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_class, trainer_class = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}[trainer_name]
    args = config_class(
        output_dir=str(tmp_path),
        use_cpu=True,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-4,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        reward_weights=reward_weights,
    )
    trainer = trainer_class(
        model=policy_dir,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset(conversational),
        processing_class=AutoTokenizer.from_pretrained(policy_dir),
    )
    trainer.train()
    return trainer.state.log_history


@pytest.mark.parametrize("trainer_name", ["grpo", "rloo"])
@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_trainer_trains_with_a_rewardbridge_reward(trainer_name, conversational, causal_dir, classifier_dir, tmp_path):
    reward = load_reward(classifier_dir, name="rm", normalize="center")
    logs = train(trainer_name, causal_dir, [reward, length_penalty], conversational, tmp_path, reward_weights=[1.0, 0.5])
    steps = [entry for entry in logs if "rewards/rm/mean" in entry]
    assert len(steps) == 2  # two optimizer steps, each scored by the reward model
    for entry in steps:
        # Our metrics travel through TRL's log_metric; centering makes each group's mean 0.
        assert entry["rm/normalized_mean"] == pytest.approx(0.0, abs=1e-5)
        assert entry["rewards/rm/mean"] == pytest.approx(0.0, abs=1e-5)
        assert "rewards/length_penalty/mean" in entry and "rm/raw_mean" in entry


def test_causal_logit_judge_reward_in_rloo(causal_dir, tmp_path):
    reward = load_reward(causal_dir, token_id=("the", 7), judge_prompt="Q: {prompt}\nA: {response}\nGood?", name="judge")
    logs = train("rloo", causal_dir, [reward], True, tmp_path)
    assert sum("rewards/judge/mean" in entry for entry in logs) == 2
