"""One reward per process for engines that load reward code by file or module path.

OpenRLHF and verl import a reward module and call a plain function; there is no object to
configure. The reward is named by arguments (verl's ``reward_kwargs``) or by environment
variables, loaded on first use, and shared by every later call in the process.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

ENV_SOURCE = "REWARDBRIDGE_SOURCE"    # a local dir, hub id or URL: load_reward's ``source``
ENV_OPTIONS = "REWARDBRIDGE_OPTIONS"  # a JSON object of load_reward options

_rewards: dict[str, Any] = {}
_lock = threading.Lock()  # OpenRLHF's first calls arrive together, from several threads


def shared_reward(source: str | None = None, options: Mapping | None = None, *, caller: str):
    """The process's :class:`~rewardbridge.RewardFunction` for ``source`` + ``options`` (else the env).

    ``caller`` names the engine in errors. Example: ``shared_reward("/models/rm", {"max_length": 4096},
    caller="verl")``; a second call with equal arguments returns the same object.
    """
    from ..reward_fn import load_reward

    source = source or os.environ.get(ENV_SOURCE)
    if not source:
        raise ConfigError(
            f"{caller}: no reward model named: set {ENV_SOURCE}=<model dir, hub id or URL> "
            f"(and optionally {ENV_OPTIONS}='{{\"normalize\": \"none\"}}')"
        )
    if options is None:
        raw = os.environ.get(ENV_OPTIONS, "")
        try:
            options = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as error:
            raise ConfigError(f"{caller}: {ENV_OPTIONS} is not JSON ({error}): {raw[:200]!r}") from None
    options = _plain(options)
    if not isinstance(options, dict):
        raise ConfigError(f"{caller}: reward options must be a JSON object of load_reward options, got {options!r}")
    if options.get("normalize", "none") != "none":
        # Per-prompt statistics need a whole group in one call; these engines send one sample
        # per call and normalize groups themselves (GRPO, RLOO, REINFORCE++ baselines).
        raise ConfigError(
            f"{caller}: normalize={options['normalize']!r} needs every response to a prompt in one call, but "
            f"{caller} scores one sample per call and computes group baselines itself; set normalize='none'"
        )
    if options.get("protocol") == "genrm":
        # A pairwise judge compares a prompt's responses with each other: it needs them all in one call.
        raise ConfigError(
            f"{caller}: protocol='genrm' compares every response to a prompt with the others, but {caller} scores "
            "one sample per call; use it through TRL's GRPOTrainer/RLOOTrainer, or a pointwise judge (protocol='principle')"
        )
    key = json.dumps([source, options], sort_keys=True, default=str)
    with _lock:
        if key not in _rewards:
            _rewards[key] = load_reward(source, **options)
        return _rewards[key]


def _plain(value: Any) -> Any:
    """OmegaConf containers (verl's config) and other mappings/sequences as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value
