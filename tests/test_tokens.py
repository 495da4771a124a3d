"""The micro-batch token budget's default comes from the device (scorers/tokens.py, issue 18)."""

import pytest

from rewardbridge import load_reward
from rewardbridge.scorers.tokens import CPU_MAX_TOKENS_PER_BATCH, DEFAULT_MAX_TOKENS_PER_BATCH, default_max_tokens_per_batch


@pytest.mark.parametrize("device, budget", [("cpu", CPU_MAX_TOKENS_PER_BATCH), ("cuda", DEFAULT_MAX_TOKENS_PER_BATCH),
                                            ("cuda:3", DEFAULT_MAX_TOKENS_PER_BATCH), ("mps", DEFAULT_MAX_TOKENS_PER_BATCH)])
def test_the_default_budget_follows_the_device(device, budget):
    import torch

    assert default_max_tokens_per_batch(device) == default_max_tokens_per_batch(torch.device(device)) == budget


def test_a_loaded_cpu_model_gets_the_cpu_budget_unless_one_is_given(classifier_dir):
    assert CPU_MAX_TOKENS_PER_BATCH < DEFAULT_MAX_TOKENS_PER_BATCH  # measured: docs/benchmarks.md
    assert load_reward(classifier_dir, device="cpu").scorer.max_tokens_per_batch == CPU_MAX_TOKENS_PER_BATCH
    assert load_reward(classifier_dir, device="cpu", max_tokens_per_batch=16384).scorer.max_tokens_per_batch == 16384
