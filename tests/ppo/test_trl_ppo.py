"""rewardbridge.integrations.trl_ppo against trl 1.12.0's own PPO code (run by `make test-ppo` in .venv-ppo).

trl 1.13+ has no PPOTrainer, so the main suite (trl 1.16) skips this file.
"""

from __future__ import annotations

import pytest
import torch

ppo = pytest.importorskip("trl.experimental.ppo", reason="needs trl<=1.12 (PPOTrainer): run `make test-ppo`")

from trl.experimental import utils as trl_utils  # noqa: E402
from trl.experimental.ppo import ppo_trainer  # noqa: E402

from rewardbridge import load_reward  # noqa: E402
from rewardbridge.errors import ConfigError, InputError  # noqa: E402
from rewardbridge.testing import build_tokenizer, llama_config  # noqa: E402

# The policy speaks a different template from the reward model (whose roles are special
# tokens): the adapter must decode the policy's ids and re-render with the reward's template.
POLICY_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}### assistant:{% endif %}"
)
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me a joke."}],
    [{"role": "user", "content": "How many legs does a spider have?"}],
    [{"role": "user", "content": "Explain gradient descent."}],
]


@pytest.fixture(scope="module")
def policy_tokenizer():
    tok = build_tokenizer(chat_template=POLICY_TEMPLATE, vocab_size=350)
    tok.padding_side = "left"  # PPOTrainer's queries are left-padded
    return tok


def query_ids(tok, messages) -> list[int]:
    """A PPO dataset row: the policy template with the generation prompt, as TRL's ppo_tldr example makes it."""
    return tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]


def ppo_batch(tok, queries: list[list[int]], responses: list[list[int]], width: int):
    """query_responses as PPOTrainer builds them: queries left-padded to context_length, responses
    cut after the first EOS (trl truncate_response) and right-padded to ``width``."""
    pad = tok.pad_token_id
    context_length = max(map(len, queries))
    rows = []
    for q, r in zip(queries, responses):
        r = r[: r.index(tok.eos_token_id) + 1] if tok.eos_token_id in r else r
        rows.append([pad] * (context_length - len(q)) + q + r + [pad] * (width - len(r)))
    return torch.tensor(rows), context_length


def test_get_reward_reads_the_rewards_own_score(classifier_dir, policy_tokenizer):
    reward = load_reward(classifier_dir)
    model = reward.as_ppo_reward_model(policy_tokenizer)
    tok = policy_tokenizer
    answers = ["Paris is the capital.", "Why did the reward model cross the road?", "A spider has eight legs.", "It moves"]
    responses = [tok(a, add_special_tokens=False)["input_ids"] for a in answers]
    # Row 0 stops at EOS and then runs on (cut by truncate_response); row 3 fills the whole width (no EOS).
    responses[0] = responses[0] + [tok.eos_token_id] + tok(" junk after eos", add_special_tokens=False)["input_ids"]
    responses[1] = responses[1] + [tok.eos_token_id]
    responses[2] = responses[2] + [tok.eos_token_id]
    width = max(len(responses[1]), len(responses[3]) + 1, len(responses[0]))
    responses[3] = (responses[3] * width)[:width]
    queries = [query_ids(tok, p) for p in PROMPTS]
    query_responses, context_length = ppo_batch(tok, queries, responses, width)

    _, score, _ = trl_utils.get_reward(model, query_responses, tok.pad_token_id, context_length)

    # Expected: the reward called directly on the texts, re-rendered with its own template;
    # the response is the decoded policy tokens up to EOS (special tokens dropped).
    texts = [answers[0], answers[1], answers[2], tok.decode((responses[3] * width)[:width], skip_special_tokens=True)]
    expected = reward(prompts=PROMPTS, completions=[[{"role": "assistant", "content": t}] for t in texts])
    assert score.shape == (4,)
    torch.testing.assert_close(score, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert len(set(expected)) == 4  # four different texts, four different scores: no constant passes


def test_plain_text_policy_with_response_start(classifier_dir):
    tok = build_tokenizer(chat_template=None)
    tok.padding_side = "left"
    reward = load_reward(classifier_dir)
    model = reward.as_ppo_reward_model(tok, response_start="Answer:")
    prompts = ["Question: What is the capital of France? Answer:", "Question: Tell me a joke. Answer:"]
    answers = [" Paris.", " Why did the model cross the road?"]
    queries = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    responses = [tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for a in answers]
    query_responses, context_length = ppo_batch(tok, queries, responses, max(map(len, responses)))

    _, score, _ = trl_utils.get_reward(model, query_responses, tok.pad_token_id, context_length)

    # A plain-text policy: the prompt stays text (the reward renders it as one user turn).
    expected = reward(prompts=prompts, completions=answers)
    torch.testing.assert_close(score, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_pad_equal_to_eos_keeps_the_prompts_eos(classifier_dir):
    """With pad == EOS, get_reward masks the EOS that ends each prompt turn; the adapter restores it."""
    tok = build_tokenizer()  # the reward's own template: every turn ends in </s>
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    reward = load_reward(classifier_dir)
    model = reward.as_ppo_reward_model(tok)
    answers = ["Paris.", "Why did the model cross the road?"]
    queries = [query_ids(tok, p) for p in PROMPTS[:2]]
    responses = [tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for a in answers]
    query_responses, context_length = ppo_batch(tok, queries, responses, max(map(len, responses)))

    _, score, _ = trl_utils.get_reward(model, query_responses, tok.pad_token_id, context_length)

    # The prompt comes back as messages (system turn included), not as templated text.
    expected = reward(prompts=PROMPTS[:2], completions=[[{"role": "assistant", "content": a}] for a in answers])
    torch.testing.assert_close(score, torch.tensor(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "chat_template, response_start, error, message",
    [
        (None, None, ConfigError, "response_start"),  # nothing marks where a query ends
    ],
)
def test_bad_setup_is_named(classifier_dir, chat_template, response_start, error, message):
    tok = build_tokenizer(chat_template=chat_template)
    with pytest.raises(error, match=message):
        load_reward(classifier_dir).as_ppo_reward_model(tok, response_start=response_start)


def test_queries_without_the_marker_fail_clearly(classifier_dir, policy_tokenizer):
    model = load_reward(classifier_dir).as_ppo_reward_model(policy_tokenizer, response_start="TL;DR:")
    tok = policy_tokenizer
    batch, context_length = ppo_batch(tok, [query_ids(tok, PROMPTS[0])], [[tok.eos_token_id]], 1)
    with pytest.raises(InputError, match="response_start"):
        trl_utils.get_reward(model, batch, tok.pad_token_id, context_length)


def test_ppo_trainer_trains_with_a_rewardbridge_reward(classifier_dir, policy_tokenizer, tmp_path, monkeypatch):
    from datasets import Dataset
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    tok = policy_tokenizer
    torch.manual_seed(0)
    policy = LlamaForCausalLM(llama_config(tok))
    value = LlamaForSequenceClassification(llama_config(tok, num_labels=1))
    reward = load_reward(classifier_dir)
    reward_model = reward.as_ppo_reward_model(tok)
    rows = [query_ids(tok, p) for p in PROMPTS]
    dataset = Dataset.from_dict({"input_ids": rows})

    # Record what PPOTrainer's own get_reward returned for the reward model (the score it used).
    read = []
    real_get_reward = ppo_trainer.get_reward

    def recording_get_reward(model, query_responses, pad_token_id, context_length):
        out = real_get_reward(model, query_responses, pad_token_id, context_length)
        if model is reward_model:
            read.append((query_responses.clone(), context_length, out[1].clone()))
        return out

    monkeypatch.setattr(ppo_trainer, "get_reward", recording_get_reward)
    args = ppo.PPOConfig(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=2,
        gradient_accumulation_steps=1, num_mini_batches=1, num_ppo_epochs=1, total_episodes=4,
        local_rollout_forward_batch_size=2, response_length=6, stop_token="eos", num_sample_generations=0,
        save_strategy="no", logging_steps=1, seed=0,
    )
    trainer = ppo.PPOTrainer(
        args=args, processing_class=tok, model=policy, ref_model=None, reward_model=reward_model,
        train_dataset=dataset, eval_dataset=dataset, value_model=value,
    )
    before = [p.detach().clone() for p in policy.parameters()]
    trainer.train()

    # total_episodes 4 / batch 2 = 2 PPO updates, each scoring one rollout batch of 2.
    assert trainer.state.global_step == 2 and len(read) == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))  # the policy learned
    by_ids = {tuple(r): p for r, p in zip(rows, PROMPTS)}
    for query_responses, context_length, score in read:
        prompts, completions = [], []
        for row in query_responses.tolist():
            query = [t for t in row[:context_length] if t != tok.pad_token_id]
            response = row[context_length:]
            response = response[: response.index(tok.pad_token_id)] if tok.pad_token_id in response else response
            prompts.append(by_ids[tuple(query)])  # the dataset prompt these ids came from
            completions.append([{"role": "assistant", "content": tok.decode(response, skip_special_tokens=True)}])
        # The score the trainer read == the reward's own score for those texts.
        torch.testing.assert_close(score, torch.tensor(reward(prompts=prompts, completions=completions)), rtol=1e-5, atol=1e-6)
