"""Per-prompt normalization: a reward model's scores compare only between responses to one prompt.

The maths is pure tensor code over (score, group) pairs. Groups are prompts, identified by
the rendered prompt's key, not by position. TRL scores each process's local slice and may
split one prompt's group across processes, so :func:`normalize_across_ranks` gathers every
rank's (key, score) pairs, normalizes over whole groups, and hands each rank its own slice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # torch is imported where it is used: `import rewardbridge` stays light (issue 18)
    import torch

GROUP_MODES = ("center", "zscore", "rank")


@dataclass
class Normalized:
    """Result of :func:`normalize_per_prompt`.

    Attributes:
        values (torch.Tensor): same shape as the input scores; NaN where the input was NaN.
        num_groups (int): prompts with at least one valid score.
        num_zero_spread (int): of those, groups whose valid scores are all equal (a group of
            one included): their normalized rewards carry no learning signal.
        num_singletons (int): of those, groups of one response.
    """

    values: torch.Tensor
    num_groups: int
    num_zero_spread: int
    num_singletons: int = 0


def group_index(keys: Sequence[str]) -> torch.Tensor:
    """Map prompt keys to group ids in order of first appearance.

    >>> group_index(["a", "b", "a"]).tolist()
    [0, 1, 0]
    """
    import torch

    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(k, len(ids)) for k in keys], dtype=torch.long)


def combine_attributes(attributes: dict[str, torch.Tensor], names: Sequence[str], weights: Sequence[float]) -> torch.Tensor:
    """Weighted sum of named attribute columns: shape (B,).

    >>> import torch
    >>> combine_attributes({"a": torch.tensor([1.0]), "b": torch.tensor([2.0])}, ["a", "b"], [0.5, -1.0])
    tensor([-1.5000])
    """
    import torch

    stacked = torch.stack([attributes[n].float() for n in names], dim=-1)  # (B, K)
    return stacked @ torch.tensor(list(weights), dtype=torch.float32)


def normalize_per_prompt(scores: torch.Tensor, groups: torch.Tensor, mode: str, std_floor: float = 1e-6) -> Normalized:
    """Normalize scores within each group of responses to the same prompt.

    Args:
        scores (torch.Tensor): shape (B,) or (B, K); each column is normalized on its own.
            NaN scores are left out of the statistics and stay NaN.
        groups (torch.Tensor): shape (B,), int; equal ids share a prompt.
        mode: ``"center"`` x - mean; ``"zscore"`` (x - mean) / max(std, std_floor) with the
            sample std (n - 1, as TRL's GRPO); ``"rank"`` the rank within the group scaled to
            [0, 1], ties sharing their average rank. A group of one gives 0, 0 and 0.5.

    >>> import torch
    >>> normalize_per_prompt(torch.tensor([1.0, 3.0, 10.0]), torch.tensor([0, 0, 1]), "center").values
    tensor([-1.,  1.,  0.])
    """
    import torch

    if mode not in GROUP_MODES:
        raise ValueError(f"mode={mode!r} is not one of {GROUP_MODES}")
    if len(scores) == 0:  # TRL can hand a rank an empty slice
        return Normalized(values=scores.float().clone(), num_groups=0, num_zero_spread=0)
    matrix = scores.float().reshape(len(scores), -1)  # (B, K)
    out = torch.full_like(matrix, float("nan"))
    num_groups = num_zero_spread = num_singletons = 0
    for group in torch.unique(groups):
        rows = (groups == group).nonzero(as_tuple=True)[0]
        spread_seen = False
        most_valid = 0
        for col in range(matrix.shape[1]):
            values = matrix[rows, col]
            valid = ~torch.isnan(values)
            x = values[valid]
            if len(x) == 0:
                continue
            most_valid = max(most_valid, len(x))
            spread_seen |= bool(x.max() > x.min())
            out[rows[valid], col] = _normalize_group(x, mode, std_floor)
        if most_valid:
            num_groups += 1
            num_zero_spread += int(not spread_seen)
            num_singletons += int(most_valid == 1)
    values = out.reshape(scores.shape)
    return Normalized(values=values, num_groups=num_groups, num_zero_spread=num_zero_spread, num_singletons=num_singletons)


def _normalize_group(x: torch.Tensor, mode: str, std_floor: float) -> torch.Tensor:
    """One group's valid scores, shape (n,), normalized."""
    import torch

    n = len(x)
    if mode == "rank":
        if n == 1:
            return torch.full_like(x, 0.5)
        # Average rank with ties: (#less) + (#equal - 1) / 2, in [0, n - 1].
        less = (x[None, :] < x[:, None]).sum(dim=1).float()
        equal = (x[None, :] == x[:, None]).sum(dim=1).float()
        return (less + (equal - 1) / 2) / (n - 1)
    centered = x - x.mean()
    if mode == "center" or n == 1:
        return centered
    return centered / x.std(unbiased=True).clamp_min(std_floor)


def clip_rewards(values: torch.Tensor, clip: tuple[float, float] | None) -> torch.Tensor:
    """Clamp into [low, high]; NaN stays NaN."""
    return values if clip is None else values.clamp(min=clip[0], max=clip[1])


def gather_across_ranks(keys: list[str], scores: torch.Tensor) -> tuple[list[str], torch.Tensor, slice]:
    """Every rank's (key, score) rows, in rank order, and this rank's slice of them.

    Uses the default process group that the trainer (accelerate) already set up. Local
    sizes may differ between ranks. With one process this returns the inputs unchanged.

    Args:
        keys: B_local prompt keys.
        scores (torch.Tensor): shape (B_local,) or (B_local, K).
    """
    import torch

    rank, world = rank_and_world()
    if world == 1:
        return keys, scores, slice(0, len(keys))
    # Objects, not tensors: local sizes differ, and the payload is a few hundred floats.
    gathered = gather_objects((list(keys), scores.float().cpu()))
    offset = sum(len(k) for k, _ in gathered[:rank])
    all_keys = [k for rank_keys, _ in gathered for k in rank_keys]
    all_scores = torch.cat([s for _, s in gathered], dim=0)
    return all_keys, all_scores, slice(offset, offset + len(keys))


def rank_and_world() -> tuple[int, int]:
    """(this rank, number of ranks) of the default process group; (0, 1) without one."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_objects(payload: Any) -> list[Any]:
    """Every rank's ``payload`` (any picklable object), in rank order: ``[payload]`` with one process.
    A collective when distributed: every rank must call it, the same number of times."""
    import torch.distributed as dist

    if rank_and_world()[1] == 1:
        return [payload]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, payload)
    return gathered


def normalize_across_ranks(keys: list[str], scores: torch.Tensor, mode: str, std_floor: float = 1e-6) -> Normalized:
    """:func:`normalize_per_prompt` over whole groups, even when a group spans processes.

    Every rank must call this the same number of times (it is a collective when
    distributed). Returns this rank's rows; the group counts cover all ranks.
    """
    all_keys, all_scores, mine = gather_across_ranks(keys, scores)
    result = normalize_per_prompt(all_scores, group_index(all_keys), mode, std_floor)
    return dataclasses.replace(result, values=result.values[mine])
