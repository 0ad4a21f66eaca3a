"""The objective families a paradigm's loss L_i can use (Eq. 5), chosen per paradigm with
``objective.families.PARADIGM=FAMILY`` (``run --set``, a config file, or a strategy's
objective settings). Loss-side families return a differentiable *sum* over tokens (the trainer
divides by the global token count) or the LM token weights they impose; data-side families change
the training tokens before packing (``data_families.py``) and add no term.

Loss-side (flags come from the selected plugins' scores of each document):
- unlikelihood (Welleck et al. 2019, "Neural Text Generation with Unlikelihood Training";
  Korbak et al. 2023): flagged tokens (token spans and flagged sentences; whole documents only
  for a paradigm that scores nothing finer) are taken out of L_LM (weight ``1 - m_t``) and their
  probability is pushed down: ``-sum m_t log(1 - p_t)``. (Keeping them in L_LM would balance the
  two at p = 1/(1 + lambda), i.e. not lower a rare token at all.)
- rwr (reward-weighted regression, Peters & Schaal 2007; as a pretraining objective Korbak et
  al. 2023): reweight the LM loss by ``w = N * softmax(R / beta)`` over the N tokens (each token
  carries its document's reward; per-sample rewards work too); the term is ``sum (w - 1) * CE``
  so that ``L_LM + L_rwr`` is exactly the reward-weighted likelihood. RWR reweights only the
  tokens the other families leave in L_LM: combined with unlikelihood, masking or filtering it is
  computed over the kept tokens, and a token's total LM weight ``1 + sum_i lambda_i (w_i - 1)``
  is clipped at 0. (Reweighting a token that unlikelihood took out of L_LM would give its CE a
  negative weight: gradient ascent without bound on the flagged tokens.)
- filtering (Korbak et al. 2023; classifier filtering, O'Brien et al. 2025 "Deep Ignorance"):
  drop tokens of documents whose reward is below ``filter_threshold`` from L_LM.
- mask (token-level loss masking, Rathi & Radford 2026): flagged tokens (the same fine flags as
  unlikelihood) get LM weight 0 and nothing else.

Data-side (flags from the corpus annotated once, ``ufarsap_engine/annotate``, into ``OUT/annotations``):
- conditional (Korbak et al. 2023, "Pretraining Language Models with Human Preferences"): a
  single special control token before each document, ``<|misaligned|>`` when ANY selected plugin
  of the paradigm flags it at any scale (the strictest plugin, ``scoring.is_flagged`` with
  ``flag_threshold``), else ``<|aligned|>``; ``generate``/``evaluate`` then condition on
  ``<|aligned|>``.
- hidden (``<|hidden|>`` replacement, Rathi & Radford 2026): every token of a flagged span is
  replaced, input and label, by one ``<|hidden|>`` token, so the model learns to predict
  ``<|hidden|>`` where the content was.
- tags (harmfulness tags, Maini et al. 2025, "Safety Pretraining"): a ``<|harmful|>`` token
  before each flagged span; ``generate`` decodes tag-aware on such a checkpoint (steers away
  from tokens after which the model predicts the tag, never emits it).

Preference pairs: dpo (Rafailov et al. 2023): ``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))``.
"""

from __future__ import annotations

from typing import get_args

import torch
import torch.nn.functional as F

from ufarsap_engine.config import FamilyName

LOSS_FAMILIES = ("unlikelihood", "rwr", "filtering", "mask")
DATA_FAMILIES = ("conditional", "hidden", "tags")
#: Every value of ``ObjectiveConfig.families`` (``none``: the paradigm adds no term).
FAMILIES: tuple[str, ...] = get_args(FamilyName)  # the config schema's list: one place to add a family


def unlikelihood_sum(token_logprobs: torch.Tensor, flagged: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """``token_logprobs[b, s]`` = log p(label), ``flagged[b, s]`` severities in [0, 1]."""
    p = token_logprobs.exp().clamp(max=1.0 - 1e-6)
    return -(flagged * loss_mask * torch.log1p(-p)).sum()


def rwr_weights(reward: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Per-sample weights with mean 1: ``B * softmax(reward / beta)``."""
    return reward.numel() * torch.softmax(reward / beta, dim=0)


def rwr_token_weights(loss_mask: torch.Tensor, reward: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """``[b, s]`` reward-weighted-regression weights with mean 1 over the tokens ``loss_mask``
    keeps (0 elsewhere): ``reward`` per sample ``[b]`` (each sample's tokens share its weight) or
    per token ``[b, s]`` (weights normalised over the kept tokens)."""
    r = reward.detach()
    if r.dim() == 1:
        return rwr_weights(r, beta).unsqueeze(1).expand_as(loss_mask) * (loss_mask > 0)
    valid = loss_mask > 0
    logits = (r / beta).masked_fill(~valid, float("-inf")).reshape(-1)
    return torch.nan_to_num(valid.sum() * torch.softmax(logits, dim=0).reshape(r.shape))


def rwr_sum(per_token_ce: torch.Tensor, loss_mask: torch.Tensor, reward: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """``sum (w - 1) * CE`` with constant weights (:func:`rwr_token_weights`); ``loss_mask`` may
    be fractional (an LM token weight), then each token's term is scaled by it."""
    r = reward.detach()
    if r.dim() == 1:
        w = rwr_weights(r, beta)
        return ((w - 1.0) * (per_token_ce * loss_mask).sum(dim=1)).sum()
    w = rwr_token_weights(loss_mask, r, beta)
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
