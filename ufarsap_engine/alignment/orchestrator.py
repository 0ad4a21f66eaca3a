"""Hierarchical orchestration (Eq. 2, 8-11): learnable weights w[s, tau] over the 4 scales x
4 horizons that combine the plugins' cell scores into the orchestrated state O(a, x, y).

For each paradigm, the weights are a softmax over the cells that paradigm has scores for; cells
no active plugin serves are masked out (they get weight 0, not a made-up score).
"""

from __future__ import annotations

import torch
from torch import nn

from ufarsap_engine.schemas import HORIZONS, PARADIGMS, SCALES

N_SCALES, N_HORIZONS, N_PARADIGMS = len(SCALES), len(HORIZONS), len(PARADIGMS)


class Orchestrator(nn.Module):
    """``logits[s, tau]``: one learnable weight per cell, shared by the paradigms (trained with
    its own learning rate eta_orch)."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(N_SCALES, N_HORIZONS))

    def cell_weights(self, available: torch.Tensor) -> torch.Tensor:
        """``available[s, tau, p]`` (bool) -> weights ``[s, tau, p]``: per paradigm a softmax over
        its available cells; all zeros for a paradigm with no cell."""
        logits = self.logits.unsqueeze(-1).expand(N_SCALES, N_HORIZONS, available.shape[-1])
        masked = logits.masked_fill(~available, float("-inf")).reshape(-1, available.shape[-1])
        weights = torch.softmax(masked, dim=0)
        return torch.nan_to_num(weights, nan=0.0).reshape(available.shape)

    def combine(self, cell_scores: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Eq. 2: ``O[p, ...] = sum_{s,tau} w[s,tau,p] * A[s,tau,p, ...]``.

        ``cell_scores[s, tau, p, *rest]`` (masked cells may hold anything finite)."""
        w = self.cell_weights(available)
        w = w.reshape(*w.shape, *([1] * (cell_scores.dim() - 3)))
        scores = torch.where(available.reshape(w.shape), cell_scores, torch.zeros_like(cell_scores))
        return (w * scores).sum(dim=(0, 1))

    def weight_table(self, available: torch.Tensor) -> dict[str, float]:
        """Per-cell weights averaged over paradigms that use them, for metrics.jsonl."""
        w = self.cell_weights(available).detach()
        used = available.any(-1)
        out = {}
        for si, s in enumerate(SCALES):
            for ti, t in enumerate(HORIZONS):
                if used[si, ti]:
                    paradigms = available[si, ti]
                    out[f"orch.w.{s}.{t}"] = float(w[si, ti][paradigms].mean())
        return out


def coordination_loss(orchestrated: torch.Tensor, target: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Eq. 6: ``||O - a*||^2`` over the paradigms that are present; ``orchestrated[p, b]``,
    ``target[p]``, ``present[p]`` (bool). Returns one value per sample ``[b]``."""
    diff = (orchestrated - target.unsqueeze(-1)) * present.unsqueeze(-1).float()
    return (diff ** 2).sum(dim=0)
