"""``rewardbridge eval``: the RewardBench report maths on a hand-computed case, and real runs."""

import json
from pathlib import Path

import pytest

from rewardbridge import load_reward
from rewardbridge.cli import main
from rewardbridge.errors import InputError
from rewardbridge.jobs.evaluate import SECTIONS, evaluate_file, rewardbench_report

SAMPLE = Path(__file__).parent.parent / "recipes" / "data" / "rewardbench_sample.jsonl"
REPORT_KEYS = {"benchmark", "overall", "sections", "subsets", "unknown_subsets", "ties"}


def test_report_maths_on_a_hand_computed_case():
    pairs = (
        # alpacaeval-easy: 3 of 4 right (a tie is wrong) -> 0.75
        [("alpacaeval-easy", 1.0, 0.0)] * 3 + [("alpacaeval-easy", 0.2, 0.2)]
        # mt-bench-med: 1 of 2 -> 0.5
        + [("mt-bench-med", 2.0, 1.0), ("mt-bench-med", 1.0, 2.0)]
        # refusals-dangerous: 1 of 1; donotanswer: 0 of 1 (a tie)
        + [("refusals-dangerous", 0.5, -0.5), ("donotanswer", 3.0, 3.0)]
        # math-prm 1 of 2, hep-go 1 of 1
        + [("math-prm", 1.0, 0.0), ("math-prm", None, 0.0), ("hep-go", 5.0, 4.0)]
        # not RewardBench: reported, kept out of the sections
        + [("my-subset", 0.0, 1.0)] * 2
    )
    report = rewardbench_report(pairs)
    assert set(report) == REPORT_KEYS
    chat = (0.75 * 100 + 0.5 * 40) / (100 + 40)  # weights: alpacaeval-easy 100, mt-bench-med 40 = 0.678571
    safety = (1.0 * 100 + 0.0 * 136) / (100 + 136)  # refusals-dangerous 100, donotanswer 136 = 0.423729
    reasoning = (0.5 * 984 + 1.0 * 164) / (984 + 164)  # math-prm 984 (upweighted), hep-go 164 = 0.571429
    assert report["sections"] == pytest.approx({"Chat": chat, "Safety": safety, "Reasoning": reasoning})
    assert "Chat Hard" not in report["sections"]  # no subset of it present
    assert report["overall"] == pytest.approx((chat + safety + reasoning) / 3)  # plain mean of sections present
    assert report["subsets"]["alpacaeval-easy"] == {"accuracy": 0.75, "n": 4}
    assert report["subsets"]["math-prm"] == {"accuracy": 0.5, "n": 2}  # a missing score is wrong
    assert report["subsets"]["my-subset"] == {"accuracy": 0.0, "n": 2}
    assert report["unknown_subsets"] == ["my-subset"]
    assert report["ties"] == 2


def test_section_weights_are_rewardbench_example_counts():
    totals = {section: sum(weights.values()) for section, weights in SECTIONS.items()}
    # REFERENCE.md §5: Chat 358, Chat Hard 456, Safety 740, Reasoning 984 + 6 x 164.
    assert totals == {"Chat": 358, "Chat Hard": 456, "Safety": 740, "Reasoning": 984 + 6 * 164}


def test_only_unknown_subsets_give_the_mean_of_their_accuracies():
    report = rewardbench_report([("a", 1.0, 0.0), ("b", 0.0, 1.0), ("b", 1.0, 0.0)])
    assert report["sections"] == {} and report["unknown_subsets"] == ["a", "b"]
    assert report["overall"] == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(InputError, match="no pairs"):
        rewardbench_report([])


def scored_pairs(reward, rows):
    """Independent of evaluate.py: score chosen and rejected with the TRL-facing call."""
    chosen = reward(prompts=[r["prompt"] for r in rows], completions=[r["chosen"] for r in rows])
    rejected = reward(prompts=[r["prompt"] for r in rows], completions=[r["rejected"] for r in rows])
    return chosen, rejected


@pytest.mark.parametrize(
    "fixture, options",
    [
        ("classifier_dir", {}),
        ("causal_dir", {"token_id": 0}),
        ("pair_rm_dir", {"trust_remote_code": True}),
        ("armorm_dir", {"trust_remote_code": True}),
    ],
)
def test_eval_on_the_sample_for_every_kind(fixture, options, request, tmp_path):
    source = request.getfixturevalue(fixture)
    reward = load_reward(source, **options)
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    report = evaluate_file(source, str(SAMPLE), output=str(tmp_path / "report.json"), reward=reward, batch_size=5)
    assert json.loads((tmp_path / "report.json").read_text()) == report and set(report) == REPORT_KEYS
    chosen, rejected = scored_pairs(reward, rows)
    for subset in {r["subset"] for r in rows}:
        index = [i for i, r in enumerate(rows) if r["subset"] == subset]
        # Strict: a tie is wrong. Batching moves scores by ~1e-7, so a near-tie (identical token
        # ids after the tiny vocabulary's [UNK]s) may fall either way: bound the count by both.
        surely = sum(chosen[i] > rejected[i] + 1e-5 for i in index)
        maybe = sum(chosen[i] > rejected[i] - 1e-5 for i in index)
        assert report["subsets"][subset]["n"] == len(index)
        assert surely <= round(report["subsets"][subset]["accuracy"] * len(index)) <= maybe
    assert set(report["sections"]) == {"Chat", "Chat Hard", "Safety", "Reasoning"}
    assert report["unknown_subsets"] == ["my-custom-subset"]


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory):
    """The committed JSONL sample, and the same rows as JSON (lines), CSV, Parquet and a save_to_disk folder."""
    from datasets import Dataset

    folder = tmp_path_factory.mktemp("rewardbench")
    dataset = Dataset.from_list([json.loads(line) for line in SAMPLE.read_text().splitlines()])
    dataset.to_json(str(folder / "sample.json"))
    dataset.to_csv(str(folder / "sample.csv"), index=False)
    dataset.to_parquet(str(folder / "sample.parquet"))
    dataset.save_to_disk(str(folder / "saved"))
    return {"jsonl": SAMPLE, "json": folder / "sample.json", "csv": folder / "sample.csv",
            "parquet": folder / "sample.parquet", "save_to_disk": folder / "saved"}


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet", "save_to_disk"])
def test_eval_reads_every_format_and_the_cli_writes_the_report(fmt, sample_files, classifier_dir, tmp_path, capsys):
    expected = evaluate_file(classifier_dir, str(sample_files["jsonl"]), reward=load_reward(classifier_dir))
    code = main(["eval", classifier_dir, str(sample_files[fmt]), "--output", str(tmp_path / "r.json")])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report == expected and report["subsets"]["math-prm"]["n"] == 2  # same pairs, same report
    assert "Chat Hard" in capsys.readouterr().out  # the table on screen


def test_eval_names_the_bad_row(classifier_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c", "subset": "x"}) + "\n"
                    + json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl line 2: has no string 'subset' column"):
        evaluate_file(classifier_dir, str(data), reward=load_reward(classifier_dir))


@pytest.mark.parametrize("content, words", [
    (json.dumps({"prompt": "Q?", "completion": "A."}) + "\n", "line 1"),  # scoring rows, not pairs
    ("\ufeff" + json.dumps({"Prompt": "Q?", "chosen": "A.", "rejected": "B."}) + "\n", "line 1"),  # a BOM, and a column's case
], ids=["not-pairs", "bom-and-case"])
def test_eval_reads_the_first_row_before_any_weights(content, words, classifier_dir, tmp_path, no_weights):
    from rewardbridge.errors import InputError
    from rewardbridge.jobs.evaluate import evaluate_file

    data = tmp_path / "pairs.jsonl"
    data.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=words):  # before: after "Loading weights"
        evaluate_file(classifier_dir, str(data))
