"""pair_regression and custom kinds: rewardbridge's scores equal each model card's own usage code.

The tiny models' modelling code lives in the saved folder (config.json auto_map), as on the
hub, so these load only with trust_remote_code=True; the folders are named like the hub
models, so the presets (matched by name, no hub) fill in kind, alpha and attributes.
"""

import functools
import warnings

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from rewardbridge import load_reward
from rewardbridge.errors import ConfigError, RewardBridgeWarning
from rewardbridge.scorers.tokens import encode_pairs

QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "Tell me a joke."]
ANSWERS = ["The capital of France is Paris.", "A spider has eight legs, " * 6, "Why did the reward model cross the road?"]


@functools.lru_cache(maxsize=None)
def card_load(model_dir, auto_class):
    """The card's loading code, once per folder: AutoTokenizer + the Auto class with trust_remote_code=True."""
    return AutoTokenizer.from_pretrained(model_dir), auto_class.from_pretrained(model_dir, trust_remote_code=True).eval()


def card_pair_score(model_dir, question, answer):
    """nicholasKluge/RewardModel card: tokenizer(q, a, return_token_type_ids=False); model(**tokens, alpha=10).item()."""
    tokenizer, model = card_load(model_dir, AutoModel)
    tokens = tokenizer(question, answer, truncation=True, return_token_type_ids=False, return_tensors="pt", return_attention_mask=True)
    with torch.no_grad():
        return model(**tokens, alpha=10).item()


def card_armorm_output(model_dir, messages):
    """ArmoRM card: apply_chat_template(messages, return_tensors="pt"); output = model(input_ids); .score, .rewards."""
    tokenizer, model = card_load(model_dir, AutoModelForSequenceClassification)
    input_ids = tokenizer.apply_chat_template(messages, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        output = model(input_ids)
    return output.score.float().item(), output.rewards.float()[0]


def test_pair_regression_equals_the_model_card_batch_and_single(pair_rm_dir):
    reward = load_reward(pair_rm_dir, trust_remote_code=True)  # preset by name: pair_regression, alpha 10
    assert reward.options.kind == "pair_regression" and reward.options.alpha == 10.0
    batch = reward(prompts=QUESTIONS, completions=ANSWERS)
    singles = [reward(prompts=[q], completions=[a])[0] for q, a in zip(QUESTIONS, ANSWERS)]
    split = load_reward(pair_rm_dir, trust_remote_code=True, max_tokens_per_batch=40)(prompts=QUESTIONS, completions=ANSWERS)
    expected = [card_pair_score(pair_rm_dir, q, a) for q, a in zip(QUESTIONS, ANSWERS)]
    assert batch == pytest.approx(expected, abs=1e-5)
    assert singles == pytest.approx(expected, abs=1e-5)
    assert split == pytest.approx(expected, abs=1e-5)  # several micro-batches under a 40-token budget
    assert all(abs(v) <= 10 for v in batch)  # tanh in [-1, 1] times alpha 10
    assert len(set(round(v, 4) for v in batch)) == 3  # the model tells the answers apart


def test_pair_regression_reads_the_last_user_turn_of_a_multi_turn_prompt(pair_rm_dir):
    reward = load_reward(pair_rm_dir, trust_remote_code=True)
    prompt = [
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "No."},
        {"role": "user", "content": QUESTIONS[0]},
    ]
    # The card reads (question, answer) only: the earlier turns are not seen, and it says so, once.
    with pytest.warns(RewardBridgeWarning, match="a prompt with several turns .* is read as its last user turn only"):
        got = reward(prompts=[prompt], completions=[[{"role": "assistant", "content": ANSWERS[0]}]])[0]
    assert got == pytest.approx(card_pair_score(pair_rm_dir, QUESTIONS[0], ANSWERS[0]), abs=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reward(prompts=[prompt], completions=[[{"role": "assistant", "content": ANSWERS[0]}]])


def test_over_long_pairs_lose_the_question_first_never_the_answers_end(pair_rm_dir):
    tokenizer = AutoTokenizer.from_pretrained(pair_rm_dir)
    question, answer = "what is the capital of france " * 4, "the capital of france is paris"
    q_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    budget = len(a_ids) + 3 + 2  # [CLS] q[-2:] [SEP] a [SEP]
    (ids,), truncated = encode_pairs([question], [answer], tokenizer, max_length=budget)
    assert truncated == 1 and ids == [cls, *q_ids[-2:], sep, *a_ids, sep]  # the question's oldest tokens went
    (ids,), _ = encode_pairs([question], [answer], tokenizer, max_length=5)
    assert ids == [cls, sep, *a_ids[-2:], sep]  # question gone, then the answer's start; its end stays
    with pytest.raises(ValueError, match=r"pair 0 has \d+ tokens > max_length 5; set truncation='left'"):
        encode_pairs([question], [answer], tokenizer, max_length=5, truncation="error")
    # Through load_reward: a truncated pair scores as the card scores the kept tokens.
    reward = load_reward(pair_rm_dir, trust_remote_code=True, max_length=budget)
    _, model = card_load(pair_rm_dir, AutoModel)
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([[cls, *q_ids[-2:], sep, *a_ids, sep]]), alpha=10).item()
    assert reward(prompts=[question], completions=[answer])[0] == pytest.approx(expected, abs=1e-5)


def test_custom_armorm_equals_the_model_card_batch_and_single(armorm_dir, chat_batch):
    prompts, completions = chat_batch
    reward = load_reward(armorm_dir, trust_remote_code=True, name="armo")  # preset by name: custom, 19 objectives
    assert reward.options.kind == "custom" and len(reward.options.attributes) == 19
    extra, metrics = {}, {}
    batch = reward(prompts=prompts, completions=completions, log_extra=extra.__setitem__, log_metric=metrics.__setitem__)
    singles = [reward(prompts=[p], completions=[c])[0] for p, c in zip(prompts, completions)]
    for i, (p, c) in enumerate(zip(prompts, completions)):
        score, objectives = card_armorm_output(armorm_dir, p + c)
        assert batch[i] == pytest.approx(score, abs=1e-5)  # output.score
        assert singles[i] == pytest.approx(score, abs=1e-5)
        assert extra["armo/helpsteer-correctness"][i] == pytest.approx(objectives[1].item(), abs=1e-5)  # output.rewards[:, 1]
        assert extra["armo/code-readability"][i] == pytest.approx(objectives[18].item(), abs=1e-5)
    assert "armo/helpsteer-helpfulness_mean" in metrics


@pytest.mark.parametrize("fixture", ["pair_rm_dir", "armorm_dir"])
def test_custom_code_loads_only_with_trust_remote_code(fixture, request):
    source = request.getfixturevalue(fixture)
    with pytest.raises(ConfigError, match=r"needs its own modelling code .* runs only with trust_remote_code=True"):
        load_reward(source)


def test_custom_kind_without_custom_code_is_refused(classifier_dir):
    with pytest.raises(ConfigError, match=r"kind='custom' loads a model's own code, but .* use kind='classifier'"):
        load_reward(classifier_dir, kind="custom", trust_remote_code=True)


def test_custom_objective_names_must_match_the_output(armorm_dir):
    reward = load_reward(armorm_dir, trust_remote_code=True, attributes=["a", "b"])
    with pytest.raises(ValueError, match="has 19 objectives in output.rewards but attributes names 2"):
        reward(prompts=["hi"], completions=["yo"])


def test_a_pair_model_without_its_preset_needs_its_kind(pair_rm_dir, tmp_path):
    import shutil

    source = shutil.copytree(pair_rm_dir, tmp_path / "some-pair-model")  # no preset: kind inferred as custom code
    reward = load_reward(str(source), trust_remote_code=True)
    with pytest.raises(ValueError, match="kind='custom' reads output.score, but RewardModel .* use kind='pair_regression'"):
        reward(prompts=["hi"], completions=["yo"])
    got = load_reward(str(source), trust_remote_code=True, kind="pair_regression", alpha=10)(prompts=QUESTIONS, completions=ANSWERS)
    assert got == pytest.approx([card_pair_score(pair_rm_dir, q, a) for q, a in zip(QUESTIONS, ANSWERS)], abs=1e-5)


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory):
    """A plain BERT cross-encoder (BertForSequenceClassification, one output, no chat template), as
    OpenAssistant's reward-model-deberta cards use: tokenizer(question, answer) -> logits[0]."""
    from transformers import BertConfig, BertForSequenceClassification

    from conftest import build_bert_tokenizer

    tok = build_bert_tokenizer()
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=512, num_labels=1, pad_token_id=tok.pad_token_id,
                        initializer_range=0.5)  # wide weights: tiny random encoders otherwise score every input alike
    torch.manual_seed(7)
    folder = tmp_path_factory.mktemp("cross_encoder")
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def test_a_bert_cross_encoder_reads_question_answer_pairs(cross_encoder_dir):
    from rewardbridge.resolve import resolve

    resolved = resolve(cross_encoder_dir)
    assert resolved.kind == "pair_regression" and "an encoder (bert) with no chat template" in resolved.why["kind"]
    reward = load_reward(cross_encoder_dir)
    tokenizer, model = card_load(cross_encoder_dir, AutoModelForSequenceClassification)
    with torch.no_grad():  # the card: model(**tokenizer(question, answer)).logits[0]
        expected = [model(**tokenizer(q, a, return_tensors="pt")).logits[0, 0].item() for q, a in zip(QUESTIONS, ANSWERS)]
        one_segment = [model(**tokenizer(q + a, return_tensors="pt")).logits[0, 0].item() for q, a in zip(QUESTIONS, ANSWERS)]
    assert reward(prompts=QUESTIONS, completions=ANSWERS) == pytest.approx(expected, abs=1e-5)
    assert expected != pytest.approx(one_segment, abs=1e-3)  # what it scored before: one segment, other numbers
    assert len({round(v, 3) for v in expected}) == 3


def test_alpha_on_a_standard_cross_encoder_is_refused_before_its_weights(cross_encoder_dir, no_weights):
    # Only custom code takes alpha (nicholasKluge's RewardModel); a standard class's forward never does.
    with pytest.raises(ConfigError) as caught:
        load_reward(cross_encoder_dir, alpha=10)
    assert "alpha=10" in str(caught.value) and "no auto_map" in str(caught.value) and "pass alpha=1" in str(caught.value)


def test_a_cross_encoder_with_a_chat_template_renders_and_says_why(cross_encoder_dir):
    from rewardbridge.resolve import resolve

    resolved = resolve(cross_encoder_dir, chat_template="{% for m in messages %}{{ m['content'] }} {% endfor %}")
    assert resolved.kind == "classifier" and "kind='pair_regression' reads (question, answer) pairs instead" in resolved.why["kind"]


def test_a_literal_sep_in_the_question_does_not_move_the_segments(cross_encoder_dir):
    # Segment ids come from tokenizer(question, answer) itself; searching the ids for [SEP] (as before)
    # would start the answer's segment at the question's own "[SEP]".
    question, answer = "is [SEP] a token?", "yes, in bert."
    tokenizer, model = card_load(cross_encoder_dir, AutoModelForSequenceClassification)
    tokens = tokenizer(question, answer, return_tensors="pt")
    with torch.no_grad():
        expected = model(**tokens).logits[0, 0].item()
        sep = (tokens["input_ids"] == tokenizer.sep_token_id).long()
        searched = ((sep.cumsum(dim=1) - sep) > 0).long()  # the old reading: segment 1 after the first [SEP]
        assert not torch.equal(searched, tokens["token_type_ids"])
        moved = model(input_ids=tokens["input_ids"], token_type_ids=searched).logits[0, 0].item()
    assert load_reward(cross_encoder_dir)(prompts=[question], completions=[answer])[0] == pytest.approx(expected, abs=1e-5)
    assert moved != pytest.approx(expected, abs=1e-4)


TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"


def test_an_encoder_under_a_chat_template_still_reads_its_cls_and_sep(cross_encoder_dir):
    from rewardbridge import Conversation
    from rewardbridge.resolve import resolve

    tokenizer, model = card_load(cross_encoder_dir, AutoModelForSequenceClassification)
    reward = load_reward(cross_encoder_dir, chat_template=TEMPLATE)
    texts = [reward.scorer.renderer.render(Conversation.from_trl(q, a)) for q, a in zip(QUESTIONS, ANSWERS)]
    with torch.no_grad():  # the encoder's own reading: tokenizer(text) adds [CLS] ... [SEP], which its pooler reads
        expected = [model(**tokenizer(t, return_tensors="pt")).logits[0, 0].item() for t in texts]
        bare = [model(**tokenizer(t, add_special_tokens=False, return_tensors="pt")).logits[0, 0].item() for t in texts]
    assert reward(prompts=QUESTIONS, completions=ANSWERS) == pytest.approx(expected, abs=1e-5)
    assert bare != pytest.approx(expected, abs=1e-4)  # what chat rendering fed it before: no [CLS], no [SEP]
    resolved = resolve(cross_encoder_dir, chat_template=TEMPLATE)  # inspect says so, and shows them
    assert "special tokens added ('[CLS] [SEP]')" in resolved.input
    assert resolved.example().startswith("'[CLS] ") and resolved.example().endswith("[SEP]'")
    # A template that writes them itself gets them once.
    writes = load_reward(cross_encoder_dir, chat_template="[CLS] " + TEMPLATE + "[SEP]", name="writes")
    (ids,), _ = writes.scorer.tokenize([Conversation.from_trl(QUESTIONS[0], ANSWERS[0])])
    assert ids[0] == tokenizer.cls_token_id and ids.count(tokenizer.cls_token_id) == 1


def test_a_system_prompt_on_a_cross_encoder_points_to_what_works(cross_encoder_dir, no_weights):
    # kind='classifier' alone would render plain text, where system_prompt is refused in turn.
    with pytest.raises(ConfigError, match=r"pass kind='classifier' and chat_template='<jinja>' \(this tokenizer has none\)"):
        load_reward(cross_encoder_dir, system_prompt="Be brief.")
    from rewardbridge import Conversation
    from rewardbridge.resolve import resolve

    resolved = resolve(cross_encoder_dir, kind="classifier", chat_template=TEMPLATE, system_prompt="Be brief.")  # the hint works
    assert resolved.renderer.render(Conversation.from_trl("q", "a")).startswith("system: Be brief. user: q")
