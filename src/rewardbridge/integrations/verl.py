"""A rewardbridge reward as verl's ``custom_reward_function`` (verl 0.9).

verl's reward loop (verl/experimental/reward_loop/reward_manager/naive.py ``run_single``)
awaits ``compute_score(data_source=, solution_str=, ground_truth=, extra_info=, **reward_kwargs)``
once per sample, for all samples of a batch at once (``asyncio.gather``), with
``solution_str`` the decoded RESPONSE only; it takes a float or a dict with ``"score"``.
Launch::

    python -m verl.trainer.main_ppo ... \\
      reward.custom_reward_function.path=pkg://rewardbridge.integrations.verl \\
      reward.custom_reward_function.name=compute_score \\
      +reward.custom_reward_function.reward_kwargs.source=/models/Skywork-Reward-V2 \\
      +reward.custom_reward_function.reward_kwargs.prompt_key=question

The prompt is not passed to a custom reward: it is read from ``extra_info[prompt_key]``
(verl's example preprocessors store the question there), a string or a list of messages.
Concurrent calls are gathered into micro-batches, so the reward model runs once per batch.
"""

from __future__ import annotations

import weakref
from typing import Any, Mapping

from ..errors import InputError, OptionTypeError, RemoteError
from .batching import AsyncBatcher
from .shared import shared_reward

# verl adds these when a reward-model router is configured (naive.py); rewardbridge has its own model.
_VERL_EXTRAS = {"reward_router_address", "reward_model_tokenizer"}

_batchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> {reward key: AsyncBatcher}


async def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping | None = None,
    *,
    source: str | None = None,
    options: Mapping | None = None,
    prompt_key: str = "question",
    max_batch_size: int = 64,
    batch_wait_ms: float = 20.0,
    **kwargs: Any,
) -> float:
    """The reward of one verl sample (a float); calls made together are scored together.

    Args:
        data_source, ground_truth: verl's columns; unused (a reward model needs no reference).
        solution_str: the decoded response.
        extra_info: the row's ``extra_info``; ``extra_info[prompt_key]`` is the prompt.
        source / options: load_reward's arguments (default: ``REWARDBRIDGE_SOURCE`` /
            ``REWARDBRIDGE_OPTIONS``); loaded once per process.
        max_batch_size: samples per reward-model call; batch_wait_ms: how long the first
            sample of a batch waits for others.
    """
    unknown = set(kwargs) - _VERL_EXTRAS
    if unknown:
        raise OptionTypeError(
            f"verl compute_score got unknown reward_kwargs {sorted(unknown)}; it takes source, options, prompt_key, "
            "max_batch_size, batch_wait_ms"
        )
    reward = shared_reward(source, options, caller="verl")
    extra_info = extra_info or {}
    if prompt_key not in extra_info:
        raise InputError(
            f"verl compute_score reads the prompt from extra_info[{prompt_key!r}], but this row's extra_info has "
            f"{sorted(extra_info)}; store the prompt there in preprocessing or set reward_kwargs.prompt_key"
        )
    prompt = _plain_prompt(extra_info[prompt_key])
    import asyncio

    per_loop = _batchers.setdefault(asyncio.get_running_loop(), {})
    key = (id(reward), max_batch_size, batch_wait_ms)
    if key not in per_loop:
        per_loop[key] = AsyncBatcher(_Scorer(reward), max_batch=max_batch_size, wait_s=batch_wait_ms / 1000)
    return await per_loop[key].submit((prompt, solution_str))


class _Scorer:
    """items [(prompt, response)] (B,) -> scores (B,): one call of the reward."""

    def __init__(self, reward):
        self.reward = reward

    def __call__(self, items):
        prompts = [p for p, _ in items]
        completions = [r if isinstance(p, str) else [{"role": "assistant", "content": r}] for p, r in items]
        scores = self.reward(prompts=prompts, completions=completions)
        if any(s is None for s in scores):
            # verl has no "no score"; a made-up number would train the policy on it.
            raise RemoteError(f"{self.reward.__name__} returned no score for {scores.count(None)} of {len(scores)} samples")
        return scores


def _plain_prompt(prompt: Any) -> str | list[dict]:
    """A string, or messages (verl's parquet rows hold numpy arrays of dicts)."""
    if isinstance(prompt, str):
        return prompt
    try:
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    except (TypeError, KeyError):
        raise InputError(f"verl prompt must be a string or a list of {{'role', 'content'}} messages, got {prompt!r:.200}") from None
