"""``rewardbridge score``'s filters, applied once every row is scored: per-prompt normalization
(``normalized_reward``), ``--min-zscore`` and ``--best-of-n``, over each prompt's responses in the
whole file; the filtered output is written whole, or not at all.
"""

from __future__ import annotations

import json
import math
import os

import torch

from .formats import json_line, parse_row


def write_filtered(scored_path: str, output: str, options, best_of_n: int | None, min_zscore: float | None, steerlm: bool) -> int:
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
        # float64: the rewards are float32 numbers, and their spread (x - mean, a sum of squares) must not overflow.
        values = torch.tensor([math.nan if r is None else r for r in rewards], dtype=torch.float64)
        normalized = normalize_per_prompt(values, group_index(keys), options.normalize, options.std_floor).values.reshape(-1)
        for row, value in zip(rows, clip_rewards(normalized, options.clip).tolist()):
            row["normalized_reward"] = None if math.isnan(value) else value
    if best_of_n is None and min_zscore is None:
        keep = list(range(len(rows)))  # normalize alone keeps every row
    else:
        keep, zscores = select_rows(keys, rewards, best_of_n, min_zscore)
    if min_zscore is not None:
        for i in keep:
            rows[i]["zscore"] = zscores[i]
    tmp = output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for i in keep:
            f.write(json_line(rows[i]))
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
