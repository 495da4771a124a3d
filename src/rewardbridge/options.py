"""Every option of ``load_reward``, validated once, in one place.

A ``RewardOptions`` is also what a pickled ``RewardFunction`` carries instead of its model:
the child process rebuilds the scorer from ``source`` + options.

Validation happens in three steps, each as early as it can be, so that a mistake is reported
before minutes of weight loading:

1. ``RewardOptions(...)``: each option's type and range, and options that contradict each other.
2. ``check_applies_to_source``: options that do nothing for this source (``protocol=`` on a
   local model, ``zero3=`` on a URL), checked in ``load_reward`` before anything loads.
3. ``check_applies_to_kind``: options that do nothing for this kind of model (``token_id`` on a
   classifier), checked by ``resolve.py`` once the kind is known (from the config alone).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import ConfigError, OptionTypeError
from .judge_options import ON_PARSE_FAILURE, PAIR_STRATEGIES, check_judge_options
from .protocols import PROTOCOLS

KINDS = ("classifier", "causal_logit", "attributes", "pair_regression", "custom")
NORMALIZE_MODES = ("none", "center", "zscore", "rank", "reference")
NORMALIZE_TARGETS = ("reward", "attributes")
ON_ERROR = ("raise", "skip")
TRUNCATION_MODES = ("left", "error")
RENDER_MODES = ("auto", "chat", "text", "judge", "steerlm")
DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
FLOAT32_MAX = 3.4028234663852886e38  # rewards reach TRL as float32: anything beyond is +-inf

# Options that only a local (colocated) model reads, and only a remote endpoint reads.
LOCAL_ONLY = (
    "kind", "token_id", "alpha", "max_length", "truncation", "max_tokens_per_batch", "zero3",
    "trust_remote_code", "device", "dtype", "gguf_file", "judge_prompt",
)
REMOTE_ONLY = (
    "protocol", "timeout", "max_retries", "retry_wait", "max_concurrency", "request_batch_size", "api_key_env", "model_name",
    "retry_budget",
)


# Options whose value is text: a number typed for one stays text (name=2024); null clears it (yaml12.parse_setting).
TEXT_OPTIONS = (
    "kind", "protocol", "truncation", "normalize", "normalize_target", "reference_column", "on_error", "name",
    "device", "dtype", "render", "chat_template", "judge_prompt", "system_prompt", "tokenizer", "gguf_file",
    "api_key_env", "model_name", "pairs", "principle", "principle_column", "principle_prompt", "on_parse_failure",
)


# Options whose value is a prompt or a template: taken as typed, never as YAML (a colon or a brace there is text).
PROMPT_OPTIONS = ("chat_template", "judge_prompt", "system_prompt", "principle", "principle_prompt")

# Options whose value is the content itself (a template, a prompt), never a path to it.
CONTENT_OPTIONS = ("chat_template", "judge_prompt", "system_prompt", "principle", "principle_prompt")
FILE_SUFFIXES = (".jinja", ".jinja2", ".j2", ".txt", ".md", ".tmpl", ".template", ".prompt", ".json", ".yaml", ".yml")


def names_a_file(value: str) -> bool:
    """An existing file, or one word ending in a file suffix: ``"my_template.jinja"``, not ``"Be brief."``.

    >>> names_a_file("templates/chat.jinja"), names_a_file("Rate: {prompt} {response}"), names_a_file("Be brief.")
    (True, False, False)
    """
    import os

    text = value.strip()
    if not text or "\n" in text:
        return False
    return os.path.isfile(os.path.expanduser(text)) or (not any(c.isspace() for c in text) and text.lower().endswith(FILE_SUFFIXES))


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
    # Remote endpoints (URL sources); see scorers/transport.py.
    timeout: float = 60.0
    max_retries: int | None = None  # None: as many as retry_budget allows
    max_concurrency: int = 32
    request_batch_size: int = 64
    api_key_env: str | None = None
    retry_wait: float = 0.5  # first backoff in seconds; doubles per retry, capped at 30 s
    model_name: str = "reward_model"  # the "model" field (NIM, vLLM, native) / Triton's model name
    # Generative judges over chat completions: protocol="genrm" (pairwise) and "principle" (pointwise).
    pairs: str = "circular"  # genrm: which responses of a prompt are compared (circular: N, all_pairs: N(N-1)/2)
    judges_per_pair: int = 1  # genrm: independent judgements of each pair
    group_size: int | None = None  # genrm: TRL's num_generations: groups are consecutive runs of this many rows
    principle: str | None = None  # the judging principle sent to the judge (or principle_column, per row)
    principle_column: str | None = None
    principle_prompt: str | None = None  # principle: a user turn with {principle}, instead of a "principle" message
    temperature: float | None = None  # None: genrm 0.6, principle 0.0
    top_p: float | None = None  # None: genrm 0.95, principle not sent
    max_tokens: int | None = None  # None: genrm 16384, principle not sent
    parse_retries: int = 3  # a judge answer with nothing to read is asked again this many times
    on_parse_failure: str = "fail"  # genrm: "fail" (a failed comparison) or "neutral" (3.0, 3.0, 3.5)
    length_penalty: float = 0.0  # genrm: coeff of the group-relative answer-length bonus
    reasoning_length_penalty: float = 0.0  # genrm: the same over the policy's reasoning (<think>...</think>)
    answer_bonus: float = 0.0  # genrm: to the shortest answer, if its reward is in the group's top_percentile
    reasoning_bonus: float = 0.0  # genrm: the same for the shortest reasoning
    top_percentile: float = 0.2  # genrm: the share of a group eligible for those bonuses
    style_penalty: float = 0.0  # genrm: coeff of the group-relative bonus for less markdown per character
    # Issue 15 §6: the seconds a request may keep retrying, from its first attempt (a reward
    # server's restart, 28 s measured, is survived; a dead endpoint raises within 2 minutes).
    retry_budget: float = 120.0

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> RewardOptions:
        """Build from keyword arguments; lists (from YAML or JSON) become tuples."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in kwargs:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=3)
                hint = f"; did you mean {close}?" if close else ""
                raise OptionTypeError(f"load_reward got unknown option(s) [{key!r}]{hint} Known options: {sorted(known)}")
        for key in ("attributes", "clip", "token_id", "attribute_weights"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def __post_init__(self):
        for name, (accepts, expected) in OPTION_TYPES.items():
            value = getattr(self, name)
            if not accepts(value):
                raise OptionTypeError(f"option {name} must be {expected}, got {value!r} ({type(value).__name__})")
        self._check_values()

    def _check_values(self) -> None:
        # Options that take text, given a file's name instead: used as the literal text, they would
        # silently render garbage (issue 15). Refuse, naming both readings.
        for name in CONTENT_OPTIONS:
            value = getattr(self, name)
            if isinstance(value, str) and names_a_file(value):
                raise ConfigError(
                    f"{name}={value!r} looks like a file's name, but {name} takes the text itself and would use "
                    f"{value!r} as that text. Pass the file's content: {name}=open({value!r}).read() (command line: "
                    f"--option {name}=\"$(cat {value})\"; in a recipe, the text itself)"
                )
        _one_of("kind", self.kind, KINDS, allow_none=True)
        _one_of("protocol", self.protocol, PROTOCOLS, allow_none=True)
        _one_of("normalize", self.normalize, NORMALIZE_MODES)
        _one_of("normalize_target", self.normalize_target, NORMALIZE_TARGETS)
        _one_of("on_error", self.on_error, ON_ERROR)
        _one_of("truncation", self.truncation, TRUNCATION_MODES)
        _one_of("render", self.render, RENDER_MODES)
        _one_of("dtype", self.dtype, DTYPES)
        _check_device(self.device)
        if self.normalize == "reference" and not self.reference_column:
            raise ConfigError("normalize='reference' needs reference_column, the dataset column with a reference response")
        if self.reference_column and self.normalize != "reference":
            raise ConfigError(f"reference_column={self.reference_column!r} is read only with normalize='reference' (got normalize={self.normalize!r})")
        if self.clip is not None and self.clip[0] >= self.clip[1]:
            raise ConfigError(f"clip must be (low, high) with low < high, got {self.clip}")
        if self.std_floor <= 0:
            raise ConfigError(f"std_floor must be positive, got {self.std_floor}")
        for key in ("max_length", "max_tokens_per_batch", "max_concurrency", "request_batch_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)}")
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be positive (seconds per request), got {self.timeout}")
        if self.max_retries is not None and self.max_retries < 0:
            raise ConfigError(f"max_retries must be 0 or more (or None: as many as retry_budget allows), got {self.max_retries}")
        if self.retry_budget < 0:
            raise ConfigError(f"retry_budget must be 0 or more seconds (how long a request may keep retrying), got {self.retry_budget}")
        if self.retry_wait < 0:
            raise ConfigError(f"retry_wait must be 0 or more seconds, got {self.retry_wait}")
        if not self.model_name.strip():
            raise ConfigError("model_name is empty; name the endpoint's model (NIM/vLLM 'model' field, Triton model name)")
        if self.api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            # Someone passing the key itself here would leak it into logs and pickles.
            raise ConfigError("api_key_env takes the NAME of an environment variable holding the key (e.g. 'NVIDIA_API_KEY'), not the key")
        check_judge_options(self)  # judge_options.py: the generative judges' options
        if isinstance(self.token_id, tuple) and len(self.token_id) not in (1, 2):
            raise ConfigError(f"token_id must be one token or a (yes, no) pair, got {len(self.token_id)} tokens: {self.token_id!r}")
        if self.judge_prompt is not None:
            if "{prompt}" not in self.judge_prompt or "{response}" not in self.judge_prompt:
                raise ConfigError("judge_prompt must contain both {prompt} and {response}")
            if self.render not in ("auto", "judge"):
                raise ConfigError(f"judge_prompt is used only with render='judge' (or 'auto'), got render={self.render!r}")
        if self.render == "judge" and not self.judge_prompt:
            raise ConfigError("render='judge' needs judge_prompt, a string with {prompt} and {response}")
        if self.attributes is not None:
            if not self.attributes:
                raise ConfigError("attributes is empty; name the model's outputs in output order, or leave it unset")
            duplicates = sorted({a for a in self.attributes if self.attributes.count(a) > 1})
            if duplicates:
                raise ConfigError(f"attributes names {duplicates} more than once; each output needs its own name")
        if self.attribute_weights is not None:
            if not self.attributes:
                raise ConfigError("attribute_weights needs attributes, the names of the model's outputs in order")
            names = set(self.attribute_weights) if isinstance(self.attribute_weights, Mapping) else None
            if names is not None and not names <= set(self.attributes):
                raise ConfigError(f"attribute_weights names {sorted(names - set(self.attributes))}, not in attributes {list(self.attributes)}")
            if names is None and len(self.attribute_weights) != len(self.attributes):
                raise ConfigError(
                    f"attribute_weights has {len(self.attribute_weights)} weights for {len(self.attributes)} attributes; "
                    "give one weight per attribute, or a dict {name: weight}"
                )
        if self.attribute_weights is not None:
            items = self.attribute_weights.items() if isinstance(self.attribute_weights, Mapping) else enumerate(self.attribute_weights)
            for key, weight in items:
                if abs(weight) > FLOAT32_MAX:  # it would be inf as a float32 weight, and every reward +-inf or NaN
                    shown = f"[{key}]" if isinstance(key, int) else f"[{key!r}]"
                    raise ConfigError(f"attribute_weights{shown}={weight:g} is beyond float32's range (+-{FLOAT32_MAX:.2g}), "
                                      "the precision rewards are combined in; scale the weights down")
        if self.normalize_target == "attributes" and self.attribute_weights is None:
            raise ConfigError("normalize_target='attributes' needs attributes and attribute_weights")
        if self.normalize_target == "attributes" and self.normalize in ("none", "reference"):
            raise ConfigError(f"normalize_target='attributes' needs a per-prompt normalize mode (center, zscore, rank), got {self.normalize!r}")

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults: what the user (or a preset) set."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default}

    def check_applies_to_source(self, remote: bool) -> None:
        """Refuse options that would be silently ignored for this kind of source."""
        changed = self.changed()
        if remote:
            # A principle judge reads token_id remotely: its (yes, no) answer tokens, as in causal_logit.
            useless = [k for k in LOCAL_ONLY if k in changed and not (k == "token_id" and self.protocol == "principle")]
            if useless:
                raise ConfigError(
                    f"option(s) {useless} apply to a local model only; a remote endpoint runs its own model. "
                    "Drop them, or pass a local model directory instead of a URL"
                )
            return
        useless = [k for k in REMOTE_ONLY if k in changed]
        if useless:
            raise ConfigError(
                f"option(s) {useless} apply to remote endpoints only (http(s):// sources); this source is a local model. "
                "Drop them, or pass the endpoint's URL"
            )
        if self.on_error == "skip":
            raise ConfigError(
                "on_error='skip' applies to remote endpoints only; a local model's errors are bugs or bad input, "
                "and always raise. Drop on_error"
            )

    def check_applies_to_kind(self, kind: str) -> None:
        """Refuse options this kind of model never reads, and demand the ones it needs."""
        if kind == "causal_logit" and self.token_id is None:
            raise ConfigError(
                "kind='causal_logit' needs token_id: the next-token logit that is the reward "
                "(Llama-3.1-Nemotron-70B-Reward-HF: 0), or a (yes, no) pair for a judge"
            )
        if kind != "causal_logit" and self.token_id is not None:
            raise ConfigError(f"token_id is read only by kind='causal_logit', but this model is kind={kind!r}; drop token_id")
        if kind == "attributes" and not self.attributes:
            raise ConfigError("kind='attributes' needs attributes, the names of the model's outputs in order")
        if kind != "pair_regression" and self.alpha != 1.0:
            raise ConfigError(f"alpha multiplies a pair_regression model's score, but this model is kind={kind!r}; drop alpha")
        if kind == "causal_logit" and self.attributes:
            raise ConfigError("attributes name the outputs of a multi-output head; a causal_logit reward has one value. Drop attributes")

    def weight_vector(self) -> list[float]:
        """attribute_weights as one float per attribute, in attribute order (missing names weigh 0)."""
        if isinstance(self.attribute_weights, Mapping):
            return [float(self.attribute_weights.get(name, 0.0)) for name in self.attributes]
        return [float(w) for w in self.attribute_weights]


def _one_of(name: str, value: Any, allowed: tuple, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{name}={value!r} is not one of {allowed}{hint}")


def _check_device(device: str) -> None:
    # The device strings torch.device parses for these three types, read without importing torch
    # (every RewardOptions checks this, a remote reward's too: issue 18).
    if device != "auto" and not re.fullmatch(r"(cpu|cuda|mps)(:\d+)?", device):  # "meta" parses but holds no weights
        raise ConfigError(f"device={device!r} is not a device to score on; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


# --- type checks: one line per option ---------------------------------------------------

def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _token(v: Any) -> bool:
    return _int(v) or (isinstance(v, str) and v != "")


OPTION_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "kind": (_optional(_str), f"one of {KINDS} or None"),
    "protocol": (_optional(_str), f"one of {PROTOCOLS} or None"),
    "token_id": (
        lambda v: v is None or _token(v) or (isinstance(v, tuple) and all(_token(t) for t in v)),
        "a token id (int), a one-token string, or a (yes, no) pair of them",
    ),
    "attributes": (lambda v: v is None or (isinstance(v, tuple) and all(_str(a) and a for a in v)), "a list of output names"),
    "attribute_weights": (
        lambda v: v is None
        or (isinstance(v, tuple) and all(_number(w) for w in v))
        or (isinstance(v, Mapping) and all(_str(k) and _number(w) for k, w in v.items())),
        "a list of numbers (one per attribute) or a dict {attribute: number}",
    ),
    "alpha": (_number, "a number"),
    "max_length": (_optional(_int), "a whole number of tokens"),
    "truncation": (_str, f"one of {TRUNCATION_MODES}"),
    "max_tokens_per_batch": (_optional(_int), "a whole number of tokens"),
    "normalize": (_str, f"one of {NORMALIZE_MODES}"),
    "normalize_target": (_str, f"one of {NORMALIZE_TARGETS}"),
    "std_floor": (_number, "a positive number"),
    "clip": (lambda v: v is None or (isinstance(v, tuple) and len(v) == 2 and all(_number(x) for x in v)), "a (low, high) pair of numbers"),
    "reference_column": (_optional(_str), "a dataset column name"),
    "zero3": (lambda v: isinstance(v, (bool, dict)) or (_str(v) and v != ""), "True/False, a DeepSpeed config dict, or a JSON path"),
    "trust_remote_code": (lambda v: isinstance(v, bool), "True or False"),
    "on_error": (_str, f"one of {ON_ERROR}"),
    "name": (lambda v: v is None or (_str(v) and v.strip() != ""), "a non-empty metric name"),
    "device": (_str, "a device string such as 'auto', 'cpu', 'cuda:0'"),
    "dtype": (_str, f"one of {DTYPES}"),
    "render": (_str, f"one of {RENDER_MODES}"),
    "chat_template": (_optional(_str), "a Jinja chat template string"),
    "judge_prompt": (_optional(_str), "a string with {prompt} and {response}"),
    "system_prompt": (_optional(_str), "a string"),
    "tokenizer": (_optional(_str), "a tokenizer directory or hub id"),
    "gguf_file": (_optional(_str), "a GGUF file name inside the source directory"),
    "timeout": (_number, "a number of seconds"),
    "max_retries": (_optional(_int), "a whole number, or None (as many as retry_budget allows)"),
    "max_concurrency": (_int, "a whole number"),
    "request_batch_size": (_int, "a whole number"),
    "api_key_env": (_optional(_str), "the name of an environment variable"),
    "retry_wait": (_number, "a number of seconds"),
    "model_name": (_str, "the endpoint's model name"),
    "pairs": (_str, f"one of {PAIR_STRATEGIES}"),
    "judges_per_pair": (_int, "a whole number"),
    "group_size": (_optional(_int), "a whole number (the trainer's num_generations)"),
    "principle": (_optional(_str), "the judging principle as text"),
    "principle_column": (_optional(_str), "a dataset column name"),
    "principle_prompt": (_optional(_str), "a string with {principle}"),
    "temperature": (_optional(_number), "a number"),
    "top_p": (_optional(_number), "a number in (0, 1]"),
    "max_tokens": (_optional(_int), "a whole number of tokens"),
    "parse_retries": (_int, "a whole number"),
    "on_parse_failure": (_str, f"one of {ON_PARSE_FAILURE}"),
    "length_penalty": (_number, "a number"),
    "reasoning_length_penalty": (_number, "a number"),
    "answer_bonus": (_number, "a number"),
    "reasoning_bonus": (_number, "a number"),
    "top_percentile": (_number, "a number in (0, 1]"),
    "style_penalty": (_number, "a number"),
    "retry_budget": (_number, "a number of seconds"),
}
