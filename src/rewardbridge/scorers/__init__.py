"""Scorers: what turns conversations into scores. ``build_scorer`` picks one from a source.

- a local directory or hub id -> ``local.LocalScorer`` (optionally sharded by ``zero3.py``)
- an ``http(s)://`` URL (or several) -> a remote client for ``options.protocol``
  (``remote.py`` holds the transport every protocol shares)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..options import RewardOptions
    from .base import Scorer

URL_PATTERN = re.compile(r"^\s*https?://", re.IGNORECASE)


def is_remote(source: str | list) -> bool:
    """True for a URL (any case of ``http://``/``https://``), a comma-separated list, or a list of them."""
    if isinstance(source, (list, tuple)):
        return bool(source) and all(isinstance(s, str) and URL_PATTERN.match(s) for s in source)
    return isinstance(source, str) and bool(URL_PATTERN.match(source))


def build_scorer(source: str, options: RewardOptions) -> Scorer:
    """The scorer that ``source`` + ``options`` describe: the one place that decides."""
    if is_remote(source):
        from .remote import load_remote_scorer

        return load_remote_scorer(source, options)
    from .local import load_local_scorer

    return load_local_scorer(source, options)
