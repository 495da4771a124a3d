"""``rewardbridge score``: score a dataset offline, filter it, resume it after a crash.

Rows are read by ``rows.py`` and told apart by ``formats.py`` (TRL prompt/completion,
preference pairs, HelpSteer2, NeMo-Aligner conversations). A multi-attribute model also
writes ``attributes`` {name: value} (without attribute_weights the ``reward`` is null:
labelling needs no single reward). Scored rows are appended to OUT as each batch finishes,
with a ``row_id`` (index + content hash); ``resume`` skips the rows OUT already holds, found
by that identity. ``best_of_n``, ``min_zscore`` and the ``normalize`` option
(``normalized_reward``) need every response of a prompt, so they score into
``OUT.scored.jsonl`` and write OUT from it at the end. ``output.py`` keeps the output safe:
checked before the model loads, locked while the job runs, resumed only by the same run.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import torch

from ..conversation import Conversation
from ..errors import ConfigError, InputError
from .formats import Parsed, parse_row
from .output import JobOutput, RunRecord
from .rows import Row, count_rows, read_rows


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
        resume: continue an interrupted run into the same ``output``; refused when the source,
            options, input or settings differ from the run that wrote it (``OUT.run.json``).
        on_bad_row: ``"stop"`` raises InputError at a malformed row (naming its line);
            ``"skip"`` writes it with the reason to ``OUTPUT.rejects.jsonl`` and goes on.
        reward: an already loaded RewardFunction (tests, notebooks); else loaded from ``source``.

    Every output path is checked before the model loads (``jobs/output.py``): its folder exists,
    it is not the input, it holds no data unless ``resume``; and the output is locked while the
    job runs, so a second run on it stops at once.

    Returns:
        ``{"rows", "scored", "resumed", "rejected", "written", "output"}``: rows in the input,
        rows scored now, rows found already done, rows rejected, rows in ``output``.
    """
    from tqdm import tqdm

    from ..options import RewardOptions

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if best_of_n is not None and best_of_n < 1:
        raise ConfigError(f"--best-of-n must be at least 1, got {best_of_n}")
    if min_zscore is not None and not math.isfinite(min_zscore):
        raise ConfigError(f"--min-zscore must be a finite number of standard deviations, got {min_zscore}")
    if on_bad_row not in ("stop", "skip"):
        raise ConfigError(f"--on-bad-row {on_bad_row!r} is not one of ('stop', 'skip')")
    chosen = reward.options if reward is not None else RewardOptions.from_kwargs(**dict(options or {}))
    normalize = chosen.normalize
    if normalize == "reference" or chosen.normalize_target != "reward":
        raise ConfigError(
            f"score normalizes the reward per prompt over the whole file (center, zscore, rank); "
            f"normalize={normalize!r} with normalize_target={chosen.normalize_target!r} is for training"
        )
    # Per-prompt statistics and filters need every response of a prompt: score first, write OUT at the end.
    filtering = best_of_n is not None or min_zscore is not None or normalize != "none"
    scored_path = output + ".scored.jsonl" if filtering else output
    rejects_path = output + ".rejects.jsonl"
    job = JobOutput(output, input, [scored_path, rejects_path], final=output if filtering else None, resume=resume)
    job.check()  # every path, before anything loads
    total = count_rows(input)  # a missing or unknown input fails here, before any file is written
    resolved = None
    if reward is None:
        from ..resolve import resolve

        resolved = resolve(source, **dict(options or {}))  # every weight-free check
    if (resolved.needs_groups if resolved is not None else getattr(reward.scorer, "needs_groups", False)):
        raise ConfigError(
            f"score writes rows batch by batch, but protocol={chosen.protocol!r} compares each prompt's responses "
            "with each other and needs all of them at once; evaluate a pairwise judge with `rewardbridge eval`, or score "
            "with a pointwise reward (a reward model, or protocol='principle')"
        )
    settings = {"best_of_n": best_of_n, "min_zscore": min_zscore, "steerlm_labels": steerlm_labels}
    record = RunRecord.of("rewardbridge score", (resolved or reward).source, (resolved or reward).options, input, settings)
    with job.locked():
        done = job.start(record)
        if reward is None:
            from ..reward_fn import RewardFunction
            from ..scorers import build_scorer

            reward = RewardFunction(resolved.source, resolved.options, scorer=build_scorer(resolved))
        stats = _score_rows(reward, input, total, scored_path, rejects_path, done, filtering, steerlm_labels,
                            batch_size, on_bad_row, tqdm)
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


def _score_rows(reward, input, total, scored_path, rejects_path, done, filtering, steerlm_labels, batch_size, on_bad_row, tqdm):
    """Score the rows not in ``done`` into ``scored_path`` (rejects into ``rejects_path``); returns the counts."""
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
    return stats


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


def _count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _post_process(scored_path: str, output: str, options, best_of_n: int | None, min_zscore: float | None, steerlm: bool) -> int:
    """Write the rows of ``scored_path`` that pass the filters to ``output``; returns how many.

    With ``options.normalize`` each row also gets ``normalized_reward``: its reward normalized
    among all its prompt's responses in the file (then ``options.clip``), as training would.
    """
    from ..normalize import clip_rewards, group_index, normalize_per_prompt

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
    from ..normalize import group_index, normalize_per_prompt

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
