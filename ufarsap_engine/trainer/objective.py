"""The loss plug point: how the engine's alignment objectives enter Megatron's training step.

Megatron runs with ``calculate_per_token_loss=True``: the loss function of each microbatch
returns ``(loss_sum, num_tokens, metrics)``; Megatron back-propagates ``loss_sum`` and, once the
whole global batch is done, divides every gradient by the total ``num_tokens`` over all
microbatches and data-parallel ranks. So an :class:`Objective` returns *sums*: a term that should
be a per-sample mean (DPO, say) can be scaled by ``num_tokens / num_samples`` to keep its weight
independent of the token count.

Call order per microbatch, on every rank:

1. ``prepare(batch)`` before the forward pass (every pipeline stage calls it: this is where the
   engine scores text and turns flagged spans into per-token weights, see
   :meth:`~ufarsap_engine.trainer.data.Batch.span_weights`). Work here must be deterministic
   across ranks: tensor-parallel ranks of one stage must compute the same weights.
2. the Megatron forward pass (per-token cross-entropy ``[b, s]``, correct under TP);
3. ``loss(per_token_ce, loss_mask, prepared, outputs)`` on the last pipeline stage only.

Metrics: every value of the returned ``metrics`` dict must be a scalar tensor. The loop clones
them (the schedule scales the loss in place, so a metric aliasing it would be silently scaled),
averages each one over microbatches and data-parallel ranks, and writes it under its own name to
``metrics.jsonl``. Metrics are logged only; the loop never hands them back to the objective.

State across steps: ``loss`` may return a fourth value, ``stats`` (scalar tensors: what the
objective needs to remember from this step, e.g. the step's mean plugin scores). The loop reduces
them like metrics and, after the optimizer step, calls ``end_step(step, stats)`` on every rank
with the same values. That call is the one path from a step to the next step's loss.

Extra trainable modules (e.g. the orchestrator's weights): return them from
``extra_modules()`` as ``[(module, lr), ...]``. They are trained by a separate ``torch.optim.AdamW``
per module (plain ``.grad``, not Megatron DDP): after the backward pass the loop sums their
gradients over data-parallel and pipeline ranks, divides by the global token count (the same
normalisation as the model), and steps them. They must be identical on every rank at start (build
them from a fixed seed), and only the last pipeline stage's ``loss`` should use them. Their
weights and optimizer state are saved in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .data import Batch


@dataclass
class ModelOutputs:
    """What the last pipeline stage knows after the forward pass of one microbatch."""

    token_logprobs: torch.Tensor  # [b, s] log p(label_t | prefix) = -per_token_ce
    batch: Batch


@runtime_checkable
class Objective(Protocol):
    """Protocol for training objectives (see the module docstring for the contract)."""

    def prepare(self, batch: Batch) -> dict[str, torch.Tensor]: ...

    def loss(
        self,
        per_token_ce: torch.Tensor,
        loss_mask: torch.Tensor,
        prepared: dict[str, torch.Tensor],
        outputs: ModelOutputs,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]: ...
    # optional: loss(...) -> (loss_sum, num_tokens, metrics, stats) with end_step(step, stats)


class MLEObjective:
    """Plain language-model pretraining: sum of masked token cross-entropies."""

    name = "mle"

    def prepare(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {}

    def loss(self, per_token_ce, loss_mask, prepared, outputs):
        mask = loss_mask.float()
        loss_sum = (per_token_ce.float() * mask).sum()
        num_tokens = mask.sum().to(torch.int)
        return loss_sum, num_tokens, {}

    def extra_modules(self) -> list[tuple[torch.nn.Module, float]]:
        return []


def extra_modules_of(objective) -> list[tuple[torch.nn.Module, float]]:
    """The objective's extra trainable modules (empty if it declares none)."""
    fn = getattr(objective, "extra_modules", None)
    return list(fn()) if fn is not None else []
