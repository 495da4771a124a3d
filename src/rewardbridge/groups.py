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

from .errors import ConfigError
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
    that every rank can raise it together instead of leaving the others waiting
    (``Gathered.problems``: (rank, exception) pairs, see :func:`raise_problems`).
    """
    rank, world = rank_and_world()
    per_rank = gather_objects((list(rows), problem))
    offset = sum(len(r) for r, _ in per_rank[:rank])
    problems = [(r, p) for r, (_, p) in enumerate(per_rank) if p is not None]
    return Gathered([row for part, _ in per_rank for row in part], slice(offset, offset + len(rows)), rank, world, problems)


def raise_problems(gathered: Gathered) -> None:
    """Raise the first rank's problem on every rank alike, naming the rank(s) it came from.

    >>> raise_problems(Gathered([], slice(0, 0), problems=[(0, ValueError("bad row"))]))
    Traceback (most recent call last):
    ValueError: bad row
    """
    if not gathered.problems:
        return
    rank, error = gathered.problems[0]
    if gathered.world == 1:
        raise error
    same = [r for r, e in gathered.problems if str(e) == str(error)]
    where = f"rank {same[0]}" if len(same) == 1 else f"ranks {same}"
    others = len(gathered.problems) - len(same)
    more = f"; {others} other rank(s) found other problems" if others else ""
    try:
        named = type(error)(f"{error} (on {where} of {gathered.world}{more})")
    except Exception:  # noqa: BLE001: an exception type that takes other arguments: raise it as it came
        raise error from None
    raise named from error


def group_indices(keys: Sequence[Hashable]) -> list[list[int]]:
    """Row indices grouped by key, groups in order of first appearance.

    >>> group_indices(["p", "q", "p", "p"])
    [[0, 2, 3], [1]]
    """
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def consecutive_blocks(keys: Sequence[Hashable], size: int) -> list[list[int]]:
    """Row indices in consecutive blocks of ``size``, each holding one key: TRL's own advantage
    groups (``num_generations`` consecutive completions of one prompt, in the gathered order).

    >>> consecutive_blocks(["p", "p", "p", "p"], 2)  # one prompt, two TRL groups
    [[0, 1], [2, 3]]
    """
    if len(keys) % size:
        raise ConfigError(
            f"group_size={size} splits a call's completions into TRL's groups of num_generations consecutive completions, "
            f"but this call has {len(keys)} (on all ranks together), not a multiple of {size}; set group_size to the "
            "trainer's num_generations, or drop it to group completions by prompt"
        )
    blocks = [list(range(start, start + size)) for start in range(0, len(keys), size)]
    for block in blocks:
        if len({keys[i] for i in block}) > 1:
            raise ConfigError(
                f"group_size={size}: completions {block[0]}-{block[-1]} (a group of {size} consecutive ones) answer "
                f"{len({keys[i] for i in block})} different prompts (or principles), so they are not one TRL group; set "
                "group_size to the trainer's num_generations, or drop it to group completions by prompt"
            )
    return blocks


def runs_of(indices: Sequence[int]) -> list[int]:
    """Lengths of the runs of consecutive indices in ascending ``indices``.

    >>> runs_of([0, 1, 2, 7, 8])
    [3, 2]
    """
    lengths = [1] if indices else []
    for before, after in zip(indices, indices[1:]):
        if after == before + 1:
            lengths[-1] += 1
        else:
            lengths.append(1)
    return lengths


def share(count: int, gathered: Gathered) -> list[int]:
    """This rank's pieces of ``count`` pieces of work: every ``world``-th, from its rank."""
    return list(range(gathered.rank, count, gathered.world))


def gather_results(mine: dict[int, Any]) -> dict[int, Any]:
    """Every rank's {piece: result}, merged (each piece ran on one rank); a collective."""
    merged: dict[int, Any] = {}
    for part in gather_objects(mine):
        merged.update(part)
    return merged
