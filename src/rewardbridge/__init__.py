"""rewardbridge: reward models in the loop of TRL's online RL trainers (GRPO, RLOO).

    from rewardbridge import load_reward
    reward = load_reward("path/or/hub-id", normalize="zscore")
    trainer = GRPOTrainer(..., reward_funcs=[reward])
"""

from .conversation import Conversation, Renderer
from .normalize import normalize_across_ranks, normalize_per_prompt
from .options import RewardOptions
from .reward_fn import RewardFunction, load_reward
from .scorers.base import Scorer, Scores

__all__ = [
    "Conversation",
    "Renderer",
    "RewardFunction",
    "RewardOptions",
    "Scorer",
    "Scores",
    "load_reward",
    "normalize_across_ranks",
    "normalize_per_prompt",
]
__version__ = "0.1.0"
