"""The served model (server/served.py) checks a round per request: one request's bad rows fail
that request alone, found without scoring the others again (issue 18 review, item 3)."""

import math

import pytest
import torch

from rewardbridge.conversation import Conversation

from rewardbridge import load_reward
from rewardbridge.errors import InputError, ScoreError
from rewardbridge.server.served import ServedModel

REFUSING = ("{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tool turns') }}{% endif %}"
            "<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}")


def chat(prompt, completion, role="user"):
    from rewardbridge.conversation import Conversation

    return Conversation(({"role": role, "content": prompt},), ({"role": "assistant", "content": completion},))


def test_each_request_of_a_round_gets_its_own_scores_or_its_own_error(classifier_dir):
    served = ServedModel(classifier_dir, {"chat_template": REFUSING})
    readout, forwards = served.chat_scorer.readout, []

    def nan_for_long_rows(model, input_ids, attention_mask):  # a model that scores NaN for long inputs
        forwards.append(input_ids.shape[0])
        value, named = readout(model, input_ids, attention_mask)
        return torch.where(attention_mask.sum(1) > 40, torch.tensor(math.nan), value), named

    served.chat_scorer.readout = nan_for_long_rows
    groups = [[chat("Hi?", "Hello.")], [chat("a", "t", role="tool")], [chat("Q?", "word " * 60)], [chat("2+2?", "4."), chat("Sky?", "Blue.")]]
    outcomes = served.score_requests("chat", groups)
    assert isinstance(outcomes[1], InputError) and "sample 0: the reward model's chat template refuses" in str(outcomes[1])  # the template refused it
    assert isinstance(outcomes[2], ScoreError) and "sample 0" in str(outcomes[2])  # its NaN, not its batch-mates'
    reference = load_reward(classifier_dir, chat_template=REFUSING)
    expected = reference(prompts=[[{"role": "user", "content": p}] for p in ("Hi?", "2+2?", "Sky?")],
                         completions=[[{"role": "assistant", "content": c}] for c in ("Hello.", "4.", "Blue.")])
    assert outcomes[0].values.tolist() + outcomes[3].values.tolist() == pytest.approx(expected, abs=1e-5)
    assert sum(forwards) == 4  # the four rendered rows went through the model once; nothing was scored again


def test_classify_text_gets_the_tokenizers_bos_once(classifier_dir):
    # Issue 18 review: /classify scored plain text without the BOS that vLLM (and in-process
    # render='text') adds. With a tokenizer that adds one (Llama's), plain text gets it, and a
    # text already rendered by a chat template ({{ bos_token }}...) does not get a second.
    from tokenizers.processors import TemplateProcessing

    from rewardbridge.protocols.base import PLAIN, TEXT
    from rewardbridge.server.served import _PlainText

    served = ServedModel(classifier_dir, {})
    tokenizer = served.plain_scorer.tokenizer
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    served.plain_scorer.renderer = _PlainText(tokenizer)
    plain, rendered = served.plain_scorer.tokenize([Conversation("Hello there", ""), Conversation("<s>Hello there", "")])[0]
    assert plain == rendered and plain[0] == bos and plain[1] != bos  # one BOS each
    text = served.text_scorer.tokenize([Conversation("Hello there", "")])[0][0]
    assert text == plain[1:]  # Triton/OpenRLHF text is read as given: no special tokens (OpenRLHF's serve_rm)
    got = served.score_requests(PLAIN, [["Hello there"]])[0].values
    assert got.tolist() == pytest.approx(served.score_requests(TEXT, [["<s>Hello there"]])[0].values.tolist(), abs=1e-6)
