"""rewardbridge.integrations.openrlhf, loaded and called by OpenRLHF 0.11.2's own executor code.

``openrlhf/utils/__init__.py`` imports math and DeepSpeed helpers whose dependencies are not
installed here, so the test registers ``openrlhf`` and ``openrlhf.utils`` as bare packages
(their real directories, their ``__init__`` not run) and imports the real
``openrlhf/utils/agent.py``. Its ``SingleTurnAgentExecutor`` loads our file from the path
given as ``--reward.remote_url`` and calls ``reward_func`` exactly as in training. Only the
vLLM engine is a stand-in (no vLLM here): it returns fixed response tokens.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
import types
from types import SimpleNamespace

import pytest
import torch

import rewardbridge.integrations.openrlhf as rb_openrlhf
from rewardbridge.integrations.shared import shared_reward
from rewardbridge.testing import build_tokenizer
from conftest import CountingScorer

POLICY_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}### assistant:{% endif %}"
)
MESSAGES = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me a joke."}],
    [{"role": "user", "content": "How many legs does a spider have?"}],
    [{"role": "user", "content": "Which city is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "Explain gradient descent."}],
]
ANSWERS = [" Paris.", " Why did the model cross the road?", " Eight.", " Lyon?", " No.", " Six legs."]


@pytest.fixture
def openrlhf_agent(monkeypatch):
    spec = importlib.util.find_spec("openrlhf")
    if spec is None:
        pytest.skip("openrlhf is not installed: make setup installs openrlhf==0.11.2 --no-deps")
    root = spec.submodule_search_locations[0]
    for name, path in [("openrlhf", root), ("openrlhf.utils", f"{root}/utils")]:
        package = types.ModuleType(name)
        package.__path__ = [path]
        monkeypatch.setitem(sys.modules, name, package)
    loaded = ["openrlhf.utils.logging_utils", "openrlhf.utils.agent"]
    yield importlib.import_module("openrlhf.utils.agent")
    for name in loaded:  # imported under the bare packages: not left for other tests
        sys.modules.pop(name, None)


class FakeVLLMEngine:
    """vLLM's ``generate`` as OpenRLHF awaits it: one output with token_ids and finish_reason."""

    def __init__(self, responses: dict[tuple[int, ...], list[int]]):
        self.responses = responses

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        output = SimpleNamespace(token_ids=self.responses[tuple(prompt_token_ids)], finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[output])


def test_openrlhf_executor_calls_reward_func(openrlhf_agent, classifier_dir, tmp_path, monkeypatch):
    policy = build_tokenizer(chat_template=POLICY_TEMPLATE, vocab_size=350)
    policy.save_pretrained(tmp_path / "policy")
    monkeypatch.setenv("REWARDBRIDGE_SOURCE", classifier_dir)
    monkeypatch.delenv("REWARDBRIDGE_OPTIONS", raising=False)
    monkeypatch.setenv("REWARDBRIDGE_POLICY_TOKENIZER", str(tmp_path / "policy"))
    monkeypatch.setenv("REWARDBRIDGE_BATCH_WAIT_MS", "500")
    reward = shared_reward(classifier_dir, {}, caller="test")
    counting = CountingScorer(reward.scorer)
    monkeypatch.setattr(reward, "_scorer", counting)

    # --apply_chat_template: OpenRLHF's prompts are the policy template with the generation prompt.
    messages = MESSAGES  # distinct prompts: the stand-in engine answers by prompt
    prompts = [policy.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
    engine = FakeVLLMEngine({
        tuple(policy(p, add_special_tokens=False)["input_ids"]): policy(a, add_special_tokens=False)["input_ids"] + [policy.eos_token_id]
        for p, a in zip(prompts, ANSWERS)
    })
    executor = openrlhf_agent.SingleTurnAgentExecutor(remote_rm_url=rb_openrlhf.__file__)
    params = SimpleNamespace(max_tokens=32, logprobs=None)  # vLLM SamplingParams fields the executor reads

    async def rollout():  # one execute per sample, concurrently, as OpenRLHF's vLLM actor runs them
        return await asyncio.gather(*(executor.execute(p, None, params, 256, policy, engine) for p in prompts))

    outputs = asyncio.run(rollout())

    assert all(o["reward"] is not None for o in outputs), "OpenRLHF swallowed a reward_func error (see its log)"
    # Six concurrent one-sample calls, one reward-model call.
    assert counting.batch_sizes == [len(ANSWERS)]
    counting.batch_sizes.clear()
    # The reward OpenRLHF stored == the reward's own score for (prompt messages, response without EOS).
    expected = reward(prompts=messages, completions=[[{"role": "assistant", "content": a}] for a in ANSWERS])
    got = torch.cat([o["reward"] for o in outputs])
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([o["scores"] for o in outputs]), got)
    assert set(outputs[0]["extra_logs"]) == {f"{reward.__name__}/score"}
    assert len(set(expected)) == len(expected)


@pytest.mark.parametrize(
    "query, prompt, env, message",
    [
        ("Hello there", "Bye", {}, "does not start with its prompt"),
        ("Q A", "Q", {"REWARDBRIDGE_OPTIONS": "{not json"}, "REWARDBRIDGE_OPTIONS is not JSON"),
        ("Q A", "Q", {"REWARDBRIDGE_SOURCE": ""}, "REWARDBRIDGE_SOURCE"),
        ("Q A", "Q", {"REWARDBRIDGE_MAX_BATCH_SIZE": "many"}, "REWARDBRIDGE_MAX_BATCH_SIZE"),
    ],
)
def test_openrlhf_bad_input_is_named(classifier_dir, monkeypatch, query, prompt, env, message):
    monkeypatch.setattr(rb_openrlhf, "_state", {})
    monkeypatch.setenv("REWARDBRIDGE_SOURCE", classifier_dir)
    monkeypatch.delenv("REWARDBRIDGE_POLICY_TOKENIZER", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):  # ConfigError and InputError are ValueErrors
        rb_openrlhf.reward_func([query], [prompt], [None])


def test_openrlhf_plain_text_without_policy_tokenizer(classifier_dir, monkeypatch):
    monkeypatch.setattr(rb_openrlhf, "_state", {})
    monkeypatch.setenv("REWARDBRIDGE_SOURCE", classifier_dir)
    monkeypatch.delenv("REWARDBRIDGE_POLICY_TOKENIZER", raising=False)
    monkeypatch.delenv("REWARDBRIDGE_OPTIONS", raising=False)
    out = rb_openrlhf.reward_func(["2+2= 4", "2+2= 5"], ["2+2=", "2+2="], [None, None])
    reward = shared_reward(classifier_dir, {}, caller="test")
    # Without the policy tokenizer: the prompt text and the rest of the query, as plain text.
    torch.testing.assert_close(out["rewards"], torch.tensor(reward(prompts=["2+2=", "2+2="], completions=[" 4", " 5"])))
    assert out["rewards"].shape == out["scores"].shape == (2,)
