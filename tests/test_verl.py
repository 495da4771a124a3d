"""rewardbridge.integrations.verl, loaded and called the way verl 0.9.1 does it.

verl's package __init__ imports ray (not installable here), so the test loads verl's own
``verl/utils/import_utils.py`` (the loader behind ``custom_reward_function.path``) from its
file, and reproduces the two call sites that cannot be imported without ray, line for line:
``_call_with_kwargs_async`` (verl/trainer/ppo/reward.py) and ``NaiveRewardManager.run_single``
+ ``RewardLoopWorker.compute_score_batch`` (verl/experimental/reward_loop/).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
from functools import partial

import pytest
import torch

from rewardbridge.errors import ConfigError, InputError, OptionTypeError
from rewardbridge.integrations.shared import shared_reward
from conftest import CountingScorer

PROMPTS = ["What is the capital of France?", "Tell me a joke.", "How many legs does a spider have?", "Explain gradient descent."]
ANSWERS = ["Paris.", "Why did the model cross the road?", "Eight legs.", "It follows the gradient down.",
           "Lyon?", "No.", "Six.", "It moves parameters against the gradient of the loss."]


@pytest.fixture(scope="module")
def verl_import_utils():
    spec = importlib.util.find_spec("verl")
    if spec is None:
        pytest.skip("verl is not installed: make setup installs verl==0.9.1 --no-deps")
    path = os.path.join(spec.submodule_search_locations[0], "utils", "import_utils.py")
    module_spec = importlib.util.spec_from_file_location("verl_import_utils", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


# verl/trainer/ppo/reward.py, verbatim: how reward_kwargs reach an async compute_score.
async def _call_with_kwargs_async(raw_fn, extra_kwargs, *args, **kwargs):
    merged_kwargs = {**kwargs, **extra_kwargs}
    return await raw_fn(*args, **merged_kwargs)


def verl_reward_loop(compute_score, tokenizer, samples):
    """RewardLoopWorker.compute_score_batch -> NaiveRewardManager.run_single, one task per sample."""

    async def run_single(loop, sample):
        prompt, response_ids = sample
        # naive.py: the response decoded in the default executor, special tokens skipped.
        response_str = await loop.run_in_executor(None, lambda: tokenizer.decode(response_ids, skip_special_tokens=True))
        extra_info = {"split": "train", "index": 0, "question": prompt}
        extra_info["num_turns"] = None
        extra_info["rollout_reward_scores"] = {}
        if inspect.iscoroutinefunction(compute_score):
            result = await compute_score(data_source="openai/gsm8k", solution_str=response_str, ground_truth="42", extra_info=extra_info)
        else:
            result = await loop.run_in_executor(None, lambda: compute_score(
                data_source="openai/gsm8k", solution_str=response_str, ground_truth="42", extra_info=extra_info))
        score = result["score"] if isinstance(result, dict) else result
        return {"reward_score": score, "reward_extra_info": {"acc": score}}

    async def compute_score_batch():
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(run_single(loop, s)) for s in samples]
        return await asyncio.gather(*tasks)

    return asyncio.run(compute_score_batch())


@pytest.mark.parametrize(
    "max_batch_size, batch_sizes",
    [
        (64, [8]),        # 8 concurrent samples, one reward-model call
        (3, [2, 3, 3]),   # capped at 3 per call: 3 + 3 + 2
    ],
)
def test_verl_reward_loop_scores_in_micro_batches(verl_import_utils, classifier_dir, tokenizer, monkeypatch,
                                                  max_batch_size, batch_sizes):
    raw_fn = verl_import_utils.load_extern_object("pkg://rewardbridge.integrations.verl", "compute_score")
    assert inspect.iscoroutinefunction(raw_fn)  # verl picks the async call path from this
    reward_kwargs = {"source": classifier_dir, "max_batch_size": max_batch_size, "batch_wait_ms": 300}
    compute_score = partial(_call_with_kwargs_async, raw_fn, reward_kwargs)

    reward = shared_reward(classifier_dir, {}, caller="verl")
    counting = CountingScorer(reward.scorer)
    monkeypatch.setattr(reward, "_scorer", counting)
    prompts = PROMPTS * 2
    samples = [(p, tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]) for p, a in zip(prompts, ANSWERS)]

    results = verl_reward_loop(compute_score, tokenizer, samples)

    assert sorted(counting.batch_sizes) == batch_sizes
    # Each sample's score == the reward's own score for (prompt, response) scored directly.
    counting.batch_sizes.clear()
    expected = reward(prompts=prompts, completions=ANSWERS)
    torch.testing.assert_close(torch.tensor([r["reward_score"] for r in results]), torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert len(set(expected)) == len(expected)


def test_verl_reads_env_and_chat_prompts(classifier_dir, monkeypatch):
    from rewardbridge.integrations.verl import compute_score

    monkeypatch.setenv("REWARDBRIDGE_SOURCE", classifier_dir)
    monkeypatch.setenv("REWARDBRIDGE_OPTIONS", '{"max_length": 512}')
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me a joke."}]
    score = asyncio.run(compute_score("chat", "No.", None, {"prompt": messages}, prompt_key="prompt"))
    reward = shared_reward(classifier_dir, {"max_length": 512}, caller="verl")
    # A chat prompt is scored as messages + one assistant turn, through the reward's own template.
    assert score == pytest.approx(reward(prompts=[messages], completions=[[{"role": "assistant", "content": "No."}]])[0], abs=1e-6)


@pytest.mark.parametrize(
    "extra_info, kwargs, error, message",
    [
        ({"index": 0}, {}, InputError, "prompt_key"),                          # no prompt in extra_info
        ({"question": "Hi"}, {"sorce": "x"}, OptionTypeError, "sorce"),         # a misspelt reward_kwarg
        ({"question": "Hi"}, {"options": {"normalize": "zscore"}}, ConfigError, "normalize='none'"),
        ({"question": 3}, {}, InputError, "string or a list"),                 # a prompt of the wrong type
    ],
)
def test_verl_bad_input_is_named(classifier_dir, extra_info, kwargs, error, message):
    from rewardbridge.integrations.verl import compute_score

    kwargs = {"source": classifier_dir, **kwargs}
    with pytest.raises(error, match=message):
        asyncio.run(compute_score("d", "text", None, extra_info, **kwargs))
