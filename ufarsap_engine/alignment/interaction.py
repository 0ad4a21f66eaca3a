"""Paradigm interaction (Eq. 3, 20): a small graph network over the 4 paradigm nodes.

Edge weights ``E[p, q] = sigmoid(edge_logits)`` (no self loops) are the paradigm interaction
graph. Each node's features are its alignment at three horizons; one message-passing layer
predicts the next step's alignment state. The network learns from that prediction (a measured,
non-degenerate target), and its edges define the Synergy term of the unified reward.
"""

from __future__ import annotations

import torch
from torch import nn

from ufarsap_engine.alignment.orchestrator import N_PARADIGMS

N_FEATURES = 3  # orchestrated now, medium-horizon EMA, long-horizon (round) value


class InteractionNetwork(nn.Module):
    def __init__(self, hidden: int = 8, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.edge_logits = nn.Parameter(torch.zeros(N_PARADIGMS, N_PARADIGMS))
        self.w_self = nn.Parameter(torch.randn(N_FEATURES, hidden, generator=gen) * 0.3)
        self.w_msg = nn.Parameter(torch.randn(N_FEATURES, hidden, generator=gen) * 0.3)
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.readout = nn.Parameter(torch.randn(hidden, generator=gen) * 0.3)
        self.register_buffer("no_self", 1.0 - torch.eye(N_PARADIGMS))

    def edges(self) -> torch.Tensor:
        return torch.sigmoid(self.edge_logits) * self.no_self

    def forward(self, features: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``features[p, f]`` -> predicted next alignment ``[p]`` in (0, 1). Absent paradigms
        send no messages."""
        e = self.edges() * present.float().unsqueeze(0)
        h = torch.tanh(features @ self.w_self + (e @ features) @ self.w_msg + self.bias)
        return torch.sigmoid(h @ self.readout)

    def synergy(self, orchestrated: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Synergy per sample: edge-weighted joint alignment of interacting paradigms,
        ``sum_{p != q} E[p,q] O_p O_q / sum_{p != q} E[p,q]`` over present paradigms; in [0, 1].

        ``orchestrated[p, b]``. The edges are detached here: they are learned from the
        prediction loss, so the model cannot raise Synergy by rewriting the graph."""
        pres = present.float()
        e = self.edges().detach() * pres.unsqueeze(0) * pres.unsqueeze(1)
        total = e.sum()
        if total <= 0:
            return torch.zeros(orchestrated.shape[-1], dtype=orchestrated.dtype)
        joint = torch.einsum("pq,pb,qb->b", e, orchestrated, orchestrated)
        return joint / total


def prediction_loss(predicted: torch.Tensor, observed: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predicted next state on the present paradigms."""
    mask = present.float()
    return ((predicted - observed) ** 2 * mask).sum() / mask.sum().clamp(min=1.0)
