"""Which two of a prompt's scored responses make its pair (``select_pair``), and the same choice
made again on a responses record, for a resume with another ``min_margin`` or ``drop_truncated``
(the samples and their scores are the expensive part; choosing the pair is not).
"""

from __future__ import annotations

import math
from typing import Any, Sequence


def select_pair(rewards: Sequence[float | None], min_margin: float = 0.0,
                truncated: Sequence[bool] | None = None) -> tuple[int | None, int | None, str | None]:
    """The best and the worst scored response: ``(chosen, rejected, None)``, or ``(None, None, why)``.

    Unscored responses (None, or a non-finite score) are left out, and so are the ``truncated``
    ones when given (responses cut at max_new_tokens). On a tie the first response wins. No pair
    when fewer than 2 are scored (``"unscored"``), fewer than 2 scored ones are complete
    (``"truncated"``), or when best - worst is 0 or below ``min_margin`` (``"below_margin"``):
    equal scores say nothing about which is better.

    >>> select_pair([0.5, 2.0, None, -1.0])
    (1, 3, None)
    >>> select_pair([0.5, 0.7], min_margin=0.5)
    (None, None, 'below_margin')
    >>> select_pair([3.0, 1.0, 0.0], truncated=[True, False, False])
    (1, 2, None)
    """
    scored = [(r, i) for i, r in enumerate(rewards) if r is not None and math.isfinite(r)]
    if len(scored) < 2:
        return None, None, "unscored"
    if truncated is not None:
        scored = [(r, i) for r, i in scored if not truncated[i]]
        if len(scored) < 2:
            return None, None, "truncated"
    best = max(scored, key=lambda x: (x[0], -x[1]))
    worst = min(scored, key=lambda x: (x[0], x[1]))
    margin = best[0] - worst[0]
    if margin <= 0 or margin < min_margin:
        return None, None, "below_margin"
    return best[1], worst[1], None


def is_truncated(response: dict[str, Any]) -> bool:
    """A response cut at the token budget (OpenAI's and transformers' finish reason ``"length"``)."""
    return response.get("finish_reason") == "length"


def reselect(record: dict[str, Any], min_margin: float, drop_truncated: bool) -> dict[str, Any]:
    """A responses record with its pair chosen under these settings (the same record when nothing changes).

    >>> record = {"responses": [{"reward": 1.0, "finish_reason": "length"}, {"reward": 0.0, "finish_reason": "stop"},
    ...                         {"reward": -1.0, "finish_reason": "stop"}], "chosen": 0, "rejected": 2, "no_pair": None}
    >>> reselect(record, 0.0, drop_truncated=True)["chosen"]
    1
    """
    responses = record["responses"]
    truncated = [is_truncated(r) for r in responses] if drop_truncated else None
    chosen, rejected, why = select_pair([r.get("reward") for r in responses], min_margin, truncated)
    if (chosen, rejected, why) == (record.get("chosen"), record.get("rejected"), record.get("no_pair")):
        return record
    return {**record, "chosen": chosen, "rejected": rejected, "no_pair": why}
