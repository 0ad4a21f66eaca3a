"""The objective families a paradigm's loss L_i can use (Eq. 5). Each returns a differentiable
*sum* over tokens (the trainer divides by the global token count), or, for data-side methods,
the token weights / control tokens they impose.

- unlikelihood (Welleck et al.; Korbak et al.): flagged tokens (token spans and flagged
  sentences; whole documents only for a paradigm that scores nothing finer) are taken out of L_LM (weight ``1 - m_t``) and their probability is pushed down:
  ``-sum m_t log(1 - p_t)``. (Keeping them in
  L_LM would balance the two at p = 1/(1 + lambda), i.e. not lower a rare token at all.)
- rwr (reward-weighted regression): reweight the LM loss by ``w = N * softmax(R / beta)`` over the
  N tokens (each token carries its document's reward; per-sample rewards work too); the term is
  ``sum (w - 1) * CE`` so that ``L_LM + L_rwr`` is exactly the reward-weighted likelihood.
- filtering: drop tokens of documents whose reward is below a threshold from L_LM.
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
    """``sum (w - 1) * CE`` with constant weights; ``reward`` per sample ``[b]`` (CE summed per
    sample) or per token ``[b, s]`` (weights normalised over the unmasked tokens)."""
    r = reward.detach()
    if r.dim() == 1:
        w = rwr_weights(r, beta)
        return ((w - 1.0) * (per_token_ce * loss_mask).sum(dim=1)).sum()
    valid = loss_mask > 0
    logits = (r / beta).masked_fill(~valid, float("-inf")).reshape(-1)
    w = valid.sum() * torch.softmax(logits, dim=0).reshape(r.shape)
    return ((w - 1.0) * per_token_ce * loss_mask).sum()


def filtering_mask(reward: torch.Tensor, threshold: float, seq_len: int) -> torch.Tensor:
    """``[b, s]`` LM token weights: 0 where the (per-sample ``[b]`` or per-token ``[b, s]``)
    reward is below ``threshold``."""
    keep = (reward >= threshold).float()
    return keep if keep.dim() == 2 else keep.unsqueeze(1).expand(-1, seq_len)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Per-pair DPO loss from sequence log-probabilities ``[pairs]``."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin)
