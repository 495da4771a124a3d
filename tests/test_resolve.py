"""resolve.py: one step decides what a reward source is before any weights load, and every way
in (load_reward, score, eval, serve, train, inspect) goes through it."""

import json
import re
import subprocess
import sys

import pytest

from rewardbridge import load_reward
from rewardbridge.cli import main as cli_main
from rewardbridge.errors import ConfigError
from rewardbridge.resolve import resolve
from rewardbridge.scorers import build_scorer


def test_a_local_model_is_resolved_without_its_weights(classifier_dir, no_weights):
    resolved = resolve(classifier_dir)
    assert (resolved.kind, resolved.model_class.__name__) == ("classifier", "AutoModelForSequenceClassification")
    assert resolved.why["kind"] == "architecture LlamaForSequenceClassification"
    assert resolved.max_length == 4096 and resolved.why["max_length"] == "the model's own limit"
    assert resolved.renderer.has_chat_template and resolved.preset is None


def test_token_strings_become_ids_and_the_reason_for_each_choice_is_kept(causal_dir, tokenizer, no_weights):
    resolved = resolve(causal_dir, token_id=["<|user|>", "<|assistant|>"], judge_prompt="Q {prompt} A {response} ok?")
    # The (yes, no) pair is read as these two token ids, checked against the tokenizer now.
    assert resolved.token_ids == tuple(tokenizer.convert_tokens_to_ids(["<|user|>", "<|assistant|>"]))
    assert "judge_prompt as one user turn" in resolved.input
    assert "logit of token" in resolved.readout


def test_a_preset_is_applied_once_and_named_as_the_reason(tmp_path, tokenizer, no_weights):
    from transformers import LlamaForCausalLM

    from rewardbridge.testing import llama_config, save_model

    folder = tmp_path / "Llama-3.1-Nemotron-70B-Reward-HF"
    save_model(folder, LlamaForCausalLM(llama_config(tokenizer)), tokenizer)
    resolved = resolve(str(folder))
    assert resolved.preset.match == "llama-3.1-nemotron-70b-reward"
    assert (resolved.kind, resolved.token_ids, resolved.max_length) == ("causal_logit", (0,), 4096)
    assert resolved.why["kind"].startswith("kind='causal_logit' from the preset 'llama-3.1-nemotron-70b-reward'") and resolved.why["max_length"] == "from the preset"
    # Resolving the resolved options again (what an unpickled reward does) changes nothing.
    from rewardbridge.resolve import resolve_options

    again = resolve_options(resolved.source, resolved.options)
    assert again.options == resolved.options and again.token_ids == (0,)


def test_an_endpoint_is_resolved_with_its_preset_and_renderer(classifier_dir):
    nim = resolve("http://127.0.0.1:9/", protocol="nim", model_name="nvidia/nemotron-4-340b-reward")
    assert nim.remote and nim.urls == ("http://127.0.0.1:9",) and nim.renderer is None  # NIM renders server-side
    assert nim.options.attributes == ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    vllm = resolve("http://a:1,http://b:2", protocol="vllm", tokenizer=classifier_dir)
    assert vllm.urls == ("http://a:1", "http://b:2") and vllm.renderer.has_chat_template


def test_loading_a_resolved_model_scores_like_load_reward(classifier_dir):
    resolved = resolve(classifier_dir)
    scorer = build_scorer(resolved)
    reward = load_reward(classifier_dir)
    from rewardbridge import Conversation

    conversations = [Conversation("2+2=", " 4"), Conversation("Capital of France?", " Paris")]
    assert scorer.score(conversations).values.tolist() == reward.scorer.score(conversations).values.tolist()


def test_inspect_prints_the_description_without_loading_weights(causal_dir, capsys, no_weights):
    code = cli_main(["inspect", causal_dir, "--option", "token_id=0", "--option", "max_length=128"])
    out = capsys.readouterr().out
    assert code == 0
    for words in ("kind         causal_logit (architecture LlamaForCausalLM)", "model class  AutoModelForCausalLM",
                  "the next-token logit of token 0", "max_length 128 tokens (max_length was given)",
                  "example      '<s><|user|>What is 2+2?</s><|assistant|>4</s>'"):
        assert words in out, out


def test_inspect_of_an_endpoint_names_the_protocol_and_the_key_variable(capsys, monkeypatch):
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    assert cli_main(["inspect", "http://rm:8000", "--option", "protocol=nim"]) == 0
    out = capsys.readouterr().out
    assert "POST /v1/chat/completions, one conversation per request" in out
    assert "$NVIDIA_API_KEY (not set: no key sent)" in out


# One mistake that needs no weights to find (a token string that is two tokens), through every way in.
TWO_TOKENS = "token_id 'Paris' is 2 tokens"


def test_every_way_in_shares_the_resolution_step(causal_dir, tmp_path, capsys, no_weights):
    with pytest.raises(ConfigError, match=TWO_TOKENS):
        load_reward(causal_dir, token_id="Paris")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "Hi", "completion": "Yo"}) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Hi", "chosen": "Yo", "rejected": "No", "subset": "s"}) + "\n")
    for argv in (["inspect", causal_dir], ["score", causal_dir, str(rows), "-o", str(tmp_path / "out.jsonl")],
                 ["eval", causal_dir, str(pairs)]):
        assert cli_main([*argv, "--option", "token_id=Paris"]) == 2
        assert TWO_TOKENS in capsys.readouterr().err


def test_serve_and_train_refuse_before_starting(causal_dir, tmp_path, no_weights):
    # serve: the server never starts (exit 2 at once, nothing bound).
    out = subprocess.run([sys.executable, "-m", "rewardbridge.cli", "serve", causal_dir, "--port", "9", "--option", "token_id=Paris"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and TWO_TOKENS in out.stderr
    # train: the reward is resolved before any weights (the policy's or the reward's) load.
    from rewardbridge.training.recipe import parse_recipe
    from rewardbridge.training.train import build_rewards

    recipe = parse_recipe({
        "trainer": "rloo", "model": {"path": causal_dir}, "dataset": {"path": "prompts"},
        "rewards": [{"source": causal_dir, "token_id": "Paris"}],
    })
    with pytest.raises(ConfigError, match=rf"rewards\[0\] .*{TWO_TOKENS}"):
        build_rewards(recipe.rewards)


def test_an_unpickled_reward_keeps_an_explicit_default_the_preset_would_change(pair_rm_dir, tmp_path):
    # alpha=1.0 is the option's default and the preset's is 10: given explicitly, it must survive a pickle.
    import pickle

    reward = load_reward(pair_rm_dir, trust_remote_code=True, alpha=1.0)
    assert reward.scorer.readout.alpha == 1.0
    blob = pickle.dumps(reward)
    code = ("import pickle, sys; r = pickle.loads(sys.stdin.buffer.read()); "
            "print(r.scorer.readout.alpha, r(prompts=['Qual é a capital?'], completions=['Paris'])[0])")
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    alpha, score = out.stdout.decode().split()
    assert float(alpha) == 1.0
    assert float(score) == pytest.approx(reward(prompts=["Qual é a capital?"], completions=["Paris"])[0], abs=1e-6)


def test_the_default_length_limit_reads_the_config_class_name_for_positions(tmp_path, no_weights):
    # GPT-2 calls its position count n_positions; the tokenizer here has no limit of its own.
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from rewardbridge.testing import build_tokenizer, save_model

    tok = build_tokenizer(chat_template=None)
    tok.model_max_length = int(1e30)
    config = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=1, n_head=2, num_labels=1, pad_token_id=0,
                        bos_token_id=1, eos_token_id=2)
    folder = save_model(tmp_path / "gpt2", GPT2ForSequenceClassification(config), tok)
    assert resolve(folder).max_length == 128


@pytest.mark.parametrize("folder, options, words", [
    # A preset matched by the folder's own name must fit the checkpoint's architecture.
    ("Llama-3.1-Nemotron-70B-Reward-HF", {}, "from the preset 'llama-3.1-nemotron-70b-reward', matched by the model's name, "
     "but this checkpoint is a sequence classifier"),
    ("rm", {"kind": "causal_logit", "token_id": 0}, "kind='causal_logit' was given, but this checkpoint is a sequence classifier"),
])
def test_a_kind_the_checkpoint_has_no_head_for_is_refused(tmp_path, tokenizer, no_weights, folder, options, words):
    from transformers import LlamaForSequenceClassification

    from rewardbridge.testing import llama_config, save_model

    path = save_model(tmp_path / folder, LlamaForSequenceClassification(llama_config(tokenizer, num_labels=1)), tokenizer)
    with pytest.raises(ConfigError, match=re.escape(words)):
        resolve(path, **options)


def test_a_causal_lm_read_as_a_classifier_is_refused(causal_dir, no_weights):
    with pytest.raises(ConfigError, match="this checkpoint is a causal LM .* randomly initialized head"):
        resolve(causal_dir, kind="classifier")


def test_presets_match_the_models_own_name_not_the_folders_above_it(tmp_path, tokenizer, no_weights):
    from transformers import LlamaForCausalLM

    from rewardbridge.testing import llama_config, save_model

    path = save_model(tmp_path / "skywork-reward-runs" / "my-judge", LlamaForCausalLM(llama_config(tokenizer)), tokenizer)
    resolved = resolve(path, token_id=0)
    assert resolved.preset is None and resolved.kind == "causal_logit"


def test_inspect_shows_the_text_decoded_from_the_ids_the_scorer_feeds(classifier_dir, capsys, no_weights):
    from rewardbridge import Conversation
    from rewardbridge.scorers.local import LocalScorer

    resolved = resolve(classifier_dir)
    scorer = LocalScorer(None, resolved.tokenizer, resolved.renderer, None, max_length=resolved.max_length)
    conversation = Conversation([{"role": "user", "content": "What is 2+2?"}], ({"role": "assistant", "content": "4"},))
    ids, _ = scorer.tokenize([conversation])
    assert resolved.example() == repr(resolved.tokenizer.decode(ids[0]))


def test_a_warning_found_deep_inside_points_at_the_callers_line(attributes_dir):
    from rewardbridge.errors import RewardBridgeWarning

    with pytest.warns(RewardBridgeWarning, match="gives no weight to") as record:
        load_reward(attributes_dir, attributes=["a", "b", "c"], attribute_weights={"a": 1.0})
    assert record[0].filename == __file__
