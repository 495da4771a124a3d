"""Row formats: which conversations a dataset row holds, told apart by its columns.

- TRL prompt/completion (standard strings or conversational messages) -> ``reward``
- TRL preference prompt/chosen/rejected (the prompt may be implicit in chosen/rejected
  messages) -> ``chosen_reward``, ``rejected_reward``, ``margin``
- HelpSteer2 prompt/response; multi-turn prompts flattened with ``<extra_id_1>`` are parsed
  back into turns -> ``reward``
- NeMo-Aligner conversations; every Assistant turn is scored with the turns before it and
  gets a ``label`` ``name:value,...`` (``steerlm_labels``: rounded and clamped to 0-4 for
  SteerLM training; floats otherwise) -> ``reward`` of the last Assistant turn

:func:`parse_row` returns the conversations to score and a function that writes their
scores back into the output row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from ..conversation import Conversation, parse_flattened_turns
from ..errors import ConfigError, InputError, ScoreError

ROLES = {"User": "user", "Assistant": "assistant", "System": "system"}


@dataclass
class Parsed:
    """A row turned into conversations to score and a function that writes their scores back."""

    format: str
    conversations: list[Conversation]
    finish: Callable[[list[float | None], list[dict[str, float]]], dict]  # (rewards, attributes) -> output row
    group_key: str | None = None  # the prompt, for best-of-n / z-scores (rows with one response)
    writes: tuple[str, ...] = ()  # the columns ``finish`` writes into the output row


def parse_row(row: dict, steerlm_labels: bool = False) -> Parsed:
    """Tell the row's format by its columns and build its conversations; InputError if malformed."""
    if "conversations" in row:
        return _nemo_row(row, steerlm_labels)
    if steerlm_labels:
        raise ConfigError("--steerlm-labels writes labels into NeMo-Aligner conversation rows; this input has none")
    if "chosen" in row or "rejected" in row:
        return _preference_row(row)
    if "completion" in row:
        prompt, completion = _prompt(row), _messages_or_text(row, "completion")
        conversation = Conversation.from_trl(prompt, completion)
        return Parsed("prompt/completion", [conversation], lambda r, a: _with_reward(row, r[0], a[0]), conversation.prompt_key(),
                      writes=REWARD_COLUMNS)
    if "response" in row:
        return _helpsteer2_row(row)
    raise InputError(
        f"has columns {sorted(row)}; expected prompt/completion (TRL), prompt/chosen/rejected (preference), "
        f"prompt/response (HelpSteer2) or conversations (NeMo-Aligner){_column_hint(row)}"
    )


KNOWN_COLUMNS = ("prompt", "completion", "chosen", "rejected", "response", "conversations")
REWARD_COLUMNS = ("reward", "attributes")


def _column_hint(row: dict) -> str:
    """What the columns most likely meant: another case (``Prompt``), or another CSV separator (``prompt;completion``)."""
    cased = [(c, c.strip().lower()) for c in row if isinstance(c, str) and c not in KNOWN_COLUMNS and c.strip().lower() in KNOWN_COLUMNS]
    if cased:
        return "; column names are case-sensitive: rename " + ", ".join(f"{c!r} to {low!r}" for c, low in cased)
    joined = [c for c in row if isinstance(c, str) and any(sep in c for sep in ";\t|")]
    if len(row) == 1 and joined:
        return f"; the header {joined[0]!r} looks like one cell: is the file separated by something else than commas?"
    return ""


def _prompt(row: dict) -> str | list:
    if "prompt" not in row:
        raise InputError(f"has no 'prompt' column (columns: {sorted(row)}){_column_hint(row)}")
    return _messages_or_text(row, "prompt")


def _messages_or_text(row: dict, column: str) -> str | list:
    value = row[column]
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return value
    raise InputError(f"column {column!r} must be a string or a list of {{'role', 'content'}} messages, got {_short(value)}")


def _with_reward(row: dict, reward: float | None, attributes: dict[str, float]) -> dict:
    out = {**row, "reward": reward}
    if attributes:
        out["attributes"] = attributes
    return out


def _preference_row(row: dict) -> Parsed:
    for column in ("chosen", "rejected"):
        if column not in row:
            raise InputError(f"has {'chosen' if column == 'rejected' else 'rejected'} but no {column!r} column")
    chosen, rejected = _messages_or_text(row, "chosen"), _messages_or_text(row, "rejected")
    if "prompt" in row:
        prompt = _prompt(row)
    elif isinstance(chosen, list) and isinstance(rejected, list):
        # TRL's implicit prompt: the messages chosen and rejected share, up to the first difference.
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        if shared == 0:
            raise InputError("has no 'prompt' column and chosen/rejected share no leading messages to take it from")
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    else:
        raise InputError(f"has no 'prompt' column (columns: {sorted(row)})")

    def finish(rewards, attributes):
        good, bad = rewards
        margin = None if good is None or bad is None else good - bad
        return {**row, "chosen_reward": good, "rejected_reward": bad, "margin": margin}

    return Parsed("preference", [Conversation.from_trl(prompt, chosen), Conversation.from_trl(prompt, rejected)], finish,
                  writes=("chosen_reward", "rejected_reward", "margin"))


def _helpsteer2_row(row: dict) -> Parsed:
    prompt, response = row.get("prompt"), row["response"]
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise InputError(f"HelpSteer2 rows have string prompt and response, got prompt {_short(prompt)}, response {_short(response)}")
    turns = parse_flattened_turns(prompt)
    if len(turns) == 1:  # single-turn: plain text, as TRL's standard format
        conversation = Conversation.from_trl(prompt, response)
    else:
        conversation = Conversation.from_trl(turns, [{"role": "assistant", "content": response}])
    return Parsed("HelpSteer2", [conversation], lambda r, a: _with_reward(row, r[0], a[0]), conversation.prompt_key(),
                  writes=REWARD_COLUMNS)


def _nemo_row(row: dict, steerlm_labels: bool) -> Parsed:
    turns = row["conversations"]
    if not isinstance(turns, list) or not turns:
        raise InputError(f"'conversations' must be a non-empty list of turns, got {_short(turns)}")
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    conversations, positions = [], []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            raise InputError(f"conversation turn {k} must be {{'from': 'User'|'Assistant', 'value': str}}, got {_short(turn)}")
        message = {"role": ROLES[turn["from"]], "content": turn["value"]}
        if message["role"] == "assistant":
            if not any(m["role"] == "user" for m in messages):
                raise InputError(f"conversation turn {k} is an Assistant turn with no User turn before it")
            conversations.append(Conversation.from_trl(list(messages), [message]))
            positions.append(k)
        messages.append(message)
    if not conversations:
        raise InputError("the conversation has no Assistant turn to score")

    def finish(rewards, attributes):
        out = {**row, "conversations": [dict(t) for t in turns]}
        for k, reward, named in zip(positions, rewards, attributes):
            out["conversations"][k]["label"] = steerlm_label(named, reward, steerlm_labels)
        out["reward"] = rewards[-1]
        return out

    last = conversations[-1]
    return Parsed("NeMo-Aligner", conversations, finish, last.prompt_key(), writes=("reward",))  # labels: the format's own


def steerlm_label(attributes: dict[str, float], reward: float | None, steerlm: bool) -> str | None:
    """``name:value,...``; for SteerLM training each value is clamped to [0, 4] and rounded (REFERENCE.md §2),
    for ranking and filtering the floats are kept (4 decimals).

    >>> steerlm_label({"helpfulness": 3.6, "coherence": 2.5, "verbosity": -0.4}, None, steerlm=True)
    'helpfulness:4,coherence:3,verbosity:0'
    >>> steerlm_label({"helpfulness": 3.6}, None, steerlm=False)
    'helpfulness:3.6000'
    """
    if attributes and any(v is None for v in attributes.values()):
        return None  # this turn could not be scored (a remote failure with on_error='skip')
    if not attributes:
        if steerlm:
            raise ConfigError(
                "--steerlm-labels writes attribute labels, but the reward model returns one reward and no attributes; "
                "pass attributes=[names] (--option 'attributes=[helpfulness, ...]') for a multi-output model"
            )
        return None if reward is None else f"reward:{reward:.4f}"
    if steerlm:
        # Halves round up (math.floor(v + 0.5)), not to even as Python's round() does.
        return ",".join(f"{name}:{math.floor(min(4.0, max(0.0, value)) + 0.5)}" for name, value in attributes.items())
    return ",".join(f"{name}:{value:.4f}" for name, value in attributes.items())


def json_line(record: dict) -> str:
    r"""One output row as a JSON line; a number that is not finite is an error, never ``NaN`` or
    ``-Infinity`` in the file (they are not JSON, and no score is one).

    >>> json_line({"reward": 1.5})
    '{"reward": 1.5}\n'
    """
    import json

    try:
        return json.dumps(record, ensure_ascii=False, default=str, allow_nan=False) + "\n"
    except ValueError:
        raise ScoreError(f"row {record.get('row_id', '?')} holds a number that is not finite ({_short(record)}); no "
                         "score is written as NaN or Infinity") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
