"""``--set`` (training/overrides.py) and ``--option`` (cli.parse_options) read a value by one rule
(yaml12.parse_setting): null clears any key, a prompt or a template is the text as typed, a text
option keeps a number as text, the rest is YAML 1.2."""

import pytest

from rewardbridge.cli import parse_options
from rewardbridge.training.overrides import apply_override
from rewardbridge.training.recipe import load_recipe

CASES = [  # (key, typed, value)
    ("gguf_file", "null", None),  # a text option cleared: not the file name 'null'
    ("gguf_file", "~", None),
    ("model_name", "NULL", None),
    ("judge_prompt", "null", None),
    ("gguf_file", "model.Q4_1.gguf", "model.Q4_1.gguf"),
    ("judge_prompt", "Q: {prompt} A: {response}", "Q: {prompt} A: {response}"),  # YAML would read a mapping
    ("system_prompt", "Be brief: one line.", "Be brief: one line."),
    ("principle", "helpfulness: be useful, not long", "helpfulness: be useful, not long"),
    ("chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}", "{% for m in messages %}{{ m['content'] }}{% endfor %}"),
    ("name", "2024", "2024"),  # a text option: a number typed for it stays text
    ("name", "on", "on"),  # YAML 1.2: only true/false are booleans
    ("max_length", "4096", 4096),
    ("timeout", "1e3", 1000.0),
    ("token_id", "[Yes, No]", ["Yes", "No"]),
]


@pytest.mark.parametrize("key, typed, value", CASES, ids=[f"{k}={t}" for k, t, _ in CASES])
def test_option_and_set_read_a_value_alike(key, typed, value):
    assert parse_options([f"{key}={typed}"]) == {key: value}
    data = {"rewards": [{"source": "x", key: "before"}], "pairs": {"reward": {"source": "x"}}}
    apply_override(data, f"rewards.0.{key}={typed}")
    apply_override(data, f"pairs.reward.{key}={typed}")
    assert data["rewards"][0][key] == value and data["pairs"]["reward"][key] == value


def test_set_clears_a_recipe_key_in_any_section():
    recipe = load_recipe("recipes/quickstart_rpo.yaml", ["model.gguf_file=null", "pairs.reward.gguf_file=~"])
    assert recipe.model.gguf_file is None and "gguf_file" in recipe.pairs.reward.options
    assert recipe.pairs.reward.options["gguf_file"] is None
