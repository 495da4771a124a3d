"""Rendering: TRL prompt/completion -> the text the reward model reads."""

import pytest

from rewardbridge.conversation import Conversation, Renderer, conversations_from_trl, render_steerlm


def test_chat_render_is_the_reward_tokenizers_template_over_prompt_and_completion(tokenizer, chat_batch):
    prompts, completions = chat_batch
    renderer = Renderer(tokenizer)
    for p, c in zip(prompts, completions):
        text = renderer.render(Conversation.from_trl(p, c))
        # Same call as the model cards: apply_chat_template(prompt + [assistant], no generation prompt).
        assert text == tokenizer.apply_chat_template(p + c, tokenize=False, add_generation_prompt=False)
    multi_turn = renderer.render(Conversation.from_trl(prompts[2], completions[2]))
    assert multi_turn.startswith("<s><|system|>You are terse.</s><|user|>Tell me a joke.</s><|assistant|>No.</s>")
    assert multi_turn.endswith("<|assistant|>Why did the model cross the road?</s>")


def test_plain_text_prompt_becomes_a_user_turn_under_a_chat_template(tokenizer):
    text = Renderer(tokenizer).render(Conversation.from_trl("2+2=", "4"))
    assert text == "<s><|user|>2+2=</s><|assistant|>4</s>"


def test_plain_text_without_template_is_concatenated_with_special_tokens(tokenizer):
    renderer = Renderer(tokenizer, mode="text")
    conversation = Conversation.from_trl("2+2=", " 4")
    assert renderer.render(conversation) == "2+2= 4"
    assert renderer.add_special_tokens(conversation)  # a BERT classifier needs its [CLS]/[SEP]
    assert not Renderer(tokenizer).add_special_tokens(conversation)  # the template carries them


def test_chat_data_without_a_chat_template_says_what_to_pass():
    from rewardbridge.testing import build_tokenizer

    renderer = Renderer(build_tokenizer(chat_template=None))
    conversation = Conversation.from_trl([{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "yo"}])
    with pytest.raises(ValueError, match="chat_template="):
        renderer.render(conversation)


def test_judge_render_asks_one_question_and_ends_at_the_generation_prompt(tokenizer):
    renderer = Renderer(tokenizer, judge_prompt="Q: {prompt}\nA: {response}\nGood? Yes or No.")
    text = renderer.render(Conversation.from_trl([{"role": "user", "content": "2+2?"}], [{"role": "assistant", "content": "4"}]))
    assert text == "<s><|user|>Q: 2+2?\nA: 4\nGood? Yes or No.</s><|assistant|>"
    with pytest.raises(ValueError, match="both"):
        Renderer(tokenizer, judge_prompt="no placeholders")


def test_steerlm_template_matches_nemo_aligner():
    conversation = Conversation.from_trl(
        [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}],
        [{"role": "assistant", "content": "r"}],
    )
    assert render_steerlm(conversation, "S") == (
        "<extra_id_0>System\nS\n<extra_id_1>User\nu1\n<extra_id_1>Assistant\na1\n"
        "<extra_id_1>User\nu2\n<extra_id_1>Assistant\nr\n<extra_id_2>"
    )
    with_system = Conversation.from_trl([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "u"}], "r")
    assert render_steerlm(with_system).startswith("<extra_id_0>System\nBe brief.\n<extra_id_1>User\nu\n")


def test_prompt_key_groups_equal_prompts_only(chat_batch):
    prompts, completions = chat_batch
    keys = [c.prompt_key() for c in conversations_from_trl(prompts, completions)]
    assert keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2]
    assert Conversation.from_trl("a", "x").prompt_key() != Conversation.from_trl("b", "x").prompt_key()


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        conversations_from_trl(["a", "b"], ["x"])
