"""Every option of ``load_reward``, validated once, in one place.

A ``RewardOptions`` is also what a pickled ``RewardFunction`` carries instead of its model:
the child process rebuilds the scorer from ``source`` + options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

KINDS = ("classifier", "causal_logit", "attributes", "pair_regression", "custom")
PROTOCOLS = ("nim", "triton", "vllm", "openrlhf", "rewardbridge")
NORMALIZE_MODES = ("none", "center", "zscore", "rank", "reference")
NORMALIZE_TARGETS = ("reward", "attributes")
ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class RewardOptions:
    """Options of :func:`rewardbridge.load_reward`; see its docstring for each one."""

    kind: str | None = None
    protocol: str | None = None
    token_id: int | str | tuple[int | str, int | str] | None = None
    attributes: tuple[str, ...] | None = None
    attribute_weights: tuple[float, ...] | Mapping[str, float] | None = None
    alpha: float = 1.0
    max_length: int | None = None
    truncation: str = "left"
    max_tokens_per_batch: int | None = None
    normalize: str = "none"
    normalize_target: str = "reward"
    std_floor: float = 1e-6
    clip: tuple[float, float] | None = None
    reference_column: str | None = None
    zero3: bool | dict | str = False
    trust_remote_code: bool = False
    on_error: str = "raise"
    name: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    render: str = "auto"
    chat_template: str | None = None
    judge_prompt: str | None = None
    system_prompt: str | None = None
    tokenizer: str | None = None
    gguf_file: str | None = None
    # Remote endpoints (URL sources); see scorers/remote.py.
    timeout: float = 60.0
    max_retries: int = 4
    max_concurrency: int = 32
    request_batch_size: int = 64
    api_key_env: str | None = None
    retry_wait: float = 0.5  # first backoff in seconds; doubles per retry, capped at 30 s
    model_name: str = "reward_model"  # the "model" field (NIM, vLLM, native) / Triton's model name

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> RewardOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"load_reward got unknown option(s) {unknown}; known options: {sorted(known)}")
        for key in ("attributes", "clip"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        weights = kwargs.get("attribute_weights")
        if weights is not None and not isinstance(weights, Mapping):
            kwargs["attribute_weights"] = tuple(float(w) for w in weights)
        if isinstance(kwargs.get("token_id"), list):
            kwargs["token_id"] = tuple(kwargs["token_id"])
        return cls(**kwargs)

    def __post_init__(self):
        _one_of("kind", self.kind, KINDS, allow_none=True)
        _one_of("normalize", self.normalize, NORMALIZE_MODES)
        _one_of("normalize_target", self.normalize_target, NORMALIZE_TARGETS)
        _one_of("on_error", self.on_error, ON_ERROR)
        if self.normalize == "reference" and not self.reference_column:
            raise ValueError("normalize='reference' needs reference_column, the dataset column with a reference response")
        if self.clip is not None and (len(self.clip) != 2 or self.clip[0] >= self.clip[1]):
            raise ValueError(f"clip must be (low, high) with low < high, got {self.clip}")
        if self.std_floor <= 0:
            raise ValueError(f"std_floor must be positive, got {self.std_floor}")
        for key in ("max_length", "max_tokens_per_batch"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.attribute_weights is not None:
            if not self.attributes:
                raise ValueError("attribute_weights needs attributes, the names of the model's outputs in order")
            names = set(self.attribute_weights) if isinstance(self.attribute_weights, Mapping) else None
            if names is not None and not names <= set(self.attributes):
                raise ValueError(f"attribute_weights names {sorted(names - set(self.attributes))}, not in attributes {list(self.attributes)}")
            if names is None and len(self.attribute_weights) != len(self.attributes):
                raise ValueError(
                    f"attribute_weights has {len(self.attribute_weights)} weights for {len(self.attributes)} attributes; "
                    "give one weight per attribute, or a dict {name: weight}"
                )
        if self.normalize_target == "attributes" and self.attribute_weights is None:
            raise ValueError("normalize_target='attributes' needs attributes and attribute_weights")

    def weight_vector(self) -> list[float]:
        """attribute_weights as one float per attribute, in attribute order (missing names weigh 0)."""
        if isinstance(self.attribute_weights, Mapping):
            return [float(self.attribute_weights.get(name, 0.0)) for name in self.attributes]
        return list(self.attribute_weights)


def _one_of(name: str, value: Any, allowed: tuple, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {allowed}")
