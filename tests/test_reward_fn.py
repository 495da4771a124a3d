"""The TRL-facing callable: contract, pickling, names, presets, logging."""

import pickle

import pytest

from rewardbridge import RewardFunction, RewardOptions, load_reward
from rewardbridge.presets import NEMOTRON_340B_WEIGHTS, apply_preset


def test_reward_function_follows_trls_callable_contract(classifier_dir, chat_batch):
    prompts, completions = chat_batch
    reward = load_reward(classifier_dir, name="skywork_like")
    assert reward.__name__ == "skywork_like"
    assert not isinstance(reward, __import__("torch").nn.Module)  # TRL would call a Module with tensors
    out = reward(prompts=prompts, completions=completions, completion_ids=[[1]] * 4, trainer_state=None, extra_col=[0] * 4)
    assert isinstance(out, list) and len(out) == 4 and all(isinstance(v, float) for v in out)


def test_pickled_reward_rebuilds_its_scorer_and_scores_the_same(classifier_dir, chat_batch):
    prompts, completions = chat_batch
    reward = load_reward(classifier_dir, normalize="center")
    blob = pickle.dumps(reward)
    assert len(blob) < 10_000  # the model does not travel; source + options do
    clone = pickle.loads(blob)
    assert isinstance(clone, RewardFunction) and clone.__name__ == reward.__name__
    assert clone(prompts=prompts, completions=completions) == pytest.approx(reward(prompts=prompts, completions=completions), abs=1e-6)


def test_default_name_comes_from_the_source(classifier_dir):
    reward = load_reward(classifier_dir)
    assert reward.__name__ == classifier_dir.rstrip("/").split("/")[-1]


def test_presets_fill_only_what_the_user_left_unset():
    nemotron = apply_preset("nvidia/Llama-3.1-Nemotron-70B-Reward-HF", RewardOptions())
    assert (nemotron.kind, nemotron.token_id, nemotron.max_length) == ("causal_logit", 0, 4096)
    mine = apply_preset("nvidia/Llama-3.1-Nemotron-70B-Reward-HF", RewardOptions(max_length=2048))
    assert mine.max_length == 2048
    steer = apply_preset("nvidia/Nemotron-4-340B-Reward", RewardOptions())
    assert steer.render == "steerlm" and steer.weight_vector() == list(NEMOTRON_340B_WEIGHTS)


def test_attribute_weights_by_name_default_missing_names_to_zero():
    opts = RewardOptions.from_kwargs(attributes=["a", "b", "c"], attribute_weights={"c": 2.0, "a": 1.0})
    assert opts.weight_vector() == [1.0, 0.0, 2.0]
    with pytest.raises(ValueError, match=r"names \['z'\], not in attributes"):
        RewardOptions.from_kwargs(attributes=["a"], attribute_weights={"z": 1.0})


def test_metrics_and_raw_column_reach_trls_loggers(classifier_dir, chat_batch):
    prompts, completions = chat_batch
    metrics, extra = {}, {}
    reward = load_reward(classifier_dir, normalize="zscore", name="rm")
    out = reward(prompts=prompts, completions=completions, log_metric=metrics.__setitem__, log_extra=extra.__setitem__)
    assert {"rm/raw_mean", "rm/raw_std", "rm/normalized_mean", "rm/zero_spread_frac", "rm/truncated_frac"} <= set(metrics)
    raw = extra["rm/raw"]
    # zscore of a pair: (x - mean) / sample std = +-1/sqrt(2) for the two members of each group.
    for i, j in ((0, 1), (2, 3)):
        sign = 1 if raw[i] > raw[j] else -1
        assert out[i] == pytest.approx(sign * 2**-0.5, abs=1e-5) and out[j] == pytest.approx(-sign * 2**-0.5, abs=1e-5)
