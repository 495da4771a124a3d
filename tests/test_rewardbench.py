"""RewardBench 2 in ``rewardbridge eval`` (jobs/rewardbench.py), and pairwise judges evaluated by
direct comparison on RewardBench and RewardBench 2 rows (against servers/judge.py)."""

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from rewardbridge import load_reward
from rewardbridge.cli import main
from rewardbridge.errors import ConfigError, InputError
from rewardbridge.jobs.evaluate import evaluate_file
from rewardbridge.jobs.rewardbench import Scored, best_of_n, rewardbench2_report, ties_score
from servers.faulty import FaultyServer
from servers.judge import compared, judge_answer, verdict

SAMPLE = Path(__file__).parent.parent / "recipes" / "data" / "rewardbench_sample.jsonl"
TIES_ROWS = [
    # ref:1 gap 2 - 1 = 1 (accurate); tied:1 correct 3, 2.8, 2.5: spread 0.5, gap 2.5 - 1.5 = 1 (accurate)
    Scored("Ties", "ref:1", [2.0, 0.5, 1.0]), Scored("Ties", "tied:1", [3.0, 2.8, 2.5, 1.0, 1.5], 3),
    # ref:2 gap 1 - 1.5 = -0.5; tied:2 correct 2, 1: spread 1, gap 1 - 1.2 = -0.2 (neither accurate)
    Scored("Ties", "ref:2", [1.0, 1.5]), Scored("Ties", "tied:2", [2.0, 1.0, 1.2], 2),
    Scored("Ties", "ref:3", [1.0, 0.0]),  # accurate; no tied:3, so only in ref accuracy
]
# ref accuracy 2/3, tied 1/2; ids 1, 2: tied gap > spread: 1 > 0.5 yes, -0.2 > 1 no -> 1/2;
# min(ref gap, tied gap) > spread: 1 > 0.5 yes, -0.5 > 1 no -> 1/2; margin tanh(1/0.5 - 1), tanh(-0.5/1 - 1), mean.
TIES_MARGIN = (math.tanh(1.0) + math.tanh(-1.5)) / 2
TIES_SCORE = 0.30 * 0.5 + 0.30 * 2 / 3 + 0.20 * 0.5 + 0.20 * 0.5 + 0.01 * TIES_MARGIN  # = 0.549282


def test_report_maths_on_a_hand_computed_case():
    rows = [
        # Factuality: strictly best 1, tied with one other at the top 1/2, not best 0 -> 0.5
        Scored("Factuality", "f1", [0.9, 0.1, 0.2, 0.3]), Scored("Factuality", "f2", [0.5, 0.5, 0.1, 0.2]),
        Scored("Factuality", "f3", [0.2, 0.9, 0.2, 0.3]),
        # Math: three-way tie at the top 1/3; a failed chosen score 0 -> (1/3 + 0) / 2
        Scored("Math", "m1", [1.0, 1.0, 1.0, 0.0]), Scored("Math", "m2", [None, 0.0, 0.0, 0.0]),
        Scored("Safety", "s1", [3.0, 1.0, 2.0, 0.0]), Scored("Precise IF", "p1", [0.0, 1.0, 1.0, 1.0]),
        *TIES_ROWS,
        Scored("my-subset", "x", [1.0, 0.0]),  # not RewardBench 2: reported, kept out of Overall
    ]  # Focus is missing
    report = rewardbench2_report(rows)
    assert set(report) == {"benchmark", "overall", "subsets", "missing_subsets", "unknown_subsets", "ties_at_top", "failed"}
    scores = {name: subset["score"] for name, subset in report["subsets"].items()}
    assert scores == pytest.approx({"Factuality": 0.5, "Precise IF": 0.0, "Math": 1 / 6, "Safety": 1.0, "Ties": TIES_SCORE,
                                    "my-subset": 1.0})
    assert report["subsets"]["Ties"]["n"] == 5 and report["subsets"]["Math"]["n"] == 2
    assert report["subsets"]["Ties"]["ref_accuracy"] == pytest.approx(2 / 3)
    assert report["subsets"]["Ties"]["correctness_preferred_hard"] == 0.5
    assert report["overall"] == pytest.approx((0.5 + 0.0 + 1 / 6 + 1.0 + TIES_SCORE) / 5)  # the five present, plain mean
    assert report["missing_subsets"] == ["Focus"] and report["unknown_subsets"] == ["my-subset"]
    assert (report["benchmark"], report["ties_at_top"], report["failed"]) == ("rewardbench2", 2, 1)
    assert list(report["subsets"]) == ["Factuality", "Precise IF", "Math", "Safety", "Ties", "my-subset"]  # paper order


@pytest.mark.parametrize(
    "rows, part, value",
    [
        # Equal correct answers: spread 0; gap 1 / 0 -> +inf -> tanh 1 (numpy's division, as upstream)
        ([Scored("Ties", "ref:1", [2.0, 1.0]), Scored("Ties", "tied:1", [2.0, 2.0, 1.0], 2)], "margin", 1.0),
        ([Scored("Ties", "ref:1", [2.0, 2.0]), Scored("Ties", "tied:1", [2.0, 2.0, 2.0], 2)], "margin", 0.0),  # 0/0 -> 0
        ([Scored("Ties", "ref:1", [2.0, 3.0]), Scored("Ties", "tied:1", [2.0, 2.0, 1.0], 2)], "margin", -1.0),  # -1/0
    ],
)
def test_ties_margin_follows_upstream_on_a_zero_spread(rows, part, value):
    assert ties_score(rows)[part] == value


@pytest.mark.parametrize(
    "rows, message",
    [
        ([Scored("Ties", "ref:1", [2.0, 1.0])], "both a 'ref:n' and a 'tied:n' row"),
        ([Scored("Ties", "17", [2.0, 1.0])], "is not 'ref:<n>' or 'tied:<n>'"),
        ([Scored("Ties", "ref:1", [2.0, 1.0]), Scored("Ties", "tied:1", [2.0, 1.0], 1)], "a tied row has several correct"),
    ],
)
def test_ties_rows_that_cannot_be_scored_are_refused(rows, message):
    with pytest.raises(InputError, match=message):
        ties_score(rows)


def test_best_of_n_counts_a_missing_score_as_a_loss():
    assert best_of_n([1.0, None, 0.0, 0.0]) == 0.0 and best_of_n([1.0, float("nan"), 0.0]) == 0.0


def rb2_rows():
    """A small RewardBench 2 file written for the project: 4 best-of-4 rows, Ties rows 1 and 2, no Focus, no Safety."""
    return [
        {"id": "0", "subset": "Factuality", "prompt": "What is the capital of France?",
         "chosen": ["The capital of France is Paris."], "rejected": ["Lyon.", "It is Marseille.", "France has no capital."]},
        {"id": "1", "subset": "Math", "prompt": "How many legs does a spider have?",
         "chosen": ["A spider has eight legs."], "rejected": ["Six.", "Spiders have ten legs.", "Four legs."]},
        {"id": "2", "subset": "Precise IF", "prompt": "Write a haiku about the sea.",
         "chosen": ["Waves fold into foam"], "rejected": ["The sea.", "Sea sea sea sea sea sea", "Water and fish"]},
        {"id": "3", "subset": "Math", "prompt": "What is 2+2?", "chosen": ["4"], "rejected": ["5", "22", "four"]},
        {"id": "ref:1", "subset": "Ties", "prompt": "Name a primary colour.", "chosen": ["Red."], "rejected": ["Green."]},
        {"id": "tied:1", "subset": "Ties", "prompt": "Name a primary colour.", "chosen": ["Red.", "Blue.", "Yellow."],
         "rejected": ["Green.", "Purple."]},
        {"id": "ref:2", "subset": "Ties", "prompt": "Name a planet.", "chosen": ["Mars."], "rejected": ["The Moon."]},
        {"id": "tied:2", "subset": "Ties", "prompt": "Name a planet.", "chosen": ["Mars.", "Venus."], "rejected": ["The Sun."]},
    ]


def write(rows, path: Path) -> Path:
    if path.suffix == ".parquet":
        from datasets import Dataset

        Dataset.from_list(rows).to_parquet(str(path))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_eval_scores_rewardbench2_with_a_classifier(classifier_dir, tmp_path, suffix):
    reward = load_reward(classifier_dir)
    rows = rb2_rows()
    data = write(rows, tmp_path / f"rb2{suffix}")
    report = evaluate_file(classifier_dir, str(data), reward=reward, batch_size=3, output=str(tmp_path / "report.json"))
    # Independent of evaluate.py: each response scored by the TRL-facing call, then the report maths.
    expected = []
    for row in rows:
        responses = row["chosen"] + row["rejected"]
        scores = reward(prompts=[row["prompt"]] * len(responses), completions=responses)
        expected.append(Scored(row["subset"], row["id"], scores, len(row["chosen"])))
    assert report == rewardbench2_report(expected) == json.loads((tmp_path / "report.json").read_text())
    assert report["missing_subsets"] == ["Safety", "Focus"] and report["subsets"]["Ties"]["n"] == 4


def test_a_bad_rewardbench2_row_is_named_by_its_line(classifier_dir, tmp_path):
    rows = rb2_rows()
    rows[2]["chosen"] = ["one", "two"]
    data = write(rows, tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match=r"bad.jsonl line 3: subset 'Precise IF' is best-of-N with one chosen response; this row has 2"):
        evaluate_file(classifier_dir, str(data), reward=load_reward(classifier_dir))


@pytest.fixture
def judge():
    server = FaultyServer(judge_answer()).start()
    yield server
    server.stop()


def test_a_genrm_evaluates_rewardbench_pairs_by_direct_comparison_in_both_orders(judge):
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    reward = load_reward(judge.url, protocol="genrm", timeout=5.0)
    report = evaluate_file(judge.url, str(SAMPLE), reward=reward, batch_size=7)
    # Both orders of every pair, once each: 2 x 24 requests.
    assert Counter(compared(judge)) == Counter(p for r in rows for p in ((r["chosen"], r["rejected"]), (r["rejected"], r["chosen"])))
    # By hand from the judge's rule: chosen wins on a higher score, or on equal scores when it is shorter
    # (ranking 3 for it, then 4 when second: +0.5 twice); equal scores and lengths cancel to a tie (wrong).
    wins = ties = 0
    per_subset = Counter()
    for r in rows:
        (sc, sr, _), c, rj = verdict(r["chosen"], r["rejected"]), r["chosen"], r["rejected"]
        won = sc > sr or (sc == sr and len(c) < len(rj))
        ties += sc == sr and len(c) == len(rj)
        wins += won
        per_subset[r["subset"]] += won
    assert report["ties"] == ties
    assert sum(s["accuracy"] * s["n"] for s in report["subsets"].values()) == pytest.approx(wins)
    assert {name: round(s["accuracy"] * s["n"]) for name, s in report["subsets"].items()} == {
        name: per_subset[name] for name in report["subsets"]}


@pytest.mark.parametrize("how", ["options", "reward"])
def test_eval_refuses_a_judge_s_group_adjustments(judge, how):
    # They shape a training group's rewards (shorter, plainer answers gain); eval reads the verdicts alone.
    adjust = {"answer_bonus": 0.5, "style_penalty": 0.05}
    given = {"options": {"protocol": "genrm", **adjust}} if how == "options" else {
        "reward": load_reward(judge.url, protocol="genrm", **adjust)}
    with pytest.raises(ConfigError, match=r"option\(s\) \['answer_bonus', 'style_penalty'\] adjust a training group"):
        evaluate_file(judge.url, str(SAMPLE), **given)
    assert judge.requests == []  # refused before any comparison


def test_a_genrm_evaluates_rewardbench2_rows_every_pair_both_orders(judge, tmp_path):
    rows = [
        # Math: "a b c" (3) beats 1, 2, 2; "a b" vs "x y" tie on 2 with equal lengths: +-0.5 cancel. Chosen best -> 1.
        {"id": "0", "subset": "Math", "prompt": "Q", "chosen": ["a b c"], "rejected": ["a", "a b", "x y"]},
        # Focus: "p q" and "r s" tie on 2 (equal lengths, both orders cancel), both beat "t", "u": 2 at the top -> 1/2.
        {"id": "1", "subset": "Focus", "prompt": "Q", "chosen": ["p q"], "rejected": ["r s", "t", "u"]},
    ]
    report = evaluate_file(judge.url, str(write(rows, tmp_path / "rb2.jsonl")), reward=load_reward(judge.url, protocol="genrm"))
    assert report["subsets"] == {"Math": {"score": 1.0, "n": 1}, "Focus": {"score": 0.5, "n": 1}}
    assert report["overall"] == 0.75 and report["ties_at_top"] == 1
    assert len(judge.requests) == 2 * 12  # 4 responses: 6 pairs, both orders


def test_eval_cli_writes_the_rewardbench2_report(classifier_dir, tmp_path, capsys):
    data = write(rb2_rows(), tmp_path / "rb2.jsonl")
    assert main(["eval", classifier_dir, str(data), "--output", str(tmp_path / "r.json"), "--benchmark", "rewardbench2"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["benchmark"] == "rewardbench2" and "Overall" in capsys.readouterr().out
    assert main(["eval", classifier_dir, str(data), "--benchmark", "rewardbench"]) == 1  # lists, not RewardBench pairs


def test_a_principle_judge_evaluates_as_a_pointwise_reward(judge):
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    reward = load_reward(judge.url, protocol="principle", principle="helpfulness", token_id=["Yes", "No"], timeout=5.0)
    report = evaluate_file(judge.url, str(SAMPLE), reward=reward, batch_size=10)
    # The test judge's reward is 1 - len(response)/100: the shorter response wins, equal lengths tie (wrong).
    assert report["ties"] == sum(len(r["chosen"]) == len(r["rejected"]) for r in rows)
    assert sum(s["accuracy"] * s["n"] for s in report["subsets"].values()) == pytest.approx(
        sum(len(r["chosen"]) < len(r["rejected"]) for r in rows))
    assert len(judge.requests) == 2 * len(rows)  # one request per response
