"""Whole groups, for a reward that needs every response to a prompt at once (a pairwise judge).

TRL scores each process's local slice and may split one prompt's group across processes
(REFERENCE.md §1). Every rank gathers every rank's rows (the same collective the per-prompt
normalization uses, ``normalize.gather_objects``), so every rank sees every whole group in
the same order; the work (comparisons) is then dealt out round-robin, so each piece runs on
exactly one rank, and its results are gathered back to all. Every rank must call these the
same number of times, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

from .normalize import gather_objects, rank_and_world


@dataclass
class Gathered:
    """Every rank's rows in rank order, and where this rank's own rows are among them.

    >>> g = gather_rows(["a", "b"])  # one process
    >>> g.rows, g.mine, share(5, g), g.problems
    (['a', 'b'], slice(0, 2, None), [0, 1, 2, 3, 4], [])
    """

    rows: list
    mine: slice
    rank: int = 0
    world: int = 1
    problems: list = field(default_factory=list)


def gather_rows(rows: Sequence[Any], problem: Any = None) -> Gathered:
    """All ranks' rows (picklable), in rank order; a collective when distributed.

    ``problem``: what this rank found wrong with its rows (an exception), gathered too, so
    that every rank can raise it together instead of leaving the others waiting.
    """
    rank, world = rank_and_world()
    per_rank = gather_objects((list(rows), problem))
    offset = sum(len(r) for r, _ in per_rank[:rank])
    problems = [p for _, p in per_rank if p is not None]
    return Gathered([row for part, _ in per_rank for row in part], slice(offset, offset + len(rows)), rank, world, problems)


def group_indices(keys: Sequence[Hashable]) -> list[list[int]]:
    """Row indices grouped by key, groups in order of first appearance.

    >>> group_indices(["p", "q", "p", "p"])
    [[0, 2, 3], [1]]
    """
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def share(count: int, gathered: Gathered) -> list[int]:
    """This rank's pieces of ``count`` pieces of work: every ``world``-th, from its rank."""
    return list(range(gathered.rank, count, gathered.world))


def gather_results(mine: dict[int, Any]) -> dict[int, Any]:
    """Every rank's {piece: result}, merged (each piece ran on one rank); a collective."""
    merged: dict[int, Any] = {}
    for part in gather_objects(mine):
        merged.update(part)
    return merged
