"""Known reward-model families: what their model cards say to do, as option defaults.

A preset fills only the options the user did not pass, so anything passed to
``load_reward`` wins; a user who picks another ``kind`` gets no preset at all. A local model
is matched by its source, a remote one by ``model_name`` and its protocol (what the endpoint
answers differs: NIM's 340B sends five named attributes, the local model has nine outputs).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable

from .options import RewardOptions

logger = logging.getLogger("rewardbridge")

# Nemotron-4-340B-Reward: 9 outputs, the first four untrained; reward = weighted sum (REFERENCE.md §2).
NEMOTRON_340B_ATTRIBUTES = (
    "quality", "toxicity", "humor", "creativity",
    "helpfulness", "correctness", "coherence", "complexity", "verbosity",
)
NEMOTRON_340B_WEIGHTS = (0.0, 0.0, 0.0, 0.0, 0.3, 0.74, 0.46, 0.47, -0.33)

# ArmoRM-Llama3-8B-v0.1: output.rewards holds 19 objectives, the first five HelpSteer's
# (REFERENCE.md §2); the names and their order follow the ArmoRM model card's example code.
ARMORM_ATTRIBUTES = (
    "helpsteer-helpfulness", "helpsteer-correctness", "helpsteer-coherence",
    "helpsteer-complexity", "helpsteer-verbosity", "ultrafeedback-overall_score",
    "ultrafeedback-instruction_following", "ultrafeedback-truthfulness", "ultrafeedback-honesty",
    "ultrafeedback-helpfulness", "beavertails-is_safe", "prometheus-score", "argilla-overall_quality",
    "argilla-judge_lm", "code-complexity", "code-style", "code-explanation",
    "code-instruction-following", "code-readability",
)


HELPSTEER_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")

# Llama-3.3-Nemotron-70B-Reward-Principle's card: the principle as a question in a user turn, one
# token generated, reward = logit("Yes") - logit("No").
NEMOTRON_70B_PRINCIPLE_PROMPT = (
    "Evaluate the response to the previous prompt in terms of whether it satisfies this principle: {principle}. "
    "Only answer Yes or No."
)


@dataclass(frozen=True)
class Preset:
    match: str  # case-insensitive substring of the source (or, for a URL, of model_name)
    defaults: dict[str, Any]
    why: str
    remote: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # protocol -> defaults


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
        # NIM answers 'helpfulness:..,correctness:..,coherence:..,complexity:..,verbosity:..' (REFERENCE.md §2):
        # the five trained attributes, weighted as the card weighs them.
        remote={"nim": {"attributes": HELPSTEER_ATTRIBUTES, "attribute_weights": NEMOTRON_340B_WEIGHTS[4:]}},
    ),
    # Principle judges over chat completions (protocol="principle"), as their cards ask.
    Preset(
        "llama-3.3-nemotron-70b-reward-principle", {}, "the card's principle question as a user turn, one token, logit(Yes) - logit(No)",
        remote={"principle": {"principle_prompt": NEMOTRON_70B_PRINCIPLE_PROMPT, "token_id": ("Yes", "No"), "max_tokens": 1}},
    ),
    Preset(
        "qwen3-nemotron-32b-genrm-principle", {}, "a principle message; the judge reasons, then answers ' Yes' or ' No'",
        remote={"principle": {"token_id": (" Yes", " No")}},
    ),
    Preset("skywork-reward", {"kind": "classifier"}, "sequence classifier, logits[0][0] over the chat template"),
    # Custom code in both: trust_remote_code stays the user's decision, never a preset's.
    Preset(
        "nicholaskluge/rewardmodel",
        {"kind": "pair_regression", "alpha": 10.0},
        "BERT reading (question, answer) as a tokenizer pair; model(**tokens, alpha=10) (model card)",
    ),
    Preset(
        "armorm",
        {"kind": "custom", "attributes": ARMORM_ATTRIBUTES},
        "custom code: output.score is the reward, output.rewards its 19 objectives (model card)",
    ),
)


def find_preset(source: str) -> Preset | None:
    """The preset whose family name the model's own name contains: a hub id (``org/name``) or an
    endpoint's ``model_name`` as a whole; a local folder by its own name (``org/name`` presets:
    its last two parts; in a Hugging Face cache, its ``models--org--name`` part), never by the
    folders above it.

    >>> find_preset("/runs/skywork-reward-sweep/checkpoint-500") is None
    True
    >>> find_preset("/models/Skywork-Reward-V2-Llama-3.1-8B").match
    'skywork-reward'
    """
    names = {"": source, "/": source}  # what a preset is matched against, by whether its name has an org
    if os.path.isabs(source) or os.path.exists(source):
        parts = os.path.normpath(os.path.abspath(source)).split(os.sep)
        cache = next((part for part in parts if part.startswith("models--")), None)
        names = {"": cache or parts[-1], "/": cache.replace("--", "/") if cache else "/".join(parts[-2:])}
    return next((p for p in PRESETS if p.match in names["/" if "/" in p.match else ""].lower()), None)


def apply_preset(
    source: str, options: RewardOptions, given: Iterable[str] | None = None, remote: bool = False
) -> RewardOptions:
    """Fill, from the preset matching the model, the options the user did not give.

    ``given``: the option names the user passed (default: those that differ from the defaults,
    so an explicit default value counts as not given). A preset is skipped whole when the user
    chose another ``kind``, and its ``attribute_weights`` come only with its own ``attributes``.

    >>> apply_preset("nvidia/Llama-3.1-Nemotron-70B-Reward-HF", RewardOptions(max_length=2048)).token_id
    0
    >>> apply_preset("nvidia/Llama-3.1-Nemotron-70B-Reward-HF", RewardOptions(kind="classifier"), {"kind"}).token_id is None
    True
    """
    given = set(options.changed()) if given is None else set(given)
    preset = find_preset(options.model_name if remote else source)
    if preset is None:
        return options
    defaults = preset.remote.get(options.protocol, {}) if remote else preset.defaults
    if "kind" in given and defaults.get("kind", options.kind) != options.kind:
        return options
    filled = {k: v for k, v in defaults.items() if k not in given}
    if "attributes" in given:
        filled.pop("attribute_weights", None)
    return dataclasses.replace(options, **filled)


def explain_kind(config: dict) -> tuple[str | None, str]:
    """The readout kind a config.json dict implies, and why: its architecture, else its custom code.

    >>> explain_kind({"architectures": ["LlamaForSequenceClassification"]})
    ('classifier', 'architecture LlamaForSequenceClassification')
    """
    architectures = config.get("architectures") or []
    for arch in architectures:
        if arch.endswith("ForSequenceClassification"):
            return "classifier", f"architecture {arch}"
        if arch.endswith("ForCausalLM"):
            return "causal_logit", f"architecture {arch}"
    auto_map = config.get("auto_map") or {}
    for name in ("AutoModelForSequenceClassification", "AutoModel"):
        if name in auto_map:
            return "custom", f"config.json maps {name} to the model's own code {auto_map[name]}"
    return None, f"architectures {architectures} name neither a sequence classifier nor a causal LM"


_explained: set[str] = set()


def log_unknown_model(source: str, kind: str, kind_why: str, input_why: str) -> None:
    """Say once per source, for a model no preset knows, which kind and input were chosen and why."""
    if find_preset(source) is not None or source in _explained:
        return
    _explained.add(source)
    logger.info("%s: no preset matches; kind=%r (%s); input: %s", source, kind, kind_why, input_why)
