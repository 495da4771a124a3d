"""``rewardbridge score``: score a dataset offline, filter it, resume it after a crash.

Row formats (told apart by their columns):

- TRL prompt/completion (standard strings or conversational messages) -> ``reward``
- TRL preference prompt/chosen/rejected (the prompt may be implicit in chosen/rejected
  messages) -> ``chosen_reward``, ``rejected_reward``, ``margin``
- HelpSteer2 prompt/response; multi-turn prompts flattened with ``<extra_id_1>`` are parsed
  back into turns -> ``reward``
- NeMo-Aligner conversations; every Assistant turn is scored with the turns before it and
  gets a ``label`` ``name:value,...`` (``steerlm_labels``: rounded and clamped to 0-4 for
  SteerLM training; floats otherwise) -> ``reward`` of the last Assistant turn

A multi-attribute model also writes ``attributes`` {name: value} (without attribute_weights
the ``reward`` is null: labelling needs no single reward). Scored rows are appended
to OUT as each batch finishes, with a ``row_id`` (index + content hash); ``resume`` skips the
rows OUT already holds, found by that identity. ``best_of_n``, ``min_zscore`` and the
``normalize`` option (``normalized_reward``) need every response of a prompt, so they score
into ``OUT.scored.jsonl`` and write OUT from it at the end.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .conversation import Conversation, parse_flattened_turns
from .errors import ConfigError, InputError
from .rows import Row, count_rows, read_rows

ROLES = {"User": "user", "Assistant": "assistant", "System": "system"}


@dataclass
class Parsed:
    """A row turned into conversations to score and a function that writes their scores back."""

    format: str
    conversations: list[Conversation]
    finish: Callable[[list[float | None], list[dict[str, float]]], dict]  # (rewards, attributes) -> output row
    group_key: str | None = None  # the prompt, for best-of-n / z-scores (rows with one response)


def score_file(
    source: str,
    input: str,
    output: str,
    *,
    options: dict | None = None,
    batch_size: int = 64,
    best_of_n: int | None = None,
    min_zscore: float | None = None,
    steerlm_labels: bool = False,
    resume: bool = False,
    on_bad_row: str = "stop",
    reward: Any = None,
) -> dict:
    """Score every row of ``input`` with the reward model ``source`` into the JSONL ``output``.

    Args:
        source, options: what :func:`rewardbridge.load_reward` takes (a local model or a URL).
        batch_size: rows per scorer call.
        best_of_n: per prompt, keep the best-scored of its first ``best_of_n`` responses.
        min_zscore: drop rows whose z-score among their prompt's responses is below this.
        steerlm_labels: NeMo-Aligner rows: labels rounded and clamped to 0-4.
        resume: continue an interrupted run into the same ``output``.
        on_bad_row: ``"stop"`` raises InputError at a malformed row (naming its line);
            ``"skip"`` writes it with the reason to ``OUTPUT.rejects.jsonl`` and goes on.
        reward: an already loaded RewardFunction (tests, notebooks); else loaded from ``source``.

    Returns:
        ``{"rows", "scored", "resumed", "rejected", "written", "output"}``: rows in the input,
        rows scored now, rows found already done, rows rejected, rows in ``output``.
    """
    from tqdm import tqdm

    from . import load_reward

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if best_of_n is not None and best_of_n < 1:
        raise ConfigError(f"--best-of-n must be at least 1, got {best_of_n}")
    if min_zscore is not None and not math.isfinite(min_zscore):
        raise ConfigError(f"--min-zscore must be a finite number of standard deviations, got {min_zscore}")
    if on_bad_row not in ("stop", "skip"):
        raise ConfigError(f"--on-bad-row {on_bad_row!r} is not one of ('stop', 'skip')")
    total = count_rows(input)  # a missing or unknown input fails here, before any file is written
    if reward is None:
        reward = load_reward(source, **dict(options or {}))
    normalize = reward.options.normalize
    if normalize == "reference" or reward.options.normalize_target != "reward":
        raise ConfigError(
            f"score normalizes the reward per prompt over the whole file (center, zscore, rank); "
            f"normalize={normalize!r} with normalize_target={reward.options.normalize_target!r} is for training"
        )
    # Per-prompt statistics and filters need every response of a prompt: score first, write OUT at the end.
    filtering = best_of_n is not None or min_zscore is not None or normalize != "none"
    scored_path = output + ".scored.jsonl" if filtering else output
    rejects_path = output + ".rejects.jsonl"
    done = _prepare_outputs([scored_path, rejects_path], resume)
    stats = {"rows": 0, "scored": 0, "resumed": 0, "rejected": 0}
    seen_done: set[str] = set()
    batch: list[tuple[Row, Parsed]] = []
    progress = tqdm(total=total, unit="row", desc="scoring", file=sys.stderr, dynamic_ncols=True)
    try:
        with open(scored_path, "a", encoding="utf-8") as out, open(rejects_path, "a", encoding="utf-8") as rejects:
            for row in read_rows(input):
                stats["rows"] += 1
                progress.update(1)
                identity = row.row_id
                if row.index in done:
                    if done[row.index] != identity:
                        raise InputError(
                            f"{input} {row.where} differs from what {scored_path} holds for it ({done[row.index]}, now {identity}): "
                            "the input changed since that run; remove the output or drop --resume"
                        )
                    seen_done.add(identity)
                    stats["resumed"] += 1
                    continue
                try:
                    if row.error:
                        raise InputError(row.error)
                    parsed = parse_row(row.data, steerlm_labels)
                    if filtering and parsed.group_key is None:
                        raise ConfigError(
                            f"--best-of-n, --min-zscore and normalize compare one response per row among its prompt's; "
                            f"{input} {row.where} is a {parsed.format} row"
                        )
                except InputError as error:
                    if on_bad_row == "stop":
                        raise InputError(f"{input} {row.where}: {error}; pass --on-bad-row skip to write such rows to {rejects_path}") from None
                    _write(rejects, {"row_id": identity, "where": row.where, "reason": str(error),
                                     "row": row.data if row.data is not None else row.raw})
                    stats["rejected"] += 1
                    continue
                batch.append((row, parsed))
                if len(batch) >= batch_size:
                    stats["scored"] += _score_batch(reward, batch, out)
                    batch = []
            if batch:
                stats["scored"] += _score_batch(reward, batch, out)
    finally:
        progress.close()
        if os.path.exists(rejects_path) and os.path.getsize(rejects_path) == 0:
            os.remove(rejects_path)  # no rejects, no file
    missing = sorted(set(done.values()) - seen_done)
    if missing:
        raise InputError(
            f"{scored_path} holds {len(missing)} row(s) that {input} no longer has (first: {missing[0]}); "
            "the input changed since that run: remove the output or drop --resume"
        )
    if filtering:
        stats["written"] = _post_process(scored_path, output, reward.options, best_of_n, min_zscore, steerlm_labels)
    else:
        stats["written"] = _count_lines(output)
    stats["output"] = output
    print(
        f"rewardbridge score: {stats['rows']} rows: {stats['scored']} scored, {stats['resumed']} already in the output "
        f"(resumed), {stats['rejected']} rejected; {stats['written']} rows in {output}",
        file=sys.stderr,
    )
    return stats


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
        return Parsed("prompt/completion", [conversation], lambda r, a: _with_reward(row, r[0], a[0]), conversation.prompt_key())
    if "response" in row:
        return _helpsteer2_row(row)
    raise InputError(
        f"has columns {sorted(row)}; expected prompt/completion (TRL), prompt/chosen/rejected (preference), "
        "prompt/response (HelpSteer2) or conversations (NeMo-Aligner)"
    )


def _prompt(row: dict) -> str | list:
    if "prompt" not in row:
        raise InputError(f"has no 'prompt' column (columns: {sorted(row)})")
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

    return Parsed("preference", [Conversation.from_trl(prompt, chosen), Conversation.from_trl(prompt, rejected)], finish)


def _helpsteer2_row(row: dict) -> Parsed:
    prompt, response = row.get("prompt"), row["response"]
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise InputError(f"HelpSteer2 rows have string prompt and response, got prompt {_short(prompt)}, response {_short(response)}")
    turns = parse_flattened_turns(prompt)
    if len(turns) == 1:  # single-turn: plain text, as TRL's standard format
        conversation = Conversation.from_trl(prompt, response)
    else:
        conversation = Conversation.from_trl(turns, [{"role": "assistant", "content": response}])
    return Parsed("HelpSteer2", [conversation], lambda r, a: _with_reward(row, r[0], a[0]), conversation.prompt_key())


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
    return Parsed("NeMo-Aligner", conversations, finish, last.prompt_key())


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


def score_conversations(reward, conversations: list[Conversation]) -> tuple[list[float | None], list[dict[str, float]]]:
    """The combined reward and the attributes of each conversation; None where scoring failed."""
    scores = reward.scorer.score(conversations)
    if scores.values is None and reward.options.attribute_weights is None:
        combined = torch.full((len(conversations),), math.nan)  # attributes only (labelling): no single reward
    else:
        combined = reward.combine(scores)
    values = [_float_or_none(v) for v in combined]
    named = [{name: _float_or_none(column[i]) for name, column in scores.attributes.items()} for i in range(len(conversations))]
    return values, named


def _score_batch(reward, batch: list[tuple[Row, Parsed]], out) -> int:
    conversations = [c for _, parsed in batch for c in parsed.conversations]
    values, named = score_conversations(reward, conversations)
    start = 0
    for row, parsed in batch:
        n = len(parsed.conversations)
        result = parsed.finish(values[start:start + n], named[start:start + n])
        start += n
        _write(out, {**result, "row_id": row.row_id}, flush=False)
    out.flush()  # a killed run keeps every finished batch
    return len(batch)


def _write(f, record: dict, flush: bool = True) -> None:
    f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    if flush:
        f.flush()


def _prepare_outputs(paths: list[str], resume: bool) -> dict[int, str]:
    """Start the output files, or with ``resume`` read which rows they hold: index -> row_id."""
    if not resume:
        for path in paths:
            if os.path.exists(path) and os.path.getsize(path) > 0:
                raise ConfigError(f"{path} already exists; pass --resume to continue that run, or remove it")
        for path in paths:
            open(path, "w").close()
        return {}
    done: dict[int, str] = {}
    for path in paths:
        if not os.path.exists(path):
            open(path, "w").close()
            continue
        _drop_partial_last_line(path)
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                try:
                    identity = json.loads(line)["row_id"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise InputError(f"{path} line {number} has no row_id: it was not written by rewardbridge score; "
                                     "remove it or drop --resume") from None
                done[int(identity.split(":")[0])] = identity
    return done


def _drop_partial_last_line(path: str) -> None:
    """A run killed mid-write leaves a last line without its newline: that row was not finished."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _post_process(scored_path: str, output: str, options, best_of_n: int | None, min_zscore: float | None, steerlm: bool) -> int:
    """Write the rows of ``scored_path`` that pass the filters to ``output``; returns how many.

    With ``options.normalize`` each row also gets ``normalized_reward``: its reward normalized
    among all its prompt's responses in the file (then ``options.clip``), as training would.
    """
    from .normalize import clip_rewards, group_index, normalize_per_prompt

    with open(scored_path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    keys = [parse_row({k: v for k, v in row.items() if k != "row_id"}, steerlm).group_key for row in rows]
    rewards = [row["reward"] for row in rows]
    if options.normalize != "none" and rows:
        values = torch.tensor([math.nan if r is None else r for r in rewards], dtype=torch.float32)
        normalized = normalize_per_prompt(values, group_index(keys), options.normalize, options.std_floor).values.reshape(-1)
        for row, value in zip(rows, clip_rewards(normalized, options.clip).tolist()):
            row["normalized_reward"] = None if math.isnan(value) else value
    if best_of_n is None and min_zscore is None:
        keep = list(range(len(rows)))  # normalize alone keeps every row, failed ones too
    else:
        keep, zscores = select_rows(keys, rewards, best_of_n, min_zscore)
    if min_zscore is not None:
        for i in keep:
            rows[i]["zscore"] = zscores[i]
    tmp = output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for i in keep:
            _write(f, rows[i], flush=False)
    os.replace(tmp, output)  # OUT appears whole, or not at all
    return len(keep)


def select_rows(
    keys: list[str], rewards: list[float | None], best_of_n: int | None, min_zscore: float | None
) -> tuple[list[int], dict[int, float]]:
    """The rows to keep, in input order, and the z-score of each candidate.

    Per prompt (rows with equal ``keys``): the candidates are its first ``best_of_n``
    responses (all when None); z-scores ``(x - mean) / std`` (sample std, as
    ``normalize="zscore"``; a prompt with one response has z = 0) are taken over the
    candidates and rows below ``min_zscore`` are dropped; ``best_of_n`` then keeps the highest
    reward left (the first one on a tie). Rows without a reward (scoring failed) are never kept.

    >>> select_rows(["a", "a", "a", "b"], [1.0, 3.0, 2.0, 0.5], best_of_n=2, min_zscore=None)[0]
    [1, 3]
    """
    from .normalize import group_index, normalize_per_prompt

    groups: dict[str, list[int]] = {}
    for i, (key, reward) in enumerate(zip(keys, rewards)):
        candidates = groups.setdefault(key, [])
        if best_of_n is None or len(candidates) < best_of_n:
            candidates.append(i)
    candidates = [i for members in groups.values() for i in members if rewards[i] is not None]
    zscores: dict[int, float] = {}
    if candidates:
        values = torch.tensor([rewards[i] for i in candidates], dtype=torch.float64)
        z = normalize_per_prompt(values, group_index([keys[i] for i in candidates]), "zscore").values.reshape(-1)
        zscores = dict(zip(candidates, z.tolist()))
    if min_zscore is not None:
        candidates = [i for i in candidates if zscores[i] >= min_zscore]
    if best_of_n is not None:
        best: dict[str, int] = {}
        for i in candidates:
            if keys[i] not in best or rewards[i] > rewards[best[keys[i]]]:
                best[keys[i]] = i
        candidates = list(best.values())
    return sorted(candidates), zscores


def _float_or_none(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
