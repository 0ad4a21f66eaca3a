"""The objective families a paradigm's loss L_i can use (Eq. 5). Each returns a differentiable
*sum* over tokens (the trainer divides by the global token count), or, for data-side methods,
the token weights / control tokens they impose.

- unlikelihood: push down the probability of flagged tokens: ``-sum m_t log(1 - p_t)``.
- rwr (reward-weighted regression): reweight the LM loss per sample by
  ``w_b = B * softmax(R_b / beta)``; the term is ``sum_b (w_b - 1) * CE_b`` so that
  ``L_LM + L_rwr`` is exactly the reward-weighted likelihood.
- filtering: drop samples whose reward is below a threshold from L_LM (token weights 0).
- conditional (Korbak et al. 2023): a control token before each document says whether it is
  aligned; generation is then conditioned on ``<|aligned|>``. Data-side: no extra term.
- dpo: ``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`` on ranked pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FAMILIES = ("unlikelihood", "rwr", "filtering", "conditional", "dpo", "none")


def unlikelihood_sum(token_logprobs: torch.Tensor, flagged: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """``token_logprobs[b, s]`` = log p(label), ``flagged[b, s]`` severities in [0, 1]."""
    p = token_logprobs.exp().clamp(max=1.0 - 1e-6)
    return -(flagged * loss_mask * torch.log1p(-p)).sum()


def rwr_weights(reward: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Per-sample weights with mean 1: ``B * softmax(reward / beta)``."""
    return reward.numel() * torch.softmax(reward / beta, dim=0)


def rwr_sum(per_token_ce: torch.Tensor, loss_mask: torch.Tensor, reward: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """``sum_b (w_b - 1) * CE_b`` with CE_b the sample's summed token loss (weights constant)."""
    w = rwr_weights(reward.detach(), beta)
    ce_b = (per_token_ce * loss_mask).sum(dim=1)
    return ((w - 1.0) * ce_b).sum()


def filtering_mask(reward: torch.Tensor, threshold: float, seq_len: int) -> torch.Tensor:
    """``[b, s]`` LM token weights: 0 for samples whose reward is below ``threshold``."""
    keep = (reward >= threshold).float()
    return keep.unsqueeze(1).expand(-1, seq_len)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Per-pair DPO loss from sequence log-probabilities ``[pairs]``."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin)
