"""A rewardbridge reward as OpenRLHF's reward-function file (OpenRLHF 0.11).

OpenRLHF (openrlhf/utils/agent.py ``SingleTurnAgentExecutor``) loads a ``--reward.remote_url``
ending in ``.py`` with ``spec_from_file_location`` and calls its ``reward_func(queries,
prompts, labels)`` through ``asyncio.to_thread``, one sample per call, many at once.
``queries`` are ``decode(prompt ids + response ids, skip_special_tokens=False)`` with the
POLICY's tokenizer; ``prompts`` the prompt text as generated from (already in the policy's
chat template with ``--apply_chat_template``). Launch::

    export REWARDBRIDGE_SOURCE=/models/Skywork-Reward-V2 REWARDBRIDGE_POLICY_TOKENIZER=/models/policy
    python -m openrlhf.cli.train_ppo_ray ... --reward.remote_url \\
        $(python -c "import rewardbridge.integrations.openrlhf as m; print(m.__file__)")

Environment: ``REWARDBRIDGE_SOURCE`` and ``REWARDBRIDGE_OPTIONS`` (JSON load_reward options)
name the reward; ``REWARDBRIDGE_POLICY_TOKENIZER`` (the policy's tokenizer directory or hub
id, recommended) turns the templated prompt back into messages and drops the policy's
special tokens (EOS) from the response; without it both are scored as plain text.
``REWARDBRIDGE_MAX_BATCH_SIZE`` / ``REWARDBRIDGE_BATCH_WAIT_MS`` shape the micro-batches that
gather concurrent calls. Everything is loaded once per process.

The file is executed outside its package, so it imports rewardbridge by absolute name.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Sequence

import torch

from rewardbridge.errors import ConfigError, InputError, RemoteError
from rewardbridge.integrations.batching import ThreadBatcher
from rewardbridge.integrations.policy_text import PolicyTemplate
from rewardbridge.integrations.shared import shared_reward

ENV_POLICY_TOKENIZER = "REWARDBRIDGE_POLICY_TOKENIZER"
ENV_MAX_BATCH_SIZE = "REWARDBRIDGE_MAX_BATCH_SIZE"
ENV_BATCH_WAIT_MS = "REWARDBRIDGE_BATCH_WAIT_MS"

_state: dict[str, Any] = {}
_state_lock = threading.Lock()


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any] | None = None, **kwargs: Any) -> dict:
    """Rewards for OpenRLHF: ``{"rewards": (B,), "scores": (B,), "extra_logs": {name: (B,)}}``.

    ``labels`` are not used (a reward model needs no reference answer). Each query's
    response is the query minus its prompt.
    """
    if len(queries) != len(prompts):
        raise InputError(f"OpenRLHF reward_func got {len(queries)} queries but {len(prompts)} prompts")
    batcher, policy = _setup()
    samples = [_split(query, prompt, policy) for query, prompt in zip(queries, prompts)]
    scores = [batcher.submit(sample) for sample in samples] if len(samples) == 1 else _score(samples)
    rewards = torch.tensor(scores, dtype=torch.float32)
    return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": {f"{_reward_name()}/score": rewards.clone()}}


def _setup() -> tuple[ThreadBatcher, PolicyTemplate | None]:
    with _state_lock:
        if "batcher" not in _state:
            reward = shared_reward(caller="OpenRLHF reward_func")
            policy = None
            if os.environ.get(ENV_POLICY_TOKENIZER):
                from rewardbridge.checkpoint import load_tokenizer  # absolute: OpenRLHF loads this file by path

                policy = PolicyTemplate(load_tokenizer(os.environ[ENV_POLICY_TOKENIZER], f"${ENV_POLICY_TOKENIZER}"))
            _state.update(
                reward=reward,
                policy=policy,
                batcher=ThreadBatcher(_score, max_batch=_env_number(ENV_MAX_BATCH_SIZE, 64, int),
                                      wait_s=_env_number(ENV_BATCH_WAIT_MS, 20.0, float) / 1000),
            )
        return _state["batcher"], _state["policy"]


def _reward_name() -> str:
    return _state["reward"].__name__


def _split(query: str, prompt: str, policy: PolicyTemplate | None) -> tuple[Any, str]:
    """(prompt for the reward, response text) from OpenRLHF's decoded prompt+response."""
    if not query.startswith(prompt):
        raise InputError(
            f"OpenRLHF query does not start with its prompt (prompt {prompt[:80]!r}..., query {query[:80]!r}...); "
            "the response cannot be recovered"
        )
    response = query[len(prompt):]
    if policy is None:
        return prompt, response
    # The policy's special tokens (EOS, end of turn) are the policy's, not the answer's.
    specials = sorted(set(policy.tokenizer.all_special_tokens), key=len, reverse=True)
    stripped = True
    while stripped:
        stripped = False
        for token in specials:
            if token and response.endswith(token):
                response, stripped = response[: -len(token)], True
    messages = policy.prompt_from_text(prompt)
    return messages, response


def _score(samples: list[tuple[Any, str]]) -> list[float]:
    reward = _state["reward"]
    prompts = [p for p, _ in samples]
    completions = [r if isinstance(p, str) else [{"role": "assistant", "content": r}] for p, r in samples]
    scores = reward(prompts=prompts, completions=completions)
    if any(s is None for s in scores):
        # OpenRLHF logs a failed reward and keeps the sample without one; never a made-up number.
        raise RemoteError(f"{reward.__name__} returned no score for {scores.count(None)} of {len(scores)} samples")
    return scores


def _env_number(name: str, default, kind):
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if value <= 0 and kind is int:
        raise ConfigError(f"{name}={raw!r} must be at least 1")
    return value
