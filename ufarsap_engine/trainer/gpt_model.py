"""The engine's ``GPTModel``: Megatron's, with a one-kernel cross-entropy when TP=1.

Megatron computes the per-token loss with ``vocab_parallel_cross_entropy``, which splits the
vocabulary over tensor-parallel ranks and so runs a dozen separate ops (max, all-reduce,
masking, gather, exp-sum, ...) over the full ``[s, b, V]`` logits, forward and backward. With
one tensor-parallel rank nothing is split, and ``torch.nn.functional.cross_entropy`` gives the
same per-token values in one fused kernel. At TP>1 Megatron's version is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel


class EngineGPTModel(GPTModel):
    """``GPTModel`` whose language-model loss uses ``F.cross_entropy`` at TP=1."""

    def compute_language_model_loss(self, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Per-token cross-entropy ``[b, s]`` from ``labels [b, s]`` and ``logits [s, b, V]``."""
        if self.config.tensor_model_parallel_size != 1 or self.config.cross_entropy_loss_fusion:
            return super().compute_language_model_loss(labels, logits)
        s, b, v = logits.shape
        # Same precision as Megatron's: the loss is computed in fp32 whatever the logits dtype.
        ce = F.cross_entropy(logits.float().view(s * b, v), labels.transpose(0, 1).reshape(s * b), reduction="none")
        return ce.view(s, b).transpose(0, 1).contiguous()
