"""Reward-aware Preference Optimization's loss (Nemotron-4-340B's alignment; NeMo-Aligner's
``rpo_bwd_kl`` / ``rpo_fwd_kl`` / ``rpo_sq``), pure torch.

DPO asks the policy's implicit reward gap ``beta * d`` to be large. RPO asks it to match the
reward model's gap ``t = eta * (r(x, y_c) - r(x, y_l))``: a pair the reward model barely
separates should barely be separated, so a good rejected response is not unlearned. With
``p = sigmoid(beta * d)`` and ``q = sigmoid(t)``:

- ``bwd_kl``: ``q (log q - log p) + (1 - q) (log(1 - q) - log(1 - p))``, the Bernoulli KL(q || p)
- ``fwd_kl``: ``p (log p - log q) + (1 - p) (log(1 - p) - log(1 - q))``, KL(p || q)
- ``sq``:     ``(beta * d - t) ** 2``

Every log comes from ``logsigmoid``, never ``log(sigmoid(.))``: a margin of 1e4 stays finite.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError

DISTANCES = ("bwd_kl", "fwd_kl", "sq")


def rpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    *,
    beta: float,
    eta: float = 1.0,
    distance: str = "bwd_kl",
) -> torch.Tensor:
    """Per-pair RPO losses.

    Args:
        policy_chosen_logps, policy_rejected_logps: shape (B,), the policy's log-probability of
            each response (summed over its tokens, or their mean).
        ref_chosen_logps, ref_rejected_logps: shape (B,), the same under the reference policy.
        chosen_rewards, rejected_rewards: shape (B,), the reward model's score of each response.
        beta: scales the implicit reward ``log pi - log pi_ref`` (DPO's beta), a real number > 0 (float, NumPy, 0-d tensor).
        eta: scales the reward model's gap (NeMo-Aligner's ``gt_reward_scale``), > 0, of the same kinds.
        distance: ``"bwd_kl"`` (the paper's), ``"fwd_kl"`` or ``"sq"``.

    Returns:
        shape (B,): each pair's loss, in float32 (float64 when an input is float64).

    At ``beta * d == t`` both KL distances are 0, and so is their gradient:

    >>> z = torch.zeros(2)
    >>> rpo_loss(torch.tensor([1.0, 0.0]), z, z, z, torch.tensor([0.5, 0.0]), z, beta=0.5)
    tensor([0., 0.])
    """
    if distance not in DISTANCES:
        raise ConfigError(f"distance={distance!r} is not one of {DISTANCES}")
    beta, eta = _scale("beta", beta), _scale("eta", eta)
    tensors = {
        "policy_chosen_logps": policy_chosen_logps, "policy_rejected_logps": policy_rejected_logps,
        "ref_chosen_logps": ref_chosen_logps, "ref_rejected_logps": ref_rejected_logps,
        "chosen_rewards": chosen_rewards, "rejected_rewards": rejected_rewards,
    }
    shape = policy_chosen_logps.shape if isinstance(policy_chosen_logps, torch.Tensor) else None
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1 or tensor.shape != shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ConfigError(f"rpo_loss: {name} must be a tensor of shape (B,) like policy_chosen_logps {tuple(shape or ())}, got {got}")
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors.values()) else torch.float32
    pc, pl, rc, rl, cr, rr = (t.to(dtype) for t in tensors.values())
    implicit = beta * ((pc - rc) - (pl - rl))
    target = eta * (cr - rr)
    return rpo_distance(implicit, target, distance)


def _scale(name: str, value: Any) -> float | torch.Tensor:
    """A real number > 0: a Python or NumPy number, or a 0-d tensor (kept as one: it may carry a gradient)."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point():
        number = float(value.detach())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):  # NumPy numbers are numbers.Real too
        number = value = float(value)
    else:
        got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise ConfigError(f"{name}={value!r} must be a real number > 0 (a float, a NumPy number or a 0-d tensor), got {got}")
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{name}={number!r} must be a finite number > 0")
    return value


def rpo_distance(implicit: torch.Tensor, target: torch.Tensor, distance: str = "bwd_kl") -> torch.Tensor:
    """The distance between the implicit gap ``beta * d`` and the target ``t``, both shape (B,).

    >>> rpo_distance(torch.tensor([3.0]), torch.tensor([1.0]), "sq")
    tensor([4.])
    """
    if distance == "sq":
        return (implicit - target) ** 2
    log_p, log_not_p = F.logsigmoid(implicit), F.logsigmoid(-implicit)
    log_q, log_not_q = F.logsigmoid(target), F.logsigmoid(-target)
    if distance == "bwd_kl":
        return log_q.exp() * (log_q - log_p) + log_not_q.exp() * (log_not_q - log_not_p)
    if distance == "fwd_kl":
        return log_p.exp() * (log_p - log_q) + log_not_p.exp() * (log_not_p - log_not_q)
    raise ConfigError(f"distance={distance!r} is not one of {DISTANCES}")
