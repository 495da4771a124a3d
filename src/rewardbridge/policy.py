"""The policy a job samples from or a recipe trains: a causal LM, checked before its weights load
(config.json's ``architectures``) and after (transformers' loading info: no weight left at random).

A reward model's folder given as the policy (``LlamaForSequenceClassification``) would otherwise
load as a causal LM with ``lm_head.weight`` MISSING, initialized at random: its samples would be
noise, and every pair or training step made from them meaningless.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import ConfigError
from .sources import resolve_local_source

# Names that AutoModelForCausalLM loads besides transformers' own table (custom code, old names).
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def check_policy_config(path: str, what: str = "policy", gguf_file: str | None = None) -> None:
    """Weight-free: ``path`` is a folder (or a hub id) whose config.json names a causal LM.

    A hub id is left to ``from_pretrained`` (its config is not on this machine); a GGUF file
    always holds a causal LM, so only the file's presence is checked.

    >>> check_policy_config("org/some-policy")  # a hub id: checked when it loads
    """
    folder = resolve_local_source(path, what)
    if not os.path.isdir(folder):
        return  # a hub id
    if gguf_file:
        if not os.path.isfile(os.path.join(folder, gguf_file)):
            raise ConfigError(f"{what}={path!r} has no GGUF file {gguf_file!r} ({os.path.join(folder, gguf_file)} does not exist)")
        return
    config_file = os.path.join(folder, "config.json")
    if not os.path.isfile(config_file):
        raise ConfigError(f"{what}={path!r} has no config.json: it is not a transformers model folder; pass the policy's "
                          "folder (or a folder with a .gguf file and its name)")
    with open(config_file, encoding="utf-8") as f:
        config = json.load(f)
    architectures = config.get("architectures") or []
    if not architectures or _is_causal_lm(config):
        return  # no architecture named: the loading info below still catches a missing head
    arch = architectures[0]
    hint = (" It looks like a reward model: a reward goes in --reward (a recipe's pairs.reward or rewards), the policy is "
            "the model that answers." if arch.endswith(("ForSequenceClassification", "ForTokenClassification")) else "")
    raise ConfigError(f"{what}={path!r} is a {arch} (config.json's architectures), not a causal LM: it cannot generate, and "
                      f"loading it as one would leave its LM head at random.{hint} Pass the folder of a *ForCausalLM checkpoint")


def load_causal_lm(path: str, what: str = "policy", **kwargs: Any):
    """``AutoModelForCausalLM.from_pretrained(path, **kwargs)``, refused when the checkpoint lacks any of its weights."""
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kwargs)
    check_policy_loaded(info, path, what)
    return model


def check_policy_loaded(info: dict, path: str, what: str = "policy") -> None:
    """Transformers' loading info: a weight it had to initialize at random makes the policy noise.

    >>> check_policy_loaded({"missing_keys": [], "mismatched_keys": []}, "/models/policy")
    """
    missing = sorted(info.get("missing_keys") or ()) + sorted(f"{k[0]} (shape)" if isinstance(k, tuple) else str(k)
                                                             for k in info.get("mismatched_keys") or ())
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConfigError(f"{what}={path!r}: the checkpoint has no weights for {shown}; transformers would initialize them at "
                          "random, so every sample would be noise. Pass the folder of the trained causal LM")


def _is_causal_lm(config: dict) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if "AutoModelForCausalLM" in (config.get("auto_map") or {}):
        return True  # its own code says how it loads as a causal LM
    known = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    return any(a in known or a.endswith(CAUSAL_SUFFIXES) for a in config.get("architectures") or [])
