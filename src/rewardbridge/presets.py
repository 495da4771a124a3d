"""Known reward-model families: what their model cards say to do, as option defaults.

A preset fills only the options the user left at their defaults, so anything passed to
``load_reward`` wins.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .options import RewardOptions

# Nemotron-4-340B-Reward: 9 outputs, the first four untrained; reward = weighted sum (REFERENCE.md §2).
NEMOTRON_340B_ATTRIBUTES = (
    "quality", "toxicity", "humor", "creativity",
    "helpfulness", "correctness", "coherence", "complexity", "verbosity",
)
NEMOTRON_340B_WEIGHTS = (0.0, 0.0, 0.0, 0.0, 0.3, 0.74, 0.46, 0.47, -0.33)


@dataclass(frozen=True)
class Preset:
    match: str  # case-insensitive substring of the source
    defaults: dict[str, Any]
    why: str


PRESETS = (
    Preset(
        "llama-3.1-nemotron-70b-reward",
        {"kind": "causal_logit", "token_id": 0, "max_length": 4096},
        "the reward is the next-token logit of token id 0; 4096-token context (model card)",
    ),
    Preset(
        "nemotron-4-340b-reward",
        {
            "kind": "attributes",
            "attributes": NEMOTRON_340B_ATTRIBUTES,
            "attribute_weights": NEMOTRON_340B_WEIGHTS,
            "render": "steerlm",
            "max_length": 4096,
        },
        "9 SteerLM attributes combined by the card's weights; SteerLM template",
    ),
    Preset("skywork-reward", {"kind": "classifier"}, "sequence classifier, logits[0][0] over the chat template"),
)


def find_preset(source: str) -> Preset | None:
    lowered = source.lower()
    return next((p for p in PRESETS if p.match in lowered), None)


def apply_preset(source: str, options: RewardOptions) -> RewardOptions:
    """Fill options left at their defaults from the preset matching ``source``, if any."""
    preset = find_preset(source)
    if preset is None:
        return options
    defaults = RewardOptions()
    filled = {k: v for k, v in preset.defaults.items() if getattr(options, k) == getattr(defaults, k)}
    return dataclasses.replace(options, **filled)


def infer_kind(config: Any) -> str | None:
    """Guess the readout from a transformers config's architecture name."""
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith("ForSequenceClassification"):
            return "classifier"
        if arch.endswith("ForCausalLM"):
            return "causal_logit"
    return None
