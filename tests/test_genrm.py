"""Generative reward models (issue 17): the pairwise GenRM (protocol="genrm") and the pointwise
principle judge (protocol="principle"), against the real judge server in servers/judge.py.

The judge's verdict on (first, second) (servers/judge.py ``verdict``): each score is the
response's word count clamped to 1..5; ranking 1/2 when the first is better by >= 2 / by 1,
5/6 the same for the second, and on equal scores 3 if the first is no longer than the
second, else 4. The rewards below are that verdict folded by hand (simple_tiebreaker).
"""

import json
import pickle
import re
from collections import Counter

import pytest

from rewardbridge import Conversation, load_reward
from rewardbridge.comparisons import Judgement, comparison_pairs, fold, length_weights, split_reasoning, style_density
from rewardbridge.errors import ConfigError, InputError, OptionTypeError, RemoteError
from rewardbridge.protocols.genrm import Unparsed, json_objects, parse_judgement
from rewardbridge.resolve import resolve
from servers.faulty import Fault, FaultyServer, free_port
from servers.judge import compared, judge_answer, unreadable_fault

FAST = dict(timeout=5.0, max_retries=3, retry_wait=0.01)
# Group of 4 to prompt Q1 (scores 1, 3, 4, 1; lengths 3, 10, 18, 4) and of 5 to Q2 (scores
# 1, 2, 5, 2, 3; lengths 1, 3, 11, 3, 5), interleaved: rows are grouped by prompt, not position.
G4 = ["yes", "it is four", "the answer is four", "four"]
G5 = ["a", "b c", "d e f g h i", "j k", "l m n"]
ORDER = [("Q1", 0), ("Q2", 0), ("Q2", 1), ("Q1", 1), ("Q2", 2), ("Q1", 2), ("Q2", 3), ("Q1", 3), ("Q2", 4)]
PROMPTS = [p for p, _ in ORDER]
COMPLETIONS = [(G4 if p == "Q1" else G5)[i] for p, i in ORDER]

# circular, Q1: (0,1) 1|3, (1,2) 3|4, (2,3) 4|1, (3,0) "four" vs "yes": tie 1|1, ranking 4 (4 chars > 3)
#   -> 1 - 0.5 = 0.5 for response 3 and 1 + 0.5 = 1.5 for response 0. Means: 0 (1+1.5)/2, 1 (3+3)/2, 2 (4+4)/2, 3 (1+0.5)/2.
# circular, Q2: (0,1) 1|2, (1,2) 2|5, (2,3) 5|2, (3,4) 2|3, (4,0) 3|1: no tie -> 1, 2, 5, 2, 3.
CIRCULAR = {"Q1": [1.25, 3.0, 4.0, 0.75], "Q2": [1.0, 2.0, 5.0, 2.0, 3.0]}
# all_pairs, Q1: (0,3) "yes" vs "four" ties with ranking 3 -> 1.5 | 0.5; 0 (1+1+1.5)/3, 1 3, 2 4, 3 (0.5+1+1)/3.
# all_pairs, Q2: (1,3) "b c" vs "j k" ties with ranking 3 (equal lengths) -> 2.5 | 1.5;
#   1 (2+2.5+2+2)/4 = 2.125, 3 (2+1.5+2+2)/4 = 1.875; the others as their scores.
ALL_PAIRS = {"Q1": [3.5 / 3, 3.0, 4.0, 2.5 / 3], "Q2": [1.0, 2.125, 5.0, 1.875, 3.0]}
# Length weights (answer characters): Q1 lengths 3, 10, 18, 4: w = 1 - (L - 3)/15 = 1, 8/15, 0, 14/15, mean 37/60
#   -> +23/60, -5/60, -37/60, +19/60. Q2 lengths 1, 3, 11, 3, 5: 1, .8, 0, .8, .6, mean .64 -> .36, .16, -.64, .16, -.04.
WEIGHTS = {"Q1": [23 / 60, -5 / 60, -37 / 60, 19 / 60], "Q2": [0.36, 0.16, -0.64, 0.16, -0.04]}


def expected(table, penalty=0.0):
    return [table[p][i] + penalty * WEIGHTS[p][i] for p, i in ORDER]


@pytest.fixture
def judge():
    started = []

    def start(**kwargs):
        server = FaultyServer(judge_answer(**kwargs)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- the maths and the parsing, no server ----------------------------------------------------------


@pytest.mark.parametrize(
    "strategy, n, judges, both, count",
    [("circular", 4, 1, False, 4), ("circular", 2, 1, False, 2), ("all_pairs", 5, 1, False, 10),
     ("all_pairs", 4, 2, False, 12), ("all_pairs", 4, 1, True, 12), ("circular", 16, 1, False, 16)],
)
def test_comparison_counts(strategy, n, judges, both, count):
    pairs = comparison_pairs(strategy, n, judges, both)
    assert len(pairs) == count  # circular N, all_pairs N(N-1)/2, x judges, x 2 with both orders
    assert all(i != j for i, j, _ in pairs) and Counter(k for _, _, k in pairs) == Counter({k: count // judges for k in range(judges)})


def test_fold_and_length_weights_by_hand():
    # (0,1) 4|2, (1,2) 3|3 ranking 5 -> 3 - 1.5, 3 + 1.5; (2,0) 1|5: 0 (4+5)/2, 1 (2+1.5)/2, 2 (4.5+1)/2.
    folded = fold(3, [(0, 1, Judgement(4, 2, 2)), (1, 2, Judgement(3, 3, 5)), (2, 0, Judgement(1, 5, 6))])
    assert folded.rewards == [4.5, 1.75, 2.75] and folded.tiebreaks == 1 and folded.judged == 3
    assert folded.individual == [4, 2, 3, 3, 1, 5]
    assert fold(3, [(0, 1, None), (1, 2, Judgement(2, 4, 6))]).rewards[:2] == [pytest.approx(float("nan"), nan_ok=True)] * 2
    assert length_weights([7, 7, 7]) == [0.0, 0.0, 0.0]  # all equal: no adjustment
    # Reasoning is measured apart from the answer: answers "ab"/"abcd", reasoning 0 and 6 characters.
    texts = ["ab", "<think>thinks</think>abcd"]
    assert split_reasoning(texts[1]) == ("<think>thinks</think>", "abcd")
    adjusted = fold(2, [(0, 1, Judgement(3, 3, 3.5))], texts, length_penalty=1.0, reasoning_length_penalty=0.5).rewards
    assert adjusted == [3.0 + 0.5 + 0.25, 3.0 - 0.5 - 0.25]  # answer w +-0.5, reasoning w +-0.5 x 0.5


# Circular over 4: (0,1) 5|4, (1,2) 4|3, (2,3) 3|1, (3,0) 1|5 -> rewards 5, 4, 3, 1.
BONUS_JUDGED = [(0, 1, Judgement(5, 4, 2)), (1, 2, Judgement(4, 3, 2)), (2, 3, Judgement(3, 1, 1)), (3, 0, Judgement(1, 5, 6))]
# Answers 10, 11, 15, 4 characters; reasoning 0, 5, 36; markdown: 1 bold in 10 characters, none,
# a header and a list item in 15, none.
BONUS_TEXTS = ["**Eight.**", "<think>count</think>Eight legs.", "<think>legs: 8, since spiders are arachnids</think>## Legs\n- eight",
               "Six."]


def test_top_performer_bonuses_and_the_style_penalty_by_hand():
    assert fold(4, BONUS_JUDGED).rewards == [5.0, 4.0, 3.0, 1.0]
    assert [style_density(split_reasoning(t)[1]) for t in BONUS_TEXTS] == [0.1, 0.0, 2 / 15, 0.0]
    # Style weights: 1 - d / (2/15) = 0.25, 1, 0, 1; mean 0.5625 -> -0.3125, +0.4375, -0.5625, +0.4375 (x 0.05).
    style = [-0.3125 * 0.05, 0.4375 * 0.05, -0.5625 * 0.05, 0.4375 * 0.05]
    # top_percentile 0.5 of 4: the 2nd highest (4) is the bar. Shortest reasoning: response 1 (reward 4): bonus.
    # Shortest answer: response 3 ("Six.", reward 1): below the bar, no bonus.
    got = fold(4, BONUS_JUDGED, BONUS_TEXTS, answer_bonus=0.5, reasoning_bonus=0.5, top_percentile=0.5, style_penalty=0.05).rewards
    assert got == pytest.approx([5.0 + style[0], 4.0 + 0.5 + style[1], 3.0 + style[2], 1.0 + style[3]], abs=1e-12)
    # top_percentile 1: every response clears the bar, so the shortest answer earns its bonus too.
    assert fold(4, BONUS_JUDGED, BONUS_TEXTS, answer_bonus=0.5, reasoning_bonus=0.5, top_percentile=1.0).rewards == [5.0, 4.5, 3.0, 1.5]
    # top_percentile 0.25: only the best (5) clears it; it is neither shortest: no bonus at all.
    assert fold(4, BONUS_JUDGED, BONUS_TEXTS, answer_bonus=0.5, reasoning_bonus=0.5, top_percentile=0.25).rewards == [5.0, 4.0, 3.0, 1.0]
    # A failed comparison (3,0): responses 0 and 3 are NaN and earn nothing. The rest is over the scored
    # [4, 3]: k = int(2 x 0.5) = 1, the bar is 4; the shortest scored answer is response 1 (reward 4): bonus.
    failed = fold(4, BONUS_JUDGED[:3] + [(3, 0, None)], BONUS_TEXTS, answer_bonus=0.5, top_percentile=0.5).rewards
    assert failed[1:3] == [4.5, 3.0] and all(r != r for r in (failed[0], failed[3]))
    # top_percentile 0.25 of the 2 scored: k = max(1, int(0.5)) = 1, the same bar.
    assert fold(4, BONUS_JUDGED[:3] + [(3, 0, None)], BONUS_TEXTS, answer_bonus=0.5, top_percentile=0.25).rewards[1:3] == [4.5, 3.0]
    # Length and style weights over the scored only: the failed response's 100 characters move no one.
    judged = [(0, 1, Judgement(3, 3, 3.5)), (1, 2, Judgement(3, 4, 5)), (2, 3, None)]
    lengths = fold(4, judged, ["a" * 10, "b" * 10, "c" * 10, "d" * 100], length_penalty=1.0, style_penalty=1.0).rewards
    assert lengths[:2] == fold(4, judged).rewards[:2] and all(r != r for r in lengths[2:])


def test_style_density_counts_as_genrm_compare_does():
    assert style_density("```\n# not a header\n- nor a list\n```") == 0.0  # code blocks are left out
    assert style_density("1. one\n2. two") == pytest.approx(2 / 13)  # ordered list items
    assert style_density("__bold__ and **bold**") == pytest.approx(2 / 21)
    assert style_density("ok \U0001F600") == pytest.approx(1 / 4)  # an emoji
    # genrm_compare's emoji range U+24C2-U+1F251 spans CJK: each character counts, as there.
    assert style_density("八条腿") == 1.0


VERDICT = Judgement(4.0, 2.0, 2.0)


@pytest.mark.parametrize(
    "text, neutral, result",
    [
        ('```json\n{"score_1": 4, "score_2": 2, "ranking": 2}\n```', False, VERDICT),
        ('Thinking... {"score_1": 4, "score_2": 2, "ranking": 2} done.', False, VERDICT),
        ('Example {"note": 1}; final: {"overall": {"score_1": 4, "score_2": 2, "ranking": 2}}', False, VERDICT),
        # Fenced blocks win over a later bare object; among bare objects the last one counts.
        ('```json\n{"score_1": 4, "score_2": 2, "ranking": 2}\n``` {"score_1": 1, "score_2": 5, "ranking": 6}', False, VERDICT),
        ('{"score_1": 1, "score_2": 5, "ranking": 6} then I changed my mind {"score_1": 4, "score_2": 2, "ranking": 2}', False, VERDICT),
        # A verdict inside the reasoning is not the answer.
        ('<think>{"score_1": 1, "score_2": 5, "ranking": 6}</think>{"score_1": "4", "score_2": 2, "ranking": 2}', False, VERDICT),
        ('{"score_1": 4, "score_2": 2}', True, Judgement(4.0, 2.0, 3.5)),  # neutral fills genrm_compare's defaults
        ('{"score_1": 4, "score_2": 2}', False, Unparsed("{\"score_1\": 4, \"score_2\": 2} has no 'ranking'")),
        ('{"score_1": true, "score_2": 2, "ranking": 2}', False, Unparsed("score_1=True is not a number")),
        ("I cannot decide.", False, Unparsed("no JSON object in the answer")),
        ('<think>{"score_1": 4, "score_2": 2, "ranking": 2}</think> no verdict', False, Unparsed("no JSON object in the answer")),
        # A <think> never closed: all of it is reasoning, its draft verdict is not the answer.
        ('<think>maybe {"score_1": 4, "score_2": 2, "ranking": 2} but', False, Unparsed("no JSON object in the answer")),
        # Off the judge's scale (scores 1-5, ranking 1-6): not a verdict, asked again; never clamped.
        ('{"score_1": 7, "score_2": 2, "ranking": 2}', False, Unparsed("score_1=7 is outside 1-5")),
        ('{"score_1": 4, "score_2": 0.5, "ranking": 2}', True, Unparsed("score_2=0.5 is outside 1-5")),
        ('{"score_1": 4, "score_2": 2, "ranking": 0}', False, Unparsed("ranking=0 is outside 1-6")),
        ('{"score_1": 4, "score_2": 2, "ranking": 6.5}', False, Unparsed("ranking=6.5 is outside 1-6")),
        ('{"score_1": 5, "score_2": 1, "ranking": 6}', False, Judgement(5.0, 1.0, 6.0)),  # the ends of the scale are in it
        # A malformed outer object is skipped whole (genrm_compare's brace counter): its nested verdict is not read.
        ('{"x": {"score_1": 4, "score_2": 2, "ranking": 2}, oops}', False, Unparsed("no JSON object in the answer")),
    ],
    ids=["fenced", "prose", "nested-overall", "fenced-first", "last-object", "after-think", "neutral-fill",
         "missing-key", "boolean", "none", "only-in-reasoning", "unclosed-think", "score-above", "score-below-neutral",
         "ranking-below", "ranking-above", "scale-ends", "malformed-outer"],
)
def test_parse_judgement(text, neutral, result):
    assert parse_judgement(text, neutral) == result


@pytest.mark.parametrize(
    "text, objects",
    [
        ('first {"a": 1} then {"b": {"c": 2}} and {oops}', [{"a": 1}, {"b": {"c": 2}}]),
        ('{"x": {"a": 1}, oops}', []),  # malformed outer: nothing, not its nested {"a": 1}
        ('{"x": {"a": 1}, oops} {"b": 2}', [{"b": 2}]),  # the next top-level object is still read
        ('unbalanced { then {"a": 1}', [{"a": 1}]),  # a { never closed is passed over
        ('{"s": "a } in a string", "n": 1}', [{"s": "a } in a string", "n": 1}]),  # braces in strings do not count
        ('{"s": "an \\" escaped quote {"}', [{"s": 'an " escaped quote {'}]),
        ("[1, 2] {}", [{}]),
    ],
    ids=["top-level", "malformed-outer", "after-malformed", "unbalanced", "brace-in-string", "escaped-quote", "array"],
)
def test_json_objects_are_the_top_level_ones(text, objects):
    assert json_objects(text) == objects


@pytest.mark.parametrize(
    "text, parts",
    [
        ("<think>2+2 is 4</think> 4", ("<think>2+2 is 4</think>", " 4")),
        ("4", ("", "4")),
        ("<think>still thinking", ("<think>still thinking", "")),  # opened, never closed: no answer
        ("<think>a</think>b<think>c", ("<think>a</think>b<think>c", "")),  # a second one never closed
        ("reasoning the template opened</think>4", ("reasoning the template opened</think>", "4")),
    ],
    ids=["closed", "none", "never-closed", "reopened", "template-opened"],
)
def test_split_reasoning(text, parts):
    assert split_reasoning(text) == parts


def response(content, finish="stop", **message):
    import httpx

    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message}, "finish_reason": finish}]}
    return httpx.Response(200, json=body)


VERDICT_JSON = '{"score_1": 4, "score_2": 2, "ranking": 2}'


@pytest.mark.parametrize(
    "content, finish, message, read",
    [
        (f"<think>so far {VERDICT_JSON}", "length", {}, False),  # cut inside an opened <think>
        (f"the template opened the think; so far {VERDICT_JSON}", "length", {}, False),  # cut before any </think>
        (f"<think>done</think>{VERDICT_JSON} and some more words", "length", {}, True),  # cut after the reasoning ended
        (f"{VERDICT_JSON} and more", "length", {"reasoning_content": "done thinking"}, True),  # vLLM's parser moved it out
        (f"the template opened the think {VERDICT_JSON}", "stop", {}, True),  # not cut: read as it is
    ],
    ids=["cut-in-think", "cut-no-close", "cut-after-close", "cut-after-parsed-reasoning", "not-cut"],
)
def test_a_judge_cut_at_max_tokens_while_reasoning_has_no_verdict(content, finish, message, read):
    from rewardbridge.options import RewardOptions
    from rewardbridge.protocols.genrm import GenRMClient

    result = GenRMClient(RewardOptions(protocol="genrm")).parse(response(content, finish, **message))
    if read:
        assert result == VERDICT
    else:
        assert isinstance(result, Unparsed) and "cut at max_tokens=16384 before its reasoning ended" in result.reason


# -- rewards through the real judge server ------------------------------------------------------------


@pytest.mark.parametrize(
    "options, table, penalty, comparisons",
    [
        ({}, CIRCULAR, 0.0, 4 + 5),  # circular: N per prompt
        ({"pairs": "all_pairs"}, ALL_PAIRS, 0.0, 6 + 10),  # N(N-1)/2
        ({"length_penalty": 0.5}, CIRCULAR, 0.5, 9),
        ({"pairs": "all_pairs", "length_penalty": 0.35}, ALL_PAIRS, 0.35, 16),
        ({"judges_per_pair": 2}, CIRCULAR, 0.0, 18),  # the same verdict twice: the same means
        # Every response clears top_percentile 1: the shortest answer of each group, response 0 of Q1 ("yes")
        # and of Q2 ("a"), earns answer_bonus; no completion reasons, no markdown: the rest change nothing.
        ({"answer_bonus": 0.5, "top_percentile": 1.0, "style_penalty": 0.05},
         {"Q1": [1.75, 3.0, 4.0, 0.75], "Q2": [1.5, 2.0, 5.0, 2.0, 3.0]}, 0.0, 9),
        # At the default top_percentile 0.2 only each group's best clears the bar: no bonus.
        ({"answer_bonus": 0.5}, CIRCULAR, 0.0, 9),
    ],
    ids=["circular", "all_pairs", "circular+length", "all_pairs+length", "two-judges", "bonus-to-all", "bonus-to-best"],
)
def test_rewards_for_groups_of_4_and_5_equal_the_hand_computed_aggregation(judge, options, table, penalty, comparisons):
    server = judge()
    reward = load_reward(server.url, protocol="genrm", name="genrm", **FAST, **options)
    logged = {}
    rewards = reward(prompts=PROMPTS, completions=COMPLETIONS, log_metric=lambda k, v: logged.__setitem__(k, v))
    assert rewards == pytest.approx(expected(table, penalty), abs=1e-6)
    assert len(server.requests) == comparisons and logged["genrm/comparisons"] == comparisons
    assert logged["genrm/parse_retries"] == 0 and logged["genrm/failed_comparisons"] == 0
    # Every comparison is one request holding the prompt, then response_1 and response_2, sampled as genrm_compare.
    body = json.loads(server.requests[0][2])
    assert [m["role"] for m in body["messages"]] == ["user", "response_1", "response_2"]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.6, 0.95, 16384)
    if table is CIRCULAR and "judges_per_pair" not in options:
        # Circular tie in Q1 ("four" vs "yes"): 1 tie in 9 comparisons; scores 1,3 3,4 4,1 1,1 1,2 2,5 5,2 2,3 3,1.
        assert logged["genrm/tiebreak_rate"] == pytest.approx(1 / 9)
        assert logged["genrm/judge_score_mean"] == pytest.approx(44 / 18)


def test_metrics_of_a_step_are_the_judge_s_individual_scores(judge):
    server = judge()
    reward = load_reward(server.url, protocol="genrm", name="g", **FAST)
    logged = {}
    reward(prompts=["Q"] * 2, completions=["a b c", "a"], log_metric=lambda k, v: logged.__setitem__(k, v))
    # n = 2 circular: (0,1) and (1,0), scores 3|1 and 1|3: mean 2, population std 1, no tie.
    assert (logged["g/judge_score_mean"], logged["g/judge_score_std"], logged["g/tiebreak_rate"]) == (2.0, 1.0, 0.0)


def test_normalize_applies_after_aggregation(judge):
    server = judge()
    reward = load_reward(server.url, protocol="genrm", normalize="center", **FAST)
    rewards = reward(prompts=PROMPTS, completions=COMPLETIONS)
    means = {p: sum(v) / len(v) for p, v in CIRCULAR.items()}  # Q1 9/4, Q2 13/5
    assert rewards == pytest.approx([CIRCULAR[p][i] - means[p] for p, i in ORDER], abs=1e-6)


def test_unreadable_answers_are_asked_again(judge):
    server = judge()
    server.script += [unreadable_fault()] * 3  # whichever comparisons come first get an unreadable answer once
    reward = load_reward(server.url, protocol="genrm", name="g", **FAST)
    logged = {}
    rewards = reward(prompts=PROMPTS, completions=COMPLETIONS, log_metric=lambda k, v: logged.__setitem__(k, v))
    assert rewards == pytest.approx(expected(CIRCULAR), abs=1e-6)  # the same, once readable
    assert len(server.requests) == 9 + 3 and logged["g/parse_retries"] == 3 and logged["g/parse_failures"] == 0


# "it is MUMBLE" makes every answer about it unreadable. Group [a b, it is MUMBLE, x, y z w], circular:
# (0,1) and (1,2) fail; (2,3) "x" vs "y z w" 1|3 and (3,0) "y z w" vs "a b" 3|2 are read.
MUMBLED = ["a b", "it is MUMBLE", "x", "y z w"]


@pytest.mark.parametrize(
    "options, result",
    [
        ({}, RemoteError),  # default: a failure, raised
        ({"on_error": "skip"}, [None, None, None, 3.0]),  # 0, 1, 2 were in a failed comparison; 3: (3 + 3) / 2
        # neutral: (0,1) and (1,2) become 3|3 ranking 3.5 (no tie-break shift): 0 (3+2)/2, 1 (3+3)/2, 2 (3+1)/2, 3 (3+3)/2.
        ({"on_parse_failure": "neutral"}, [2.5, 3.0, 2.0, 3.0]),
    ],
    ids=["raise", "skip", "neutral"],
)
def test_what_an_unreadable_comparison_becomes(judge, options, result):
    server = judge()
    reward = load_reward(server.url, protocol="genrm", name="g", parse_retries=1, **FAST, **options)
    logged = {}
    call = lambda: reward(prompts=["Q"] * 4, completions=MUMBLED, log_metric=lambda k, v: logged.__setitem__(k, v))  # noqa: E731
    if result is RemoteError:
        with pytest.raises(RemoteError, match=r"could not be read after 2 attempt\(s\).*on_parse_failure='neutral'"):
            call()
        return
    assert call() == result
    assert len(server.requests) == 4 + 2  # the two unreadable comparisons asked once more each
    assert logged["g/parse_failures"] == 2 and logged["g/parse_retries"] == 2
    if options.get("on_error") == "skip":
        assert logged["g/failed_frac"] == 0.75 and logged["g/failed_comparisons"] == 2


@pytest.mark.parametrize(
    "faults, retries",
    [([Fault(status=503)] * 2, 2), ([Fault(sleep=1.5)], 1), ([Fault(status=429, headers={"Retry-After": "0"})], 1)],
    ids=["503", "slow", "429"],
)
def test_the_transport_retries_a_failing_or_slow_judge(judge, faults, retries):
    server = judge()
    server.script += faults
    reward = load_reward(server.url, protocol="genrm", name="g", **{**FAST, "timeout": 1.0}, max_concurrency=1)
    logged = {}
    assert reward(prompts=PROMPTS, completions=COMPLETIONS, log_metric=lambda k, v: logged.__setitem__(k, v)) == pytest.approx(
        expected(CIRCULAR), abs=1e-6)
    assert logged["g/retries"] == retries and logged["g/parse_retries"] == 0


def test_comparisons_fail_over_across_judge_replicas(judge):
    live = judge()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    reward = load_reward([dead, live.url], protocol="genrm", **FAST)
    assert reward(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(expected(CIRCULAR), abs=1e-6)
    assert len(live.requests) == 9


def test_a_failed_judge_raises_or_skips(judge, caplog):
    server = judge()
    server.script += [Fault(status=503)] * 10
    reward = load_reward(server.url, protocol="genrm", max_retries=1, retry_wait=0.01, timeout=5.0, max_concurrency=1)
    with pytest.raises(RemoteError, match=r"^genrm endpoint .* answered HTTP 503 .* for samples (\d) and (?!\1)\d after 2 attempts") as error:
        reward(prompts=PROMPTS, completions=COMPLETIONS)
    assert str(error.value).count("samples") == 1  # named once, as a pair (not "samples 2 and 0: ... samples 2-0")
    server.script[:] = [Fault(status=503)]
    skipping = load_reward(server.url, protocol="genrm", on_error="skip", max_retries=0, timeout=5.0, max_concurrency=1)
    with caplog.at_level("WARNING", logger="rewardbridge.scorers.pairwise"):
        rewards = skipping(prompts=["Q"] * 3, completions=["a", "b c", "d e f"])
    # circular (0,1), (1,2), (2,0): the first one sent, (0,1), gets the 503: 0 and 1 are None; 2 is (3 + 3) / 2.
    assert rewards == [None, None, 3.0]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].count("samples") == 1 and "for samples 0 and 1;" in messages[0]


def test_a_group_of_one_is_refused_naming_num_generations(judge):
    server = judge()
    reward = load_reward(server.url, protocol="genrm", **FAST)
    with pytest.raises(ConfigError, match=r"1 of 2 prompt\(s\) have a single response.*num_generations"):
        reward(prompts=["Q1", "Q1", "Q2"], completions=["a", "b", "c"])
    assert server.requests == []  # refused before any request


def test_principle_and_principle_column_reach_the_judge(judge):
    server = judge()
    fixed = load_reward(server.url, protocol="genrm", principle="Be concise.", **FAST)
    fixed(prompts=["Q"] * 2, completions=["a", "b c"])
    roles = [[(m["role"], m["content"]) for m in json.loads(b)["messages"]] for _, _, b in server.requests]
    assert all(r[:2] == [("user", "Q"), ("principle", "Be concise.")] for r in roles)
    server.requests.clear()
    per_row = load_reward(server.url, protocol="genrm", principle_column="principle", **FAST)
    # Same prompt, two principles: two groups of two (the group is the prompt and its principle).
    rewards = per_row(prompts=["Q"] * 4, completions=["a", "b c", "a", "b c"], principle=["P1", "P1", "P2", "P2"])
    assert rewards == [1.0, 2.0, 1.0, 2.0] and len(server.requests) == 4
    assert Counter(json.loads(b)["messages"][1]["content"] for _, _, b in server.requests) == {"P1": 2, "P2": 2}
    with pytest.raises(InputError, match="principle_column 'principle' is not among the dataset columns"):
        per_row(prompts=["Q"] * 2, completions=["a", "b"], other=["x", "y"])


def test_chat_prompts_and_reasoning_policies(judge):
    server = judge()
    reward = load_reward(server.url, protocol="genrm", **FAST)
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    completions = [[{"role": "assistant", "content": "<think>long thoughts here</think>four"}], [{"role": "assistant", "content": ""}]]
    assert reward(prompts=[prompt, prompt], completions=completions) == [1.0, 1.0]  # "four" vs "None": 1|1 ties both ways
    sent = {pair for pair in compared(server)}
    assert sent == {("four", "None"), ("None", "four")}  # the answer without its reasoning; an empty one as "None"
    assert [m["role"] for m in json.loads(server.requests[0][2])["messages"]] == ["system", "user", "response_1", "response_2"]
    with pytest.raises(InputError, match="prompt ends with a 'assistant' message"):
        reward(prompts=[[*prompt, {"role": "assistant", "content": "Sure:"}]] * 2, completions=["a", "b"])


def test_a_policy_still_thinking_is_sent_as_no_answer_and_all_its_text_counts_as_reasoning(judge):
    server = judge()
    reward = load_reward(server.url, protocol="genrm", reasoning_length_penalty=1.0, **FAST)
    rewards = reward(prompts=["Q"] * 2, completions=["<think>still thinking about it", "four"])
    # The judge reads "None" for the unfinished one: (0,1) None|four ties 1|1, ranking 3 (4 chars <= 4) -> 1.5 | 0.5,
    # (1,0) four|None likewise -> 1.5 | 0.5: means 1.0, 1.0. Reasoning lengths 23 and 0: w = -0.5, +0.5.
    assert set(compared(server)) == {("None", "four"), ("four", "None")}
    assert rewards == [0.5, 1.5]


def test_a_verdict_off_the_judge_s_scale_is_asked_again(judge):
    from servers.judge import completion

    server = judge()
    off_scale = Fault(body=completion('```json\n{"score_1": 9, "score_2": 2, "ranking": 7}\n```'), headers={"Content-Type": "application/json"})
    server.script += [off_scale]
    reward = load_reward(server.url, protocol="genrm", name="g", **FAST)
    logged = {}
    rewards = reward(prompts=PROMPTS, completions=COMPLETIONS, log_metric=lambda k, v: logged.__setitem__(k, v))
    assert rewards == pytest.approx(expected(CIRCULAR), abs=1e-6)  # the off-scale answer was not used
    assert len(server.requests) == 9 + 1 and logged["g/parse_retries"] == 1
    server.script += [off_scale] * 4  # both comparisons of a pair, twice each: never a readable verdict
    once = load_reward(server.url, protocol="genrm", parse_retries=1, **FAST)
    with pytest.raises(RemoteError, match=r"could not be read after 2 attempt\(s\): score_1=9 is outside 1-5"):
        once(prompts=["Q"] * 2, completions=["a", "b"])


@pytest.mark.parametrize("options, message", [
    ({"reasoning_length_penalty": 0.3}, "reasoning_length_penalty=0.3 does nothing here"),
    ({"reasoning_length_penalty": 0.3, "reasoning_bonus": 0.5}, "reasoning_length_penalty=0.3 and reasoning_bonus=0.5 do nothing here"),
], ids=["penalty", "penalty+bonus"])
def test_a_reasoning_length_penalty_on_a_policy_that_never_reasons_warns_once(judge, options, message):
    from rewardbridge.errors import RewardBridgeWarning

    reward = load_reward(judge().url, protocol="genrm", **options, **FAST)
    with pytest.warns(RewardBridgeWarning, match=message):
        reward(prompts=["Q"] * 2, completions=["a", "b c"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reward(prompts=["Q"] * 2, completions=["a", "b c"])  # once per reward, not every step
        reward(prompts=["Q"] * 2, completions=["<think>x</think>a", "b c"])


def test_the_70b_principle_prompt_is_defined_once():
    from pathlib import Path

    import rewardbridge
    from rewardbridge.presets import NEMOTRON_70B_PRINCIPLE_PROMPT  # noqa: F401

    package = Path(rewardbridge.__file__).parent
    assert sum(p.read_text().count("NEMOTRON_70B_PRINCIPLE_PROMPT = ") for p in package.rglob("*.py")) == 1


def test_a_genrm_reward_pickles_and_scores_after(judge):
    server = judge()
    reward = pickle.loads(pickle.dumps(load_reward(server.url, protocol="genrm", pairs="all_pairs", **FAST)))
    assert reward(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(expected(ALL_PAIRS), abs=1e-6)


# -- the pointwise principle judge --------------------------------------------------------------------
# servers/judge.py: logprob(Yes) = -len(response)/100, logprob(No) = -1: reward 1 - len/100.


@pytest.mark.parametrize(
    "options, last_message, extra",
    [
        # Qwen3-Nemotron-32B-GenRM-Principle: a principle message; reasons, then answers (its tokens are " Yes"/" No";
        # this server spells them "Yes"/"No", so token_id says so).
        ({"model_name": "nvidia/Qwen3-Nemotron-32B-GenRM-Principle", "token_id": ["Yes", "No"]},
         {"role": "principle", "content": "correctness"}, {}),
        # Llama-3.3-Nemotron-70B-Reward-Principle: its card's question as a user turn, one token.
        ({"model_name": "nvidia/Llama-3.3-Nemotron-70B-Reward-Principle"},
         {"role": "user", "content": "Evaluate the response to the previous prompt in terms of whether it satisfies this "
                                     "principle: correctness. Only answer Yes or No."}, {"max_tokens": 1}),
    ],
    ids=["qwen3-32b-principle", "llama-70b-principle"],
)
def test_principle_judge_reads_the_yes_no_logprobs(judge, options, last_message, extra):
    server = judge()
    reward = load_reward(server.url, protocol="principle", principle="correctness", name="p", **FAST, **options)
    logged = {}
    rewards = reward(prompts=["2+2?", "2+2?"], completions=["four", "<think>hm</think>the answer is four"],
                     log_metric=lambda k, v: logged.__setitem__(k, v))
    assert rewards == pytest.approx([1 - 4 / 100, 1 - 18 / 100])  # the answer after reasoning: 18 characters
    bodies = [json.loads(b) for _, _, b in server.requests]
    assert sorted(b["messages"][-2]["content"] for b in bodies) == ["four", "the answer is four"]  # reasoning dropped
    body = bodies[0]
    assert body["messages"][-1] == last_message and body["messages"][-2]["role"] == "assistant"
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["temperature"] == 0.0
    assert all(body.get(k) == v for k, v in extra.items())
    assert logged["p/logprob_no_mean"] == -1.0 and logged["p/bounded_mean"] == 0.0


def test_principle_judge_bounds_a_token_missing_from_top_logprobs(judge):
    server = judge(drop_no=True)  # "No" not listed: its logprob is at most the smallest listed, "Maybe" at -6
    reward = load_reward(server.url, protocol="principle", principle="correctness", token_id=["Yes", "No"], **FAST)
    scores = reward.scorer.score([Conversation.from_trl("Q", "four")])
    assert float(scores.values[0]) == pytest.approx(-0.04 + 6.0)  # logprob(Yes) - (at most -6): a bound, said so
    assert float(scores.attributes["bounded"][0]) == 1.0


def test_principle_judge_reads_the_column_and_fails_without_an_answer_token(judge):
    server = judge()
    reward = load_reward(server.url, protocol="principle", principle_column="rule", token_id=[" Yes", " No"], parse_retries=1, **FAST)
    with pytest.raises(RemoteError, match=r"could not be read after 2 attempts: no ' Yes' or ' No' token among the 5 generated"):
        reward(prompts=["Q"], completions=["four"], rule=["correctness"])
    assert len(server.requests) == 2 and json.loads(server.requests[0][2])["messages"][-1]["content"] == "correctness"


# -- options, inspect -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(protocol="genrm", pairs="ring"), ConfigError, "pairs='ring' is not one of"),
        (dict(protocol="genrm", judges_per_pair=0), ConfigError, "judges_per_pair must be 1 or more"),
        (dict(protocol="genrm", judges_per_pair="2"), OptionTypeError, "judges_per_pair must be a whole number"),
        (dict(protocol="genrm", top_p=1.5), ConfigError, r"top_p must be in \(0, 1\]"),
        (dict(protocol="genrm", length_penalty=-0.1), ConfigError, "length_penalty must be 0 or more"),
        (dict(protocol="genrm", style_penalty=-0.05), ConfigError, "style_penalty must be 0 or more"),
        (dict(protocol="genrm", answer_bonus=-0.5), ConfigError, "answer_bonus must be 0 or more"),
        (dict(protocol="genrm", answer_bonus=0.5, top_percentile=0), ConfigError, r"top_percentile must be in \(0, 1\]"),
        (dict(protocol="genrm", reasoning_bonus=0.5, top_percentile=1.5), ConfigError, r"top_percentile must be in \(0, 1\]"),
        (dict(protocol="genrm", top_percentile=0.5), ConfigError, "top_percentile chooses who may earn answer_bonus or reasoning_bonus"),
        (dict(protocol="genrm", answer_bonus="0.5"), OptionTypeError, "answer_bonus must be a number"),
        (dict(protocol="nim", style_penalty=0.05), ConfigError, "option style_penalty is read only by protocol='genrm'"),
        (dict(protocol="genrm", principle="x", principle_column="p"), ConfigError, "not both"),
        (dict(protocol="genrm", on_parse_failure="zero"), ConfigError, "on_parse_failure='zero' is not one of"),
        (dict(protocol="genrm", normalize="reference", reference_column="r"), ConfigError, "normalize none, center, zscore or rank"),
        (dict(protocol="genrm", principle_prompt="Is it {principle}?"), ConfigError, "read only by protocol='principle'"),
        (dict(protocol="nim", pairs="all_pairs"), ConfigError, "option pairs is read only by protocol='genrm'"),
        (dict(protocol="vllm", temperature=0.6), ConfigError, "read only by protocol='genrm' or 'principle'"),
        (dict(protocol="principle"), ConfigError, "needs principle= .* or principle_column="),
        (dict(protocol="principle", principle="c", token_id=[9642, 2822]), ConfigError, r"token_id as the \(yes, no\) pair"),
        (dict(protocol="principle", principle="c", principle_prompt="no slot"), ConfigError, "must contain {principle}"),
        # Options a judge never reads: refused by name, with either judge (the judge's own template renders).
        *[(dict(protocol=p, principle="c", **{key: value}), ConfigError, rf"\['{key}'\] would be ignored: protocol='{p}'")
          for p in ("genrm", "principle")
          for key, value in (("system_prompt", "Be kind."), ("render", "chat"), ("chat_template", "{{ messages }}"))],
        *[(dict(protocol=p, principle="c", request_batch_size=8), ConfigError,
           rf"\['request_batch_size'\] do nothing with protocol='{p}': each request holds one") for p in ("genrm", "principle")],
        # OpenAI's range for temperature is 0-2.
        (dict(protocol="genrm", temperature=50), ConfigError, r"temperature must be in \[0, 2\]"),
        (dict(protocol="principle", principle="c", temperature=-0.1), ConfigError, r"temperature must be in \[0, 2\]"),
        (dict(protocol="genrm", group_size=1), ConfigError, "group_size must be 2 or more"),
        (dict(protocol="principle", principle="c", group_size=4), ConfigError, "option group_size is read only by protocol='genrm'"),
    ],
)
def test_bad_judge_options_are_refused_before_any_request(options, error, message):
    with pytest.raises(error, match=message):
        load_reward("http://127.0.0.1:9", **options)


def test_judge_options_on_a_local_model_are_refused(no_weights):
    with pytest.raises(ConfigError, match="read only by protocol='genrm'"):
        load_reward("org/local-reward-model", pairs="all_pairs")


def test_a_missing_key_variable_is_a_config_error_not_a_skipped_comparison(judge, monkeypatch):
    monkeypatch.delenv("JUDGE_KEY", raising=False)
    reward = load_reward(judge().url, protocol="genrm", api_key_env="JUDGE_KEY", on_error="skip", **FAST)
    with pytest.raises(ConfigError, match="api_key_env='JUDGE_KEY', but that environment variable is not set"):
        reward(prompts=["Q", "Q"], completions=["a", "b"])


def test_temperature_at_the_top_of_openai_s_range_is_sent(judge):
    server = judge()
    load_reward(server.url, protocol="genrm", temperature=2, **FAST)(prompts=["Q"] * 2, completions=["a", "b"])
    assert {json.loads(b)["temperature"] for _, _, b in server.requests} == {2}


@pytest.mark.parametrize("protocol", ["genrm", "principle"])
def test_inspect_shows_only_what_the_judge_is_sent(protocol):
    resolved = resolve("http://judge:8000", protocol=protocol, principle="Be brief.")
    rows = resolved.describe()
    labels = [label for label, _ in rows]
    assert labels.count("example") == 1 and "judge request" not in labels and labels.count("input") == 1
    example = dict(rows)["example"]
    # The example is the request the client really sends (not a [user, assistant] pair the judge never sees).
    from rewardbridge.protocols import protocol_module

    codec = protocol_module(protocol).CLIENT(resolved.options)
    if protocol == "genrm":
        sent = codec.request([{"role": "user", "content": "What is 2+2?"}], "4", "5", "Be brief.")
    else:
        sent = codec.request([(Conversation([{"role": "user", "content": "What is 2+2?"}], ({"role": "assistant", "content": "4"},)),
                               "Be brief.")])
    assert example == repr(sent.json["messages"])
    assert "request_batch_size" not in resolved.format()  # one comparison / response per request: no batch to size
    assert "worst case" in labels


def test_inspect_describes_the_judge():
    text = resolve("http://judge:8000", protocol="genrm", pairs="all_pairs", length_penalty=0.35, principle="Be brief.").format()
    assert "genrm: POST /v1/chat/completions per comparison" in text
    assert "all_pairs: N(N-1)/2 comparisons per prompt" in text and "length_penalty 0.35" in text
    assert "temperature 0.6, top_p 0.95, max_tokens 16384" in text
    # timeout 60, retry_budget 120 (max_retries unset), parse_retries 3: 4 x (120 + 60) = 720 s.
    assert re.search(r"worst case +720 s before a hung comparison fails", text)
    assert "{'role': 'principle', 'content': 'Be brief.'}, {'role': 'response_1', 'content': '4'}" in text


# -- the other ways in: score, train, inspect ----------------------------------------------------------


def test_score_refuses_a_pairwise_judge_and_points_at_eval(judge, tmp_path):
    from rewardbridge.jobs.score import score_file

    server = judge()
    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": "Q", "completion": "a"}) + "\n")
    with pytest.raises(ConfigError, match="needs all of them at once; evaluate a pairwise judge with `rewardbridge eval`"):
        score_file(server.url, str(tmp_path / "rows.jsonl"), str(tmp_path / "out.jsonl"), options={"protocol": "genrm"})
    assert server.requests == [] and not (tmp_path / "out.jsonl").exists()


def test_a_recipe_with_a_pairwise_judge_and_a_held_out_check_is_refused(tmp_path):
    from rewardbridge.training.recipe import parse_recipe

    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "Q"}) + "\n")
    recipe = {"trainer": "grpo", "model": {"path": "org/policy"}, "dataset": {"path": "p.jsonl"},
              "rewards": [{"source": "http://judge:8000", "protocol": "genrm"}], "evaluation": {"prompts": "p.jsonl"}}
    with pytest.raises(ConfigError, match="a pairwise judge \\(protocol='genrm'\\) compares several answers"):
        parse_recipe(recipe, base_dir=tmp_path)


@pytest.mark.parametrize("caller", ["verl", "OpenRLHF"])
def test_engines_that_score_one_sample_per_call_refuse_a_pairwise_judge(caller):
    from rewardbridge.integrations.shared import shared_reward

    with pytest.raises(ConfigError, match=f"{caller} scores one sample per call"):
        shared_reward("http://judge:8000", {"protocol": "genrm"}, caller=caller)


# -- TRL: GRPO unchanged, and groups split across two processes -------------------------------------


def test_grpo_trains_two_steps_with_a_genrm_reward(judge, causal_dir, tmp_path):
    from test_trl import train

    server = judge()
    reward = load_reward(server.url, protocol="genrm", name="genrm", length_penalty=0.35, normalize="zscore", **FAST)
    logs = train("grpo", causal_dir, [reward], True, tmp_path)  # GRPOTrainer(reward_funcs=[reward]), 2 steps, G = 2
    steps = [entry for entry in logs if "rewards/genrm/mean" in entry]
    assert len(steps) == 2
    # 4 completions per step in 2 groups of 2: circular gives (0,1) and (1,0) per group: 4 comparisons a step.
    assert [entry["genrm/comparisons"] for entry in steps] == [4.0, 4.0] and len(server.requests) == 8
    assert all(entry["genrm/failed_frac"] == 0.0 for entry in steps)


@pytest.mark.multiprocess
def test_groups_split_across_two_ranks_score_as_one_process_and_each_comparison_runs_once(judge, causal_dir, tmp_path):
    from conftest import torchrun
    from rewardbridge.comparisons import comparison_pairs
    from rewardbridge.groups import group_indices

    direct, grpo = judge(), judge()
    torchrun("genrm_split_groups.py", causal_dir, direct.url, grpo.url, str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    def plan(prompts, completions):
        """The comparisons one process makes for these rows: circular within each prompt, groups by first appearance."""
        groups = group_indices(prompts)
        return Counter((completions[g[i]], completions[g[j]]) for g in groups for i, j, _ in comparison_pairs("circular", len(g)))

    # Direct call: rank 0 holds Q1 x2 + Q2, rank 1 Q2 x2 + Q1 + Q3 x2 (3 and 5 rows).
    prompts = ranks[0]["direct"]["prompts"] + ranks[1]["direct"]["prompts"]
    completions = ranks[0]["direct"]["completions"] + ranks[1]["direct"]["completions"]
    one_process = load_reward(judge().url, protocol="genrm", **FAST)(prompts=prompts, completions=completions)
    assert ranks[0]["direct"]["rewards"] + ranks[1]["direct"]["rewards"] == pytest.approx(one_process)
    # Q1 = [yes, it is four, the answer is four]: (0,1) 1|3, (1,2) 3|4, (2,0) 4|1 -> 1, 3, 4;
    # Q2 = [a, b c, d e f g h i] -> 1, 2, 5; Q3 = [j k, l m n]: (0,1) 2|3, (1,0) 3|2 -> 2, 3.
    assert one_process == [1.0, 3.0, 1.0, 2.0, 5.0, 4.0, 2.0, 3.0]
    assert Counter(compared(direct)) == plan(prompts, completions)  # every comparison once, none twice
    assert sum(plan(prompts, completions).values()) == 3 + 3 + 2

    # GRPO (per_device_train_batch_size=3, num_generations=2: TRL splits groups across the ranks), group_size=2:
    # the groups are TRL's, each 2 consecutive rows of the gathered order, whatever the prompts repeat.
    calls = list(zip(ranks[0]["grpo"], ranks[1]["grpo"]))
    assert len(calls) == 2
    split = repeated = 0
    expected_pairs = Counter()
    for rank0, rank1 in calls:
        prompts = [json.dumps(p) for p in rank0["prompts"] + rank1["prompts"]]
        completions = [json.dumps(c) for c in rank0["completions"] + rank1["completions"]]
        split += len(set(map(json.dumps, rank0["prompts"])) & set(map(json.dumps, rank1["prompts"])))
        reference = load_reward(judge().url, protocol="genrm", normalize="zscore", group_size=2, **FAST)
        alone = reference(prompts=rank0["prompts"] + rank1["prompts"], completions=rank0["completions"] + rank1["completions"])
        assert rank0["rewards"] + rank1["rewards"] == pytest.approx(alone, abs=1e-5)
        groups = [list(range(start, start + 2)) for start in range(0, len(prompts), 2)]
        assert all(prompts[g[0]] == prompts[g[1]] for g in groups)  # TRL's groups: one prompt each
        repeated += len({prompts[g[0]] for g in groups}) < len(groups)
        for g in groups:
            for i, j, _ in comparison_pairs("circular", len(g)):
                first, second = (json.loads(completions[g[k]]) for k in (i, j))
                expected_pairs[(first[0]["content"] if isinstance(first, list) else first,
                                second[0]["content"] if isinstance(second, list) else second)] += 1
    assert split >= 1  # at least one group really was split across the two processes
    assert repeated >= 1  # and one batch held a question twice (seed 0: 3 groups, 2 questions), judged as 2 groups
    assert Counter(compared(grpo)) == expected_pairs and len(grpo.requests) == sum(expected_pairs.values())
    assert ranks[0]["logged"] and all(entry["genrm/comparisons"] > 0 for entry in ranks[0]["logged"])


def test_the_worked_example_in_the_docs():
    # docs/genrm.md: 4 responses to "How many legs does a spider have?", circular, length_penalty 0.35.
    texts = ["Eight.", "A spider has eight legs.", "A spider has eight legs, in four pairs on its cephalothorax.", "Six."]
    judged = [(0, 1, Judgement(4, 4, 4)), (1, 2, Judgement(4, 5, 5)), (2, 3, Judgement(5, 1, 1)), (3, 0, Judgement(1, 4, 6))]
    assert fold(4, judged).rewards == [3.75, 4.25, 5.0, 1.0]
    assert [round(w, 4) for w in length_weights([len(t) for t in texts])] == [0.3125, -0.0089, -0.6518, 0.3482]
    assert [round(r, 3) for r in fold(4, judged, texts, length_penalty=0.35).rewards] == [3.859, 4.247, 4.772, 1.122]
