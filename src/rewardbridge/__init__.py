"""rewardbridge: reward models in the loop of TRL's online RL trainers (GRPO, RLOO).

    from rewardbridge import load_reward
    reward = load_reward("path/or/hub-id", normalize="zscore")
    trainer = GRPOTrainer(..., reward_funcs=[reward])

The public names load on first use (PEP 562), so ``import rewardbridge``, ``rewardbridge
--help`` and a remote reward (``load_reward(url, protocol=...)``) import no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it.
_EXPORTS = {
    "Conversation": ".conversation",
    "Renderer": ".conversation",
    "RewardFunction": ".reward_fn",
    "RewardOptions": ".options",
    "Scorer": ".scorers.base",
    "Scores": ".scorers.base",
    "load_reward": ".reward_fn",
    "normalize_across_ranks": ".normalize",
    "normalize_per_prompt": ".normalize",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rewardbridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
