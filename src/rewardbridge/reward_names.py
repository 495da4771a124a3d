"""What a reward is called: a default name from its source, and the names alive in this process.

TRL logs each reward under its ``__name__`` (``rewards/<name>/mean``) and merges the metrics of
two rewards with one name, so two live rewards that differ under one name are warned about.
"""

from __future__ import annotations

import os
import re
import weakref
from typing import TYPE_CHECKING, Any

from .errors import warn
from .resolve import URL_PATTERN

if TYPE_CHECKING:
    from .options import RewardOptions


def default_name(source: str, options: RewardOptions) -> str:
    if URL_PATTERN.match(source):  # http://host:8000/x -> host_8000_x (the first endpoint)
        base = source.split(",")[0].strip().split("://", 1)[1].rpartition("@")[2].strip("/")
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", base) or "remote"
    base = os.path.basename(os.path.normpath(source)) or "reward"
    if options.gguf_file:
        base = os.path.splitext(os.path.basename(options.gguf_file))[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base)


# The rewards alive in this process, by name: TRL logs (and merges) rewards by name.
_LIVE: dict[str, weakref.WeakSet] = {}


def claim_name(reward: Any) -> None:
    """Warn when another live reward (a ``RewardFunction``) of this name differs from this one (another source, or the same
    source with other options: another protocol on one URL, two normalize variants of one model): in
    one trainer TRL would log both under ``rewards/<name>/...`` and merge their metrics. The same source
    with the same options again (a reload) is one reward; a recipe refuses any repeat."""
    alive = _LIVE.setdefault(reward.__name__, weakref.WeakSet())
    other = next((r for r in alive if r.source != reward.source or r.options != reward.options), None)
    if other is not None:
        if other.source != reward.source:
            differ = f"{other.source} and {reward.source}"
        else:
            before, now = other.options.changed(), reward.options.changed()
            keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k != "name")
            shown = lambda options, k: repr(options[k]) if k in options else "unset"  # noqa: E731
            differ = f"one source, {', '.join(f'{k} {shown(before, k)} and {shown(now, k)}' for k in keys)}"
        warn(
            f"two rewards are named {reward.__name__!r} ({differ}); TRL logs rewards by name and "
            "would merge their metrics: pass name='...' to load_reward (a recipe's 'name:') to tell them apart"
        )
    alive.add(reward)
