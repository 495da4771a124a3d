"""Whole groups for a pairwise judge (groups.py): which rows are judged together, that
normalize= uses the same groups, and that a problem on one rank is raised on every rank.

Against the real judge server (servers/judge.py): a response's score is its word count
clamped to 1..5; on equal scores ranking 3 when the first is no longer than the second."""

import json
import warnings
from collections import Counter

import pytest

from rewardbridge import load_reward
from rewardbridge.errors import ConfigError, InputError, RewardBridgeWarning
from rewardbridge.groups import Gathered, consecutive_blocks, raise_problems, runs_of
from servers.faulty import FaultyServer
from servers.judge import compared, judge_answer

FAST = dict(timeout=5.0, max_retries=3, retry_wait=0.01)
# Two TRL groups of 4 to one prompt, back to back (a prompt that is twice in the dataset).
EIGHT = ["a", "b c", "d e f", "g h i j", "k", "l m", "n o p", "q r s t"]


@pytest.fixture
def judge():
    server = FaultyServer(judge_answer()).start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "keys, size, blocks",
    [(["p"] * 4, 2, [[0, 1], [2, 3]]), (["p", "p", "q", "q", "p", "p"], 2, [[0, 1], [2, 3], [4, 5]]), (["p"] * 3, 3, [[0, 1, 2]])],
)
def test_consecutive_blocks_are_trl_s_groups(keys, size, blocks):
    assert consecutive_blocks(keys, size) == blocks


@pytest.mark.parametrize(
    "keys, size, message",
    [(["p"] * 6, 4, "this call has 6 .* not a multiple of 4"), (["p", "q", "q", "q"], 2, r"completions 0-1 .* answer 2 different prompts")],
)
def test_blocks_that_are_not_trl_groups_are_refused(keys, size, message):
    with pytest.raises(ConfigError, match=message + ".*set group_size to the trainer's num_generations"):
        consecutive_blocks(keys, size)


def test_runs_and_problems():
    assert runs_of([0, 1, 2, 7, 8]) == [3, 2] and runs_of([3]) == [1] and runs_of([]) == []
    with pytest.raises(InputError, match=r"^bad row \(on rank 1 of 2\)$"):
        raise_problems(Gathered([], slice(0, 0), 0, 2, [(1, InputError("bad row"))]))
    with pytest.raises(InputError, match=r"^bad row \(on ranks \[0, 1\] of 2\)$"):
        raise_problems(Gathered([], slice(0, 0), 0, 2, [(0, InputError("bad row")), (1, InputError("bad row"))]))
    raise_problems(Gathered([], slice(0, 0), 0, 2, []))  # nothing to raise


def test_a_prompt_twice_in_a_batch_is_two_groups_with_group_size(judge):
    grouped = load_reward(judge.url, protocol="genrm", pairs="all_pairs", group_size=4, **FAST)
    rewards = grouped(prompts=["Q"] * 8, completions=EIGHT)
    assert len(judge.requests) == 2 * 6  # two groups of 4, all_pairs: 2 x 4*3/2 (not 8*7/2 = 28)
    pairs = compared(judge)
    assert all({first, second} <= set(EIGHT[:4]) or {first, second} <= set(EIGHT[4:]) for first, second in pairs)
    # Each block scores as a call with that block alone: scores 1, 2, 3, 4 (no ties) in both.
    assert rewards == [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]
    judge.requests.clear()
    by_prompt = load_reward(judge.url, protocol="genrm", pairs="all_pairs", **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one run of 8 rows: nothing says they were two groups, no warning
        by_prompt(prompts=["Q"] * 8, completions=EIGHT)
    assert len(judge.requests) == 28  # the default groups by prompt: one group of 8


def test_a_prompt_in_two_places_warns_that_it_is_judged_as_one_group(judge):
    reward = load_reward(judge.url, protocol="genrm", **FAST)
    prompts = ["Q"] * 2 + ["R"] * 2 + ["Q"] * 2
    completions = ["a", "b c", "x", "y z", "d e f", "g h i j"]
    with pytest.warns(RewardBridgeWarning, match=r"'Q' comes as 2 separate runs of completions \(\[2, 2\]\), judged as one group of 4"):
        reward(prompts=prompts, completions=completions)
    assert len(judge.requests) == 4 + 2  # Q's 4 rows in one circle, R's 2
    judge.requests.clear()
    apart = load_reward(judge.url, protocol="genrm", group_size=2, name="apart", **FAST)  # two live rewards, two names
    # Three groups of 2: (a, b c) 1|2 both ways -> 1, 2; (x, y z) -> 1, 2; (d e f, g h i j) -> 3, 4.
    assert apart(prompts=prompts, completions=completions) == [1.0, 2.0, 1.0, 2.0, 3.0, 4.0]
    assert Counter(frozenset(p) for p in compared(judge)) == Counter({frozenset(p): 2 for p in
                                                                      [("a", "b c"), ("x", "y z"), ("d e f", "g h i j")]})
    # OnlineDPO sends [p1..pB, p1..pB]: runs of one row are not taken for split groups.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_reward(judge.url, protocol="genrm", **FAST)(prompts=["Q", "R", "Q", "R"], completions=["a", "x", "b c", "y z"])


def test_group_size_that_does_not_fit_the_call_is_refused_before_any_request(judge):
    reward = load_reward(judge.url, protocol="genrm", group_size=4, **FAST)
    with pytest.raises(ConfigError, match="group_size=4 .* this call has 6"):
        reward(prompts=["Q"] * 6, completions=EIGHT[:6])
    with pytest.raises(ConfigError, match="completions 0-3 .* answer 2 different prompts"):
        reward(prompts=["Q"] * 2 + ["R"] * 6, completions=EIGHT)
    assert judge.requests == []


@pytest.mark.parametrize(
    "options, expected",
    [
        # Two groups of 4 to one prompt: each centred on its own mean (2.5), not on the 8 rows'.
        (dict(group_size=4), [-1.5, -0.5, 0.5, 1.5, -1.5, -0.5, 0.5, 1.5]),
        # By prompt: one group of 8 in a circle (a..q r s t): (7,0) "q r s t" vs "a" 4|1 -> 0: (1+1)/2, 3: 4, 4: (1+1)/2 ...
        (dict(), None),
    ],
    ids=["group_size", "by-prompt"],
)
def test_normalize_uses_the_judge_s_groups(judge, options, expected):
    reward = load_reward(judge.url, protocol="genrm", normalize="center", **options, **FAST)
    rewards = reward(prompts=["Q"] * 8, completions=EIGHT)
    if expected is None:  # by prompt: one group, so the 8 rewards are centred on their common mean
        raw = load_reward(judge.url, protocol="genrm", **FAST)(prompts=["Q"] * 8, completions=EIGHT)
        expected = [r - sum(raw) / 8 for r in raw]
    assert rewards == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("protocol", ["genrm", "principle"])
def test_normalize_with_a_principle_column_compares_rows_of_one_principle(judge, protocol):
    # One prompt, two principles: the judge used two groups, and so does normalize.
    reward = load_reward(judge.url, protocol=protocol, principle_column="rule", normalize="center", **FAST)
    completions = ["a", "b c d", "a b", "a b c d"]
    rewards = reward(prompts=["Q"] * 4, completions=completions, rule=["P1", "P1", "P2", "P2"])
    raw = load_reward(judge.url, protocol=protocol, principle_column="rule", **FAST)(
        prompts=["Q"] * 4, completions=completions, rule=["P1", "P1", "P2", "P2"])
    # genrm: (a, b c d) 1|3 -> 1, 3; (a b, a b c d) 2|4 -> 2, 4. principle: 1 - len/100 each.
    means = [(raw[0] + raw[1]) / 2] * 2 + [(raw[2] + raw[3]) / 2] * 2
    assert rewards == pytest.approx([r - m for r, m in zip(raw, means)], abs=1e-6)
    assert rewards[0] == pytest.approx(-rewards[1], abs=1e-6) and rewards[2] == pytest.approx(-rewards[3], abs=1e-6)


@pytest.mark.multiprocess
def test_a_problem_on_one_rank_is_raised_on_both_and_groups_span_ranks(judge, tmp_path):
    from conftest import torchrun

    torchrun("genrm_rank_errors.py", judge.url, str(tmp_path), timeout=240)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        # Rank 1's completion 0 is a lone message dict: both ranks raise that error, naming rank 1.
        assert rank["bad_completion"].startswith("InputError: sample 0: completion is a single message dict")
        assert rank["bad_completion"].endswith("(on rank 1 of 2)")
        # The key variable is set on rank 0 only: both ranks name rank 1 as the one without it.
        assert rank["missing_key"] == ("ConfigError: api_key_env='JUDGE_KEY', but that environment variable is not set; "
                                       "set it to the key on every process (on rank 1 of 2)")
    # Then a call with a group of 8 split 3 | 5 across the ranks, group_size=4, normalize="center":
    # blocks [a, b c, d e f | g h i j] and [k l m n o p q r s t]; each centred on its own mean, as in one process.
    both = ranks[0]["split"] + ranks[1]["split"]
    assert both == pytest.approx([-1.5, -0.5, 0.5, 1.5, -1.5, -0.5, 0.5, 1.5], abs=1e-6)
    # Nothing was sent for the refused calls: only the split call's 2 x 4 circular comparisons.
    assert len(judge.requests) == 8
