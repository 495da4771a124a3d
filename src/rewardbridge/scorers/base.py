"""The scorer protocol: conversations in, scores out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # annotations only: a remote-only client imports no torch
    import torch

from ..conversation import Conversation


@dataclass
class Scores:
    """What a reward model said about a batch of B conversations.

    Attributes:
        values (torch.Tensor | None): shape (B,), float32; the model's scalar reward, or
            None for a multi-attribute model whose attributes must be combined by weights.
            NaN marks a conversation that could not be scored (a remote failure).
        attributes (dict[str, torch.Tensor]): name -> shape (B,); a multi-output head.
        num_truncated (int): conversations cut to fit ``max_length``.
        groups (list | None): B hashable keys, the group each conversation was judged in
            (equal keys on every rank mean one group), for ``normalize=`` to use the same
            groups; None: group by prompt (every scorer that scores one response at a time).
    """

    values: torch.Tensor | None
    attributes: dict[str, torch.Tensor] = field(default_factory=dict)
    num_truncated: int = 0
    groups: list | None = None

    def __len__(self) -> int:
        if self.values is not None:
            return len(self.values)
        return len(next(iter(self.attributes.values()))) if self.attributes else 0


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores conversations: a local model or a remote endpoint."""

    def score(self, conversations: Sequence[Conversation]) -> Scores: ...
