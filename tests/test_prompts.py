"""HelpSteer2-Preference prompt preparation on a sample file in the dataset's own format."""

import json
from pathlib import Path

import pytest

from rewardbridge.errors import InputError
from rewardbridge.training.prompts import helpsteer2_preference_prompts, load_prompts, read_rows
from rewardbridge.training.recipe import DatasetSpec

SAMPLE = Path(__file__).parent / "data" / "helpsteer2_preference_sample.jsonl"


def test_train_split_multi_turn_messages_and_no_duplicates():
    rows = read_rows(str(SAMPLE))
    prompts = helpsteer2_preference_prompts(rows)
    # 8 rows: 2 validation rows dropped, "list vs tuple" and "Hamlet" appear twice each -> 4 distinct train prompts.
    assert len(prompts) == 4
    firsts = [p["prompt"][0]["content"] for p in prompts]
    assert firsts == [  # first-seen order
        "What is the difference between a list and a tuple in Python?",
        "Write a haiku about autumn.",
        "Summarize the plot of Hamlet in one sentence.",
        "I need a name for my cat.",
    ]
    assert "Name three prime numbers." not in firsts and "What is the capital of Australia?" not in firsts
    haiku = prompts[1]["prompt"]
    assert [m["role"] for m in haiku] == ["user", "assistant", "user"]
    assert haiku[1]["content"] == "Leaves drift on cold wind,\nthe maple lets go of red,\nquiet fields of rust."
    assert haiku[2]["content"] == "Now one about winter."
    cat = prompts[3]["prompt"]
    assert [m["role"] for m in cat] == ["user", "assistant", "user", "assistant", "user"]
    assert cat[-1]["content"] == "Shorter than that."


def test_validation_split_on_request():
    prompts = helpsteer2_preference_prompts(read_rows(str(SAMPLE)), split="validation")
    assert [p["prompt"] for p in prompts] == [
        [{"role": "user", "content": "Name three prime numbers."}],
        [{"role": "user", "content": "What is the capital of Australia?"}],
    ]


def test_load_prompts_gives_trl_a_prompt_column():
    dataset = load_prompts(DatasetSpec(path=str(SAMPLE), format="helpsteer2_preference", limit=3))
    assert dataset.column_names == ["prompt"]
    assert len(dataset) == 3
    assert dataset[1]["prompt"][2] == {"role": "user", "content": "Now one about winter."}


def test_rows_without_the_columns_name_what_is_missing(tmp_path):
    with pytest.raises(InputError, match=r"row 0 lacks split.*nvidia/HelpSteer2"):
        helpsteer2_preference_prompts([{"prompt": "Hi"}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a"}) + "\n{not json\n")
    with pytest.raises(InputError, match=r"bad.jsonl:2: not a JSON object"):
        read_rows(str(bad))
