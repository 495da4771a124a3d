"""Reward-aware Preference Optimization on TRL: the loss, and the trainer built on DPOTrainer.

    from rewardbridge.rpo import rpo_loss, RPOConfig, RPOTrainer

``rpo_loss`` is pure torch and imports nothing heavy; ``RPOTrainer`` / ``RPOConfig`` load TRL
on first use. See docs/rpo.md for the maths, the knobs and the recipes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .training.rpo_loss import DISTANCES, rpo_distance, rpo_loss

if TYPE_CHECKING:
    from .training.rpo import RPOConfig, RPOTrainer

__all__ = ["DISTANCES", "RPOConfig", "RPOTrainer", "rpo_distance", "rpo_loss"]


def __getattr__(name: str) -> Any:
    # TRL takes seconds to import; only the trainer needs it.
    if name in ("RPOConfig", "RPOTrainer"):
        from .training import rpo

        return getattr(rpo, name)
    raise AttributeError(f"module 'rewardbridge.rpo' has no attribute {name!r}")
