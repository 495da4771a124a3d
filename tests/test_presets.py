"""Presets: known families resolve by name, without the model hub; unknown models are explained once."""

import logging

import pytest

from rewardbridge import load_reward
from rewardbridge.options import RewardOptions
from rewardbridge.presets import ARMORM_ATTRIBUTES, PRESETS, apply_preset, explain_kind, find_preset


@pytest.mark.parametrize(
    "source, expected",
    [
        ("nicholasKluge/RewardModel", {"kind": "pair_regression", "alpha": 10.0}),
        ("/models/nicholaskluge/rewardmodel", {"kind": "pair_regression", "alpha": 10.0}),
        ("RLHFlow/ArmoRM-Llama3-8B-v0.1", {"kind": "custom", "attributes": ARMORM_ATTRIBUTES}),
        ("nvidia/Llama-3.1-Nemotron-70B-Reward-HF", {"kind": "causal_logit", "token_id": 0, "max_length": 4096}),
        ("Skywork/Skywork-Reward-V2-Llama-3.1-8B", {"kind": "classifier"}),
    ],
)
def test_presets_match_by_name(source, expected):
    options = apply_preset(source, RewardOptions())
    assert {key: getattr(options, key) for key in expected} == expected
    assert options.trust_remote_code is False  # custom code stays the user's decision


def test_armorm_preset_names_19_objectives_helpsteer_first():
    assert len(ARMORM_ATTRIBUTES) == 19  # REFERENCE.md §2: 19 objectives, the first five HelpSteer's
    assert [a.split("-")[0] for a in ARMORM_ATTRIBUTES[:5]] == ["helpsteer"] * 5


def test_no_preset_switches_trust_remote_code_on():
    assert all("trust_remote_code" not in preset.defaults for preset in PRESETS)


def test_user_options_win_over_the_preset():
    options = apply_preset("nicholasKluge/RewardModel", RewardOptions(alpha=2.0, trust_remote_code=True))
    assert (options.kind, options.alpha, options.trust_remote_code) == ("pair_regression", 2.0, True)


def test_unknown_names_get_no_preset():
    assert find_preset("my-org/my-reward-model") is None


@pytest.mark.parametrize(
    "config, kind, why",
    [
        ({"architectures": ["LlamaForSequenceClassification"]}, "classifier", "architecture LlamaForSequenceClassification"),
        ({"architectures": ["Qwen2ForCausalLM"]}, "causal_logit", "architecture Qwen2ForCausalLM"),
        ({"architectures": ["X"], "auto_map": {"AutoModel": "m.X"}}, "custom", "maps AutoModel to the model's own code m.X"),
        ({"architectures": ["BertModel"]}, None, "name neither"),
    ],
)
def test_kind_is_explained_from_the_config(config, kind, why):
    got_kind, got_why = explain_kind(config)
    assert got_kind == kind and why in got_why


def test_an_unknown_model_is_explained_once_in_the_log(tmp_path, classifier_dir, plain_tokenizer_classifier_dir, caplog, monkeypatch):
    import shutil

    from rewardbridge import presets

    monkeypatch.setattr(presets, "_explained", set())  # other tests may have loaded these models already
    source = shutil.copytree(classifier_dir, tmp_path / "my-reward-model")  # a name no preset knows
    with caplog.at_level(logging.INFO, logger="rewardbridge"):
        load_reward(str(source))
        load_reward(str(source))
        load_reward(plain_tokenizer_classifier_dir)
    lines = [r.getMessage() for r in caplog.records if r.name == "rewardbridge"]
    mine = [line for line in lines if "my-reward-model" in line]
    assert len(mine) == 1  # once per source
    assert "kind='classifier' (architecture LlamaForSequenceClassification)" in mine[0]
    assert "chat: the reward tokenizer's chat template" in mine[0]
    plain = [line for line in lines if plain_tokenizer_classifier_dir in line]
    assert len(plain) == 1 and "text: prompt + completion" in plain[0] and "no chat template" in plain[0]


def test_a_preset_fills_only_what_the_user_did_not_pass():
    from rewardbridge.presets import NEMOTRON_340B_WEIGHTS, apply_preset

    nemotron70b = "nvidia/Llama-3.1-Nemotron-70B-Reward-HF"
    # Another kind chosen: the preset (token_id=0 for causal_logit) stays out entirely.
    assert apply_preset(nemotron70b, RewardOptions(kind="classifier"), {"kind"}).token_id is None
    # Own attributes: the preset's nine weights would not fit them.
    mine = apply_preset("nvidia/Nemotron-4-340B-Reward", RewardOptions(attributes=("a", "b", "c")), {"attributes"})
    assert mine.attributes == ("a", "b", "c") and mine.attribute_weights is None and mine.render == "steerlm"
    # An explicit default value is still the user's choice.
    assert apply_preset("nvidia/Nemotron-4-340B-Reward", RewardOptions(), {"render"}).render == "auto"
    # A URL: matched by model_name and protocol, and only what that endpoint answers is filled.
    nim = apply_preset("https://nim.example", RewardOptions(protocol="nim", model_name="nvidia/nemotron-4-340b-reward"),
                       {"protocol", "model_name"}, remote=True)
    assert nim.attributes == ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    assert list(nim.attribute_weights) == list(NEMOTRON_340B_WEIGHTS[4:]) and nim.kind is None and nim.max_length is None
    triton = apply_preset("http://rm:5555", RewardOptions(protocol="triton", model_name="nemotron-4-340b-reward"),
                          {"protocol", "model_name"}, remote=True)
    assert triton.attributes is None and triton.render == "auto"
