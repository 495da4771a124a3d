"""Bad input, swept by class: each gets a clear error naming the input, the limit and the fix.

Two tables. LOAD_ERRORS are mistakes that need no weights to find: they must be reported
before any weight loads (the `no_weights` fixture makes loading weights fail loudly).
CALL_ERRORS are bad data found when TRL calls the reward. Then the inputs that are unusual
but legal, which must give the right result.
"""

import os
import pickle
import subprocess
import sys
import warnings

import pytest
import torch

from rewardbridge import load_reward
from rewardbridge.cli import main as cli_main
from rewardbridge.errors import ConfigError, InputError, OptionTypeError
from rewardbridge.options import OPTION_TYPES, RewardOptions
from rewardbridge.errors import RewardBridgeWarning
from rewardbridge.resolve import is_remote


def test_the_no_weights_fixture_really_stops_weight_loading(classifier_dir, no_weights):
    with pytest.raises(AssertionError, match="weights were loaded"):
        load_reward(classifier_dir)


# (id, source fixture or literal path, options, error type, words the message must contain)
LOAD_ERRORS = [
    # An option of the wrong type names the option, what it takes, and what it got.
    ("max_length-str", "classifier", {"max_length": "4096"}, OptionTypeError, ["max_length", "whole number", "'4096'"]),
    ("max_length-float", "classifier", {"max_length": 4096.0}, OptionTypeError, ["max_length", "4096.0"]),
    ("alpha-str", "classifier", {"alpha": "ten"}, OptionTypeError, ["alpha", "a number"]),
    ("trust-str", "classifier", {"trust_remote_code": "yes"}, OptionTypeError, ["trust_remote_code", "True or False"]),
    ("attributes-str", "attributes", {"attributes": "helpfulness"}, OptionTypeError, ["attributes", "list of output names"]),
    ("weights-str", "attributes", {"attributes": ["a", "b", "c"], "attribute_weights": ["x", 1, 2]}, OptionTypeError, ["attribute_weights"]),
    ("clip-one", "classifier", {"clip": [1.0]}, OptionTypeError, ["clip", "(low, high)"]),
    ("token-bool", "causal", {"token_id": True}, OptionTypeError, ["token_id"]),
    ("unknown-option", "classifier", {"max_lenght": 10}, OptionTypeError, ["unknown option", "max_lenght", "did you mean", "max_length"]),
    # A value out of range or not among the choices lists the choices.
    ("normalize-typo", "classifier", {"normalize": "zscroe"}, ConfigError, ["normalize='zscroe'", "did you mean 'zscore'"]),
    ("truncation", "classifier", {"truncation": "right"}, ConfigError, ["truncation='right'", "'left'", "'error'"]),
    ("render", "classifier", {"render": "html"}, ConfigError, ["render='html'", "steerlm"]),
    ("dtype", "classifier", {"dtype": "fp16"}, ConfigError, ["dtype='fp16'", "float16"]),
    ("device-name", "classifier", {"device": "gpu"}, ConfigError, ["device='gpu'", "cuda:N"]),
    ("device-meta", "classifier", {"device": "meta"}, ConfigError, ["device='meta'", "not a device to score on"]),
    ("max_tokens", "classifier", {"max_tokens_per_batch": 0}, ConfigError, ["max_tokens_per_batch", "positive"]),
    ("std_floor", "classifier", {"std_floor": 0.0, "normalize": "zscore"}, ConfigError, ["std_floor", "positive"]),
    ("clip-order", "classifier", {"clip": [1.0, -1.0]}, ConfigError, ["clip", "low < high"]),
    ("api-key-itself", "http://127.0.0.1:9/v1", {"protocol": "nim", "api_key_env": "nvapi-123abc"}, ConfigError, ["NAME of an environment variable"]),
    # Options that contradict each other.
    ("judge-placeholders", "causal", {"token_id": 0, "judge_prompt": "Rate: {prompt}"}, ConfigError, ["{prompt} and {response}"]),
    ("judge-with-chat", "causal", {"token_id": 0, "render": "chat", "judge_prompt": "{prompt} {response}"}, ConfigError, ["render='judge'"]),
    ("judge-without-prompt", "causal", {"token_id": 0, "render": "judge"}, ConfigError, ["needs judge_prompt"]),
    ("reference-column-alone", "classifier", {"reference_column": "ref"}, ConfigError, ["normalize='reference'"]),
    ("reference-without-column", "classifier", {"normalize": "reference"}, ConfigError, ["needs reference_column"]),
    ("weights-without-names", "classifier", {"attribute_weights": [1.0]}, ConfigError, ["needs attributes"]),
    ("weights-count", "attributes", {"attributes": ["a", "b", "c"], "attribute_weights": [1.0]}, ConfigError, ["1 weights for 3 attributes"]),
    ("attributes-twice", "attributes", {"attributes": ["a", "a", "b"]}, ConfigError, ["['a'] more than once"]),
    # A source that names nothing.
    ("missing-relative-folder", "./no/such/reward-model", {}, ConfigError, ["no such folder", "no/such/reward-model"]),
    ("missing-absolute-folder", "/no/such/reward-model", {}, ConfigError, ["no such folder", "/no/such/reward-model"]),
    ("missing-tokenizer-folder", "classifier", {"tokenizer": "./no/such/tokenizer"}, ConfigError, ["tokenizer=", "no such folder"]),
    ("missing-zero3-json", "classifier", {"zero3": "no_such_config.json"}, ConfigError, ["no such DeepSpeed config file"]),
    # Options that would do nothing for this source are refused, not ignored.
    ("protocol-on-local", "classifier", {"protocol": "nim"}, ConfigError, ["['protocol']", "remote endpoints only"]),
    ("timeout-on-local", "classifier", {"timeout": 5}, ConfigError, ["['timeout']", "remote endpoints only"]),
    ("skip-on-local", "classifier", {"on_error": "skip"}, ConfigError, ["on_error='skip'", "remote endpoints only"]),
    ("zero3-on-url", "HTTP://127.0.0.1:9/v1", {"protocol": "nim", "zero3": True}, ConfigError, ["['zero3']", "local model only"]),
    # Options that would do nothing for this kind of model.
    ("token_id-on-classifier", "classifier", {"token_id": 0}, ConfigError, ["token_id is read only by kind='causal_logit'"]),
    ("alpha-on-classifier", "classifier", {"alpha": 10}, ConfigError, ["alpha", "pair_regression", "drop alpha"]),
    ("causal-without-token", "causal", {}, ConfigError, ["needs token_id"]),
    ("attributes-on-causal", "causal", {"token_id": 0, "attributes": ["a"]}, ConfigError, ["causal_logit reward has one value"]),
    # Checked against the config or tokenizer, still before the weights.
    ("multi-output-unnamed", "attributes", {}, ConfigError, ["has 3 outputs", "attributes=["]),
    ("multi-output-miscounted", "attributes", {"attributes": ["a", "b"]}, ConfigError, ["has 3 outputs but attributes names 2"]),
    ("token-string-too-long", "causal", {"token_id": "Paris is"}, ConfigError, ["'Paris is' is 3 tokens"]),
    ("token-outside-vocab", "causal", {"token_id": 10**6}, ConfigError, ["outside the vocabulary"]),
    ("chat-without-template", "plain", {"render": "chat"}, ConfigError, ["needs a chat template", "chat_template="]),
]


@pytest.mark.parametrize("source, options, error, words", [row[1:] for row in LOAD_ERRORS], ids=[row[0] for row in LOAD_ERRORS])
def test_load_errors_are_clear_and_come_before_any_weights(request, no_weights, source, options, error, words):
    fixtures = {"classifier": "classifier_dir", "attributes": "attributes_dir", "causal": "causal_dir", "plain": "plain_tokenizer_classifier_dir"}
    if source in fixtures:
        source = request.getfixturevalue(fixtures[source])
    with pytest.raises(error) as caught:
        load_reward(source, **options)
    for word in words:
        assert word in str(caught.value), f"{word!r} not in: {caught.value}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_that_is_not_there_is_refused_before_the_weights(classifier_dir, no_weights):
    with pytest.raises(ConfigError, match=r"device='cuda', but this machine has no CUDA GPU.*device='cpu'"):
        load_reward(classifier_dir, device="cuda")


def test_every_option_has_a_type_check():
    import dataclasses

    assert {f.name for f in dataclasses.fields(RewardOptions)} == set(OPTION_TYPES)


def msg(role, content):
    return {"role": role, "content": content}


# (id, prompts, completions, extra columns, error type, words)
CALL_ERRORS = [
    ("count-mismatch", ["a", "b"], ["x", "y", "z"], {}, InputError, ["2 prompts but 3 completions"]),
    ("image-part", [[msg("user", [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "x"}}])]],
     [[msg("assistant", "A cat.")]], {}, InputError, ["sample 0: prompt message 0 content part 1", "'image_url'", "text only"]),
    ("no-content", [[msg("user", "hi")], [{"role": "user"}]], [[msg("assistant", "yo")]] * 2, {}, InputError,
     ["sample 1: prompt message 0 has no 'content'"]),
    ("no-role", [[msg("user", "hi")]], [[{"content": "yo"}]], {}, InputError, ["sample 0: completion message 0 has no 'role'"]),
    ("none-content", [[msg("user", "hi")]], [[msg("assistant", None)]], {}, InputError, ["completion message 0 has no 'content'"]),
    ("single-dict", [[msg("user", "hi")]], [msg("assistant", "yo")], {}, InputError, ["sample 0: completion is a single message dict"]),
    ("prompt-int", [7], ["x"], {}, InputError, ["sample 0: prompt is a int"]),
    ("message-not-dict", [["hello"]], ["x"], {}, InputError, ["prompt message 0 is a str"]),
    ("content-int", [[msg("user", 42)]], ["x"], {}, InputError, ["content is a int"]),
]


@pytest.mark.parametrize("prompts, completions, columns, error, words", [row[1:] for row in CALL_ERRORS], ids=[row[0] for row in CALL_ERRORS])
def test_bad_samples_name_the_sample_and_the_field(classifier_dir, prompts, completions, columns, error, words):
    reward = load_reward(classifier_dir)
    with pytest.raises(error) as caught:
        reward(prompts=prompts, completions=completions, **columns)
    for word in words:
        assert word in str(caught.value), f"{word!r} not in: {caught.value}"


def test_named_outputs_without_weights_label_data_but_give_no_single_reward(attributes_dir):
    reward = load_reward(attributes_dir, attributes=["a", "b", "c"])  # fine for `rewardbridge score` labels
    with pytest.raises(ConfigError, match=r"returns attributes \['a', 'b', 'c'\] and no single reward; pass attribute_weights"):
        reward(prompts=["Q?"], completions=["A."])


def test_a_short_reference_column_is_refused_not_zipped_short(classifier_dir):
    reward = load_reward(classifier_dir, normalize="reference", reference_column="ref")
    # zip() would have paired 2 references with 3 completions and scored row 3 against nothing.
    with pytest.raises(InputError, match="reference_column 'ref' has 2 values for 3 completions"):
        reward(prompts=["a", "a", "b"], completions=["x", "y", "z"], ref=["r1", "r2"])


def test_a_bad_reference_value_is_named_as_such(classifier_dir):
    reward = load_reward(classifier_dir, normalize="reference", reference_column="ref")
    with pytest.raises(InputError, match="reference_column 'ref' value 1 is a NoneType"):
        reward(prompts=["a", "b"], completions=["x", "y"], ref=["fine", None])


def test_a_failed_reference_score_is_not_cached(classifier_dir):
    reward = load_reward(classifier_dir, normalize="reference", reference_column="ref")
    score, calls = reward.scorer.score, []

    def flaky(conversations):  # the first reference call fails (NaN), as a skipped remote failure would
        calls.append(len(conversations))
        scores = score(conversations)
        if len(calls) == 2:
            scores.values = torch.full_like(scores.values.clone(), float("nan"))
        return scores

    reward.scorer.score = flaky
    assert reward(prompts=["a"], completions=["x"], ref=["r"]) == [None]  # no reference: no reward, not x - 0
    second = reward(prompts=["a"], completions=["x"], ref=["r"])
    assert calls == [1, 1, 1, 1] and second[0] is not None  # the reference was asked for again, then scored


def test_a_pathlib_source_works(classifier_dir):
    from pathlib import Path

    assert load_reward(Path(classifier_dir))(prompts=["a"], completions=["b"]) == load_reward(classifier_dir)(prompts=["a"], completions=["b"])


def test_cli_option_values_that_are_text_stay_text():
    from rewardbridge.cli import parse_options

    got = parse_options(["token_id=[Yes, No]", "name=on", "system_prompt=Be brief: one line.", "timeout=1e3",
                         "chat_template={% for m in messages %}{{ m['content'] }}{% endfor %}"])
    # YAML 1.1 would give (True, False), True, a dict, and the string '1e3'.
    assert got == {"token_id": ["Yes", "No"], "name": "on", "system_prompt": "Be brief: one line.", "timeout": 1000.0,
                   "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}


def test_text_parts_are_joined_and_scored_like_the_plain_string(classifier_dir):
    reward = load_reward(classifier_dir)
    parts = [[msg("user", [{"type": "text", "text": "What is the capital"}, {"type": "text", "text": "of France?"}])]]
    plain = [[msg("user", "What is the capital\nof France?")]]  # text parts joined by newlines, as vLLM does
    answer = [[msg("assistant", [{"type": "text", "text": "Paris."}])]]
    assert reward(prompts=parts, completions=answer) == reward(prompts=plain, completions=[[msg("assistant", "Paris.")]])


@pytest.mark.parametrize("normalize", ["none", "center", "zscore", "rank", "reference"])
def test_an_empty_batch_gives_an_empty_list(classifier_dir, normalize):
    # TRL can hand a rank an empty slice; every mode must return [] rather than fail a reshape.
    options = {"reference_column": "ref"} if normalize == "reference" else {}
    reward = load_reward(classifier_dir, normalize=normalize, **options)
    logged = {}
    assert reward(prompts=[], completions=[], ref=[], log_metric=logged.__setitem__) == []


def test_empty_batch_with_attribute_target(attributes_dir):
    reward = load_reward(attributes_dir, attributes=["a", "b", "c"], attribute_weights=[1, 1, 1], normalize="zscore", normalize_target="attributes")
    assert reward(prompts=[], completions=[]) == []


def test_one_response_per_prompt_under_group_normalization_warns_once(classifier_dir):
    reward = load_reward(classifier_dir, normalize="center")
    with pytest.warns(RewardBridgeWarning, match="one response per prompt in every group, so every reward is 0.0"):
        assert reward(prompts=["a", "b"], completions=["x", "y"]) == [0.0, 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would now raise
        reward(prompts=["a", "b"], completions=["x", "y"])
    # Two responses to one prompt: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_reward(classifier_dir, normalize="center")(prompts=["a", "a"], completions=["x", "y"])


def test_urls_are_recognized_in_any_case():
    assert is_remote("HTTP://host:8000") and is_remote("https://a") and is_remote(["http://a", "Https://b"])
    assert not is_remote("http_models/rm") and not is_remote("/models/http://x")


def test_a_reward_loaded_from_a_relative_path_unpickles_in_another_directory(classifier_dir, tmp_path):
    parent, name = os.path.split(classifier_dir)
    here = os.getcwd()
    try:
        os.chdir(parent)
        reward = load_reward(name)  # relative path
        expected = reward(prompts=["What is 2+2?"], completions=["4"])
        blob = pickle.dumps(reward)
    finally:
        os.chdir(here)
    # A fresh process in another working directory: the relative path would name nothing there.
    code = (
        "import pickle, sys; r = pickle.loads(sys.stdin.buffer.read()); "
        "print(r(prompts=['What is 2+2?'], completions=['4'])[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert float(out.stdout.decode().strip().splitlines()[-1]) == pytest.approx(expected[0], abs=1e-6)


def test_cli_errors_are_one_line_with_exit_status_2_for_usage(capsys, classifier_dir, tmp_path):
    code = cli_main(["score", classifier_dir, str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "o.jsonl"), "--option", "normalize"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("rewardbridge: error: --option 'normalize' is not KEY=VALUE") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError):  # --debug: the real exception, traceback and all
        cli_main(["--debug", "score", classifier_dir, "in.jsonl", "--output", "o.jsonl", "--option", "normalize"])
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage errors also exit 2
        cli_main(["score"])
    assert exit_info.value.code == 2
