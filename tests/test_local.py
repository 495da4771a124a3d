"""Local scorers: each readout equals its model card's usage code; batching changes nothing."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rewardbridge import load_reward
from rewardbridge.conversation import Conversation, conversations_from_trl
from rewardbridge.errors import InputError
from rewardbridge.scorers.tokens import encode, plan_micro_batches


def card_classifier_score(model_dir, messages):
    """Skywork card: apply_chat_template(conv, tokenize=True) -> model(ids).logits[0][0]."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    ids = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        return model(**ids).logits[0][0].item()


def card_causal_logits(model_dir, text):
    """Nemotron-70B-Reward-HF card: next-token logits after the conversation, one sequence alone."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        return model(**ids).logits[0, -1]


def test_classifier_readout_matches_the_model_card(classifier_dir, chat_batch):
    prompts, completions = chat_batch
    reward = load_reward(classifier_dir)  # kind inferred from LlamaForSequenceClassification
    got = reward(prompts=prompts, completions=completions)
    for value, p, c in zip(got, prompts, completions):
        assert value == pytest.approx(card_classifier_score(classifier_dir, p + c), abs=1e-5)


def test_causal_logit_readout_is_the_next_token_logit_of_token_id(causal_dir, tokenizer, chat_batch):
    prompts, completions = chat_batch
    reward = load_reward(causal_dir, token_id=0)
    judge = load_reward(causal_dir, token_id=("the", 7))  # a (yes, no) pair: one-token string and an id
    yes = tokenizer.encode("the", add_special_tokens=False)[0]
    got, judged = reward(prompts=prompts, completions=completions), judge(prompts=prompts, completions=completions)
    for value, verdict, p, c in zip(got, judged, prompts, completions):
        logits = card_causal_logits(causal_dir, tokenizer.apply_chat_template(p + c, tokenize=False))
        assert value == pytest.approx(logits[0].item(), abs=1e-5)  # logits[0, -1, 0]
        assert verdict == pytest.approx((logits[yes] - logits[7]).item(), abs=1e-5)  # logit(yes) - logit(no)


def test_micro_batched_scores_equal_scoring_each_input_alone(classifier_dir, causal_dir):
    # Skewed lengths, as in rollouts: many short, a few long.
    prompts = [f"Question {i}: what is {i} plus {i}?" for i in range(12)]
    completions = [("The answer is " + "very " * (40 if i % 5 == 0 else i)) for i in range(12)]
    for source, kw in ((classifier_dir, {}), (causal_dir, {"token_id": 3})):
        batched = load_reward(source, max_tokens_per_batch=300, **kw)(prompts=prompts, completions=completions)
        alone = load_reward(source, max_tokens_per_batch=1, **kw)  # one conversation per forward
        singles = [alone(prompts=[p], completions=[c])[0] for p, c in zip(prompts, completions)]
        assert batched == pytest.approx(singles, abs=1e-5)


def test_plan_micro_batches_respects_the_budget_and_covers_every_index():
    lengths = [3, 50, 7, 7, 49, 1, 120, 9]
    batches = plan_micro_batches(lengths, max_tokens_per_batch=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= 100 or len(batch) == 1  # 120 > budget rides alone
    # Longest first: [6] alone, then 50+49 (2*50=100), then the short ones together.
    assert batches[:2] == [[6], [1, 4]]


def test_left_truncation_keeps_bos_and_the_end_of_the_response(tokenizer):
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Explain gradient descent. " * 20}, {"role": "assistant", "content": "It moves parameters."}],
        tokenize=False,
    )
    full = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids, truncated = encode([text, "short"], tokenizer, add_special_tokens=False, max_length=16, truncation="left")
    assert truncated == 1 and len(ids[0]) == 16
    assert ids[0][0] == tokenizer.bos_token_id and ids[0][1:] == full[-15:]  # BOS + the last 15 tokens
    with pytest.raises(ValueError, match=r"conversation 0 has \d+ tokens > max_length 16; set truncation='left' or raise max_length"):
        encode([text], tokenizer, add_special_tokens=False, max_length=16, truncation="error")


def test_truncations_are_counted_in_the_logged_metrics(classifier_dir):
    logged = {}
    reward = load_reward(classifier_dir, max_length=12, name="rm")
    reward(prompts=["What is the capital of France? " * 5, "Hi"], completions=["Paris", "Yo"], log_metric=logged.__setitem__)
    assert logged["rm/truncated_frac"] == 0.5  # one of two conversations was cut


def test_multi_output_head_is_combined_by_attribute_weights(attributes_dir, chat_batch):
    prompts, completions = chat_batch
    names, weights = ["helpfulness", "correctness", "verbosity"], [0.5, 1.0, -0.25]
    reward = load_reward(attributes_dir, attributes=names, attribute_weights=weights, name="steer")
    metrics, extra = {}, {}
    got = reward(prompts=prompts, completions=completions, log_metric=metrics.__setitem__, log_extra=extra.__setitem__)
    tok = AutoTokenizer.from_pretrained(attributes_dir)
    model = AutoModelForSequenceClassification.from_pretrained(attributes_dir).eval()
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids = tok(tok.apply_chat_template(p + c, tokenize=False), add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**ids).logits[0]
        assert got[i] == pytest.approx(float(logits @ torch.tensor(weights)), abs=1e-5)  # sum_k w_k * logit_k
        assert extra["steer/correctness"][i] == pytest.approx(logits[1].item(), abs=1e-5)
    assert set(metrics) >= {"steer/helpfulness_mean", "steer/correctness_mean", "steer/verbosity_mean"}


def test_conversational_data_without_chat_template_fails_before_scoring(plain_tokenizer_classifier_dir):
    reward = load_reward(plain_tokenizer_classifier_dir)
    assert len(reward(prompts=["plain text works"], completions=[" fine"])) == 1
    with pytest.raises(ValueError, match="chat_template="):
        reward(prompts=[[{"role": "user", "content": "hi"}]], completions=[[{"role": "assistant", "content": "yo"}]])


def test_encode_counts_only_over_long_inputs(tokenizer):
    conversations = conversations_from_trl(["a", "b"], ["c", "d"])
    assert all(isinstance(c, Conversation) for c in conversations)
    _, truncated = encode(["short", "also short"], tokenizer, add_special_tokens=True, max_length=64)
    assert truncated == 0


def test_micro_batch_plan_is_optimal_against_brute_force():
    """The DP's cost equals the best contiguous split of the sorted lengths, found exhaustively."""
    import itertools
    import random

    from rewardbridge.scorers.tokens import plan_micro_batches

    def cost(batches, lengths, overhead):
        return sum(len(b) * max(lengths[i] for i in b) + overhead for b in batches)

    rng = random.Random(0)
    for _ in range(30):
        lengths = [rng.choice([rng.randint(5, 30), rng.randint(100, 300)]) for _ in range(rng.randint(1, 8))]
        budget, overhead = rng.choice([200, 600, 5000]), rng.choice([0, 50, 256])
        plan = plan_micro_batches(lengths, budget, overhead)
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        best = float("inf")
        for cuts in itertools.product([0, 1], repeat=len(order) - 1):
            batches, current = [], [order[0]]
            for index, cut in zip(order[1:], cuts):
                if cut:
                    batches.append(current)
                    current = []
                current.append(index)
            batches.append(current)
            if all(len(b) == 1 or len(b) * lengths[b[0]] <= budget for b in batches):
                best = min(best, cost(batches, lengths, overhead))
        assert cost(plan, lengths, overhead) == best


def test_a_conversation_the_chat_template_refuses_is_input_error_naming_it(classifier_dir):
    # Issue 18 review: a template's raise_exception (a TemplateError) was a 500 the clients retried.
    refusing = ("{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tool turns') }}{% endif %}"
                "<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}")
    reward = load_reward(classifier_dir, chat_template=refusing)
    good = [{"role": "user", "content": "hi"}]
    bad = [{"role": "user", "content": "a"}, {"role": "tool", "content": "t"}]
    answer = [{"role": "assistant", "content": "ok"}]
    with pytest.raises(InputError, match=r"sample 1: the reward model.s chat template refuses this conversation.*no tool turns"):
        reward(prompts=[good, bad], completions=[answer, answer])
