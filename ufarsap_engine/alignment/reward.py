"""The unified reward (Eq. 12): ``R = sum_i alpha_i R_i + beta * Synergy + gamma * Emergence``.

Scale: R_i and Synergy are in [0, 1]; Emergence is clipped to [0, 3] (three parts, each in
[0, 1], see ``emergence.py``). R is divided by ``sum(alpha) + beta + 3 * gamma`` so the unified
reward lies in [0, 1] whatever the weights; 1 = every paradigm fully aligned, maximal synergy
and emergence.
"""

from __future__ import annotations

import torch


def unified_reward(paradigm_rewards: torch.Tensor, present: torch.Tensor, alpha: torch.Tensor,
                   synergy: torch.Tensor, emergence: float, beta: float, gamma: float) -> torch.Tensor:
    """``paradigm_rewards[p, b]`` (or ``[p, b, t]`` per token), ``alpha[p]``, ``synergy[b]``
    -> reward per sample (per token) in [0, 1]. Absent paradigms contribute nothing and their
    alpha is left out of the normaliser."""
    shape = (-1,) + (1,) * (paradigm_rewards.dim() - 1)
    a = alpha * present.float()
    weighted = (a.reshape(shape) * paradigm_rewards).sum(dim=0)
    syn = synergy.reshape(synergy.shape + (1,) * (weighted.dim() - synergy.dim()))
    em = min(max(float(emergence), 0.0), 3.0)
    norm = float(a.sum()) + beta + 3.0 * gamma
    if norm <= 0:
        return torch.ones_like(weighted)
    return (weighted + beta * syn + gamma * em) / norm
