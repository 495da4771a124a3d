"""Scorers: what turns conversations into scores.

``build_scorer`` loads what ``resolve.py`` decided:

- a local directory or hub id -> ``local.LocalScorer`` (``loading.py``; optionally sharded
  by ``zero3.py``), which tokenizes and plans micro-batches (``tokens.py``) and reads each
  model card's score (``readouts.py``);
- an ``http(s)://`` URL (or several) -> ``remote.RemoteScorer``: a protocol codec from
  ``protocols/`` over the shared transport (``transport.py``); a generative judge's codec
  names its own scorer: ``pairwise.PairwiseScorer`` (genrm, whole groups) or
  ``judges.PrincipleScorer`` (principle, one response at a time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Scorer


def build_scorer(resolved) -> Scorer:
    """Load the scorer a resolved source (``resolve.Resolved``) describes: the one place that picks local or remote."""
    if resolved.remote:
        from ..protocols import protocol_module

        module = protocol_module(resolved.options.protocol)
        judge = getattr(module.CLIENT, "scorer", None)  # a generative judge: its own scorer over the transport
        if judge is not None:
            codec = module.CLIENT(resolved.options, renderer=resolved.renderer)
            if judge == "pairwise":
                from .pairwise import PairwiseScorer

                return PairwiseScorer(resolved.urls, codec, resolved.options)
            from .judges import PrincipleScorer

            return PrincipleScorer(resolved.urls, codec, resolved.options)
        from .remote import load_remote_scorer

        return load_remote_scorer(resolved)
    from .loading import load_local_scorer

    return load_local_scorer(resolved)
