"""The generative judges' options (``protocol="genrm"`` pairwise, ``"principle"`` pointwise),
checked once, when :class:`~rewardbridge.options.RewardOptions` is built.

Each option is read by one or both judge protocols; given with any other protocol it would
do nothing, so it is refused (naming the protocol that reads it).
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

PAIR_STRATEGIES = ("circular", "all_pairs")
ON_PARSE_FAILURE = ("fail", "neutral")
JUDGE_PROTOCOLS = ("genrm", "principle")
MAX_TEMPERATURE = 2.0  # OpenAI's chat completions accept 0-2
# Each judge request holds one comparison (genrm) or one response (principle): no batch to size.
# (Rendering options a judge's server would ignore are refused in option_checks.py, as for NIM.)
UNREAD_BY_JUDGES = ("request_batch_size",)
# genrm_compare's group adjustments of the folded rewards (comparisons.fold), each off at 0
GROUP_ADJUSTMENTS = ("length_penalty", "reasoning_length_penalty", "answer_bonus", "reasoning_bonus", "top_percentile",
                     "style_penalty")
# option -> the protocols that read it
READERS = {
    **{key: JUDGE_PROTOCOLS for key in ("principle", "principle_column", "temperature", "top_p", "max_tokens", "parse_retries")},
    **{key: ("genrm",) for key in ("pairs", "judges_per_pair", "group_size", "on_parse_failure", *GROUP_ADJUSTMENTS)},
    "principle_prompt": ("principle",),
}


def check_judge_options(options: Any) -> None:
    """Ranges, and each option only with the protocol that reads it; ConfigError names both."""
    for name, allowed in (("pairs", PAIR_STRATEGIES), ("on_parse_failure", ON_PARSE_FAILURE)):
        if getattr(options, name) not in allowed:
            raise ConfigError(f"{name}={getattr(options, name)!r} is not one of {allowed}")
    changed = options.changed()
    for key, protocols in READERS.items():
        if key in changed and options.protocol not in protocols:
            raise ConfigError(
                f"option {key} is read only by protocol={' or '.join(repr(p) for p in protocols)} (a generative judge), "
                f"but protocol={options.protocol!r}; drop {key}"
            )
    for key in ("judges_per_pair", "max_tokens"):
        if getattr(options, key) is not None and getattr(options, key) < 1:
            raise ConfigError(f"{key} must be 1 or more, got {getattr(options, key)}")
    if options.parse_retries < 0:
        raise ConfigError(f"parse_retries must be 0 or more, got {options.parse_retries}")
    if options.temperature is not None and not 0 <= options.temperature <= MAX_TEMPERATURE:
        raise ConfigError(f"temperature must be in [0, {MAX_TEMPERATURE:g}] (OpenAI's chat completions range), got {options.temperature}")
    if options.group_size is not None and options.group_size < 2:
        raise ConfigError(f"group_size must be 2 or more (the trainer's num_generations: a pairwise judge compares "
                          f"several responses to a prompt), got {options.group_size}")
    if options.top_p is not None and not 0 < options.top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {options.top_p}")
    for key in ("length_penalty", "reasoning_length_penalty", "style_penalty"):
        if getattr(options, key) < 0:
            raise ConfigError(f"{key} must be 0 or more (the group's {'least formatted' if key == 'style_penalty' else 'shortest'} "
                              f"answer earns up to {key} more), got {getattr(options, key)}")
    for key in ("answer_bonus", "reasoning_bonus"):
        if getattr(options, key) < 0:
            raise ConfigError(f"{key} must be 0 or more (added to the shortest {key.split('_')[0]} among the group's best), "
                              f"got {getattr(options, key)}")
    if not 0 < options.top_percentile <= 1:
        raise ConfigError(f"top_percentile must be in (0, 1] (the share of a group eligible for the bonuses), got {options.top_percentile}")
    if "top_percentile" in options.changed() and not (options.answer_bonus or options.reasoning_bonus):
        raise ConfigError("top_percentile chooses who may earn answer_bonus or reasoning_bonus, and both are 0: "
                          "set one of them (genrm_compare's Nemotron-3 config: 0.5), or drop top_percentile")
    if options.principle is not None and options.principle_column is not None:
        raise ConfigError("give principle (one for every row) or principle_column (a dataset column, per row), not both")
    if options.principle is not None and not options.principle.strip():
        raise ConfigError("principle is empty; give the judging principle as text, or drop it")
    if options.principle_prompt is not None and "{principle}" not in options.principle_prompt:
        raise ConfigError("principle_prompt must contain {principle}, where the principle goes")
    if options.protocol in JUDGE_PROTOCOLS:
        _check_judge_protocol(options)


def _check_judge_protocol(options: Any) -> None:
    protocol = options.protocol
    unread = [key for key in UNREAD_BY_JUDGES if key in options.changed()]
    if unread:
        raise ConfigError(
            f"option(s) {unread} do nothing with protocol={protocol!r}: each request holds one "
            f"{'comparison' if protocol == 'genrm' else 'response'}; drop them"
        )
    if options.attributes is not None or options.attribute_weights is not None:
        raise ConfigError(f"protocol={protocol!r} gives one reward per response, no attributes; drop attributes/attribute_weights")
    if options.normalize == "reference" or options.normalize_target != "reward":
        raise ConfigError(
            f"protocol={protocol!r} normalizes its reward with normalize none, center, zscore or rank; got "
            f"normalize={options.normalize!r}, normalize_target={options.normalize_target!r}"
        )
    if protocol == "principle":
        if options.principle is None and options.principle_column is None:
            raise ConfigError("protocol='principle' needs principle= (e.g. 'correctness') or principle_column= (a dataset column)")
        token = options.token_id
        if token is not None and not (isinstance(token, tuple) and len(token) == 2 and all(isinstance(t, str) and t for t in token)):
            raise ConfigError(
                "protocol='principle' reads token_id as the (yes, no) pair of answer tokens as the endpoint spells them, "
                f"e.g. ['Yes', 'No'] or [' Yes', ' No']; got {token!r}"
            )
