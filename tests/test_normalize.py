"""Per-prompt normalization: hand-computed values, edge cases, and real 2-process runs."""

import json
import math

import pytest
import torch

from rewardbridge import load_reward
from rewardbridge.errors import InputError
from conftest import torchrun
from rewardbridge.normalize import clip_rewards, group_index, normalize_per_prompt

NAN = float("nan")
S2 = 2**-0.5  # zscore of a pair with sample std: (x - mean) / std = +-1/sqrt(2)

CASES = [
    # mode, scores, groups, expected, (groups, zero-spread groups)
    ("center", [1, 3, 10], [0, 0, 1], [-1, 1, 0], (2, 1)),  # group 1 has one member -> 0, counted
    ("center", [1, NAN, 3], [0, 0, 0], [-1, NAN, 1], (1, 0)),  # NaN left out of the mean, stays NaN
    ("zscore", [1, 3], [0, 0], [-S2, S2], (1, 0)),  # mean 2, sample std sqrt(2)
    ("zscore", [2, 4, 6, 5, 5], [0, 0, 0, 1, 1], [-1, 0, 1, 0, 0], (2, 1)),  # std 2; equal pair -> 0
    ("zscore", [7], [0], [0], (1, 1)),  # a group of one
    ("rank", [10, 30, 20], [0, 0, 0], [0, 1, 0.5], (1, 0)),  # ranks 0, 2, 1 over n - 1 = 2
    ("rank", [5, 5, 1, 9], [0, 0, 0, 0], [0.5, 0.5, 0, 1], (1, 0)),  # tie shares rank (1 + 2) / 2 = 1.5 -> 0.5
    ("rank", [4], [0], [0.5], (1, 1)),  # a group of one sits in the middle
    ("rank", [NAN, NAN], [0, 0], [NAN, NAN], (0, 0)),  # nothing valid: not a group
]


@pytest.mark.parametrize("mode, scores, groups, expected, counts", CASES)
def test_modes_against_hand_computed_values(mode, scores, groups, expected, counts):
    out = normalize_per_prompt(torch.tensor(scores, dtype=torch.float32), torch.tensor(groups), mode)
    assert out.values.tolist() == pytest.approx(expected, abs=1e-6, nan_ok=True)
    assert (out.num_groups, out.num_zero_spread) == counts


def test_zscore_std_floor_bounds_tiny_spreads():
    out = normalize_per_prompt(torch.tensor([0.0, 1e-9]), torch.tensor([0, 0]), "zscore", std_floor=0.1)
    # (x - mean) / max(std, 0.1): spread 1e-9 is not blown up to +-0.7
    assert out.values.abs().max() < 1e-7


def test_each_attribute_column_is_normalized_on_its_own():
    scores = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    out = normalize_per_prompt(scores, torch.tensor([0, 0]), "center")
    assert out.values.tolist() == [[-1.0, -10.0], [1.0, 10.0]]


def test_groups_are_prompts_not_positions():
    assert group_index(["p", "q", "p", "r", "q"]).tolist() == [0, 1, 0, 2, 1]


def test_clip_after_normalizing():
    assert clip_rewards(torch.tensor([-3.0, 0.5, NAN]), (-1.0, 1.0)).tolist()[:2] == [-1.0, 0.5]


def test_reference_mode_subtracts_a_cached_reference_score(classifier_dir):
    prompts = ["What is 2+2?", "What is 2+2?", "Name a sea."]
    completions = ["4", "five", "The North Sea."]
    references = ["Four.", "Four.", "Baltic."]
    plain = load_reward(classifier_dir)
    reward = load_reward(classifier_dir, normalize="reference", reference_column="reference")
    calls = []
    score = reward.scorer.score
    reward.scorer.score = lambda conversations: calls.append(len(conversations)) or score(conversations)
    got = reward(prompts=prompts, completions=completions, reference=references)
    raw = plain(prompts=prompts, completions=completions)
    ref = plain(prompts=prompts, completions=references)
    assert got == pytest.approx([r - f for r, f in zip(raw, ref)], abs=1e-5)  # x - score(prompt, reference)
    assert calls == [3, 2]  # the batch, then each distinct (prompt, reference) once
    reward(prompts=prompts, completions=completions, reference=references)
    assert calls == [3, 2, 3, 0]  # second step: references come from the cache (an empty call keeps ZeRO-3 ranks in step)
    with pytest.raises(InputError, match="reads the dataset column 'reference'"):
        reward(prompts=prompts, completions=completions)


def test_attribute_target_normalizes_before_weighting(attributes_dir):
    names, weights = ["a", "b", "c"], [1.0, 2.0, -1.0]
    prompts, completions = ["Q?"] * 3, ["yes", "no", "maybe so"]
    extra = {}
    reward = load_reward(attributes_dir, attributes=names, attribute_weights=weights, normalize="zscore", normalize_target="attributes")
    got = reward(prompts=prompts, completions=completions, log_extra=extra.__setitem__)
    columns = torch.tensor([extra[f"{reward.__name__}/{n}"] for n in names]).T  # (3, K)
    per_attribute = normalize_per_prompt(columns, torch.zeros(3, dtype=torch.long), "zscore").values
    assert got == pytest.approx((per_attribute @ torch.tensor(weights)).tolist(), abs=1e-5)


@pytest.mark.multiprocess
def test_two_ranks_normalize_whole_groups_like_one_process(classifier_dir, tmp_path):
    torchrun("normalize_ranks.py", classifier_dir, str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    keys = ranks[0]["local"]["keys"] + ranks[1]["local"]["keys"]
    scores = torch.tensor(ranks[0]["local"]["scores"] + ranks[1]["local"]["scores"])
    for mode in ("center", "zscore", "rank"):
        single = normalize_per_prompt(scores, group_index(keys), mode)
        gathered = ranks[0][mode]["values"] + ranks[1][mode]["values"]
        assert gathered == pytest.approx(single.values.tolist(), abs=1e-6, nan_ok=True)
        assert ranks[0][mode]["groups"] == ranks[1][mode]["groups"] == single.num_groups == 4
    # The RewardFunction on two ranks equals one process scoring the whole batch.
    reward = load_reward(classifier_dir, normalize="zscore", device="cpu")
    prompts = ranks[0]["reward_fn"]["prompts"] + ranks[1]["reward_fn"]["prompts"]
    completions = ranks[0]["reward_fn"]["completions"] + ranks[1]["reward_fn"]["completions"]
    together = reward(prompts=prompts, completions=completions)
    assert ranks[0]["reward_fn"]["rewards"] + ranks[1]["reward_fn"]["rewards"] == pytest.approx(together, abs=1e-5)


@pytest.mark.multiprocess
def test_grpo_in_two_processes_with_groups_split_across_ranks(causal_dir, classifier_dir, tmp_path):
    torchrun("grpo_split_groups.py", causal_dir, classifier_dir, str(tmp_path))
    calls = [[json.loads(line) for line in (tmp_path / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert len(calls[0]) == len(calls[1]) == 3  # one reward call per step on each rank
    split_groups = 0
    for call0, call1 in zip(*calls):
        keys, raw = call0["keys"] + call1["keys"], call0["raw"] + call1["raw"]
        split_groups += len(set(call0["keys"]) & set(call1["keys"]))
        single = normalize_per_prompt(torch.tensor(raw), group_index(keys), "zscore").values.tolist()
        assert call0["rewards"] + call1["rewards"] == pytest.approx(single, abs=1e-5)
    assert split_groups >= 1, "the layout should put one prompt's group on both ranks"
    history = json.loads((tmp_path / "log_history.json").read_text())
    assert sum(1 for entry in history if "rewards/rm/mean" in entry and not math.isnan(entry["rewards/rm/mean"])) == 3
