"""Core attention through ``torch.nn.functional.scaled_dot_product_attention``.

Megatron's local ``DotProductAttention`` builds the full ``[b, heads, s, s]`` score matrix with
``baddbmm``, an explicit causal mask, softmax and ``bmm``: several large tensors and many small
ops per layer. PyTorch's SDPA does the same maths in one fused kernel on both CPU and CUDA
(flash / memory-efficient), so a step is faster and uses less memory. This module takes the
local spec's ``core_attention`` slot and keeps its interface: query/key/value ``[s, b, heads,
dim]`` (heads of this tensor-parallel partition) in, ``[s, b, hidden_per_partition]`` out.

It supports what the engine's models use (causal self-attention, grouped-query attention,
attention dropout, any TP/PP layout) and refuses anything else at build time, so a config it
cannot run exactly never trains silently on different maths.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.utils import divide


class SDPAAttention(MegatronModule):
    """Drop-in for Megatron's ``DotProductAttention`` (same constructor and forward signature)."""

    def __init__(
        self,
        config,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: Optional[float] = None,
        softmax_scale: Optional[float] = None,
        cp_comm_type: Optional[str] = None,
        pg_collection: Optional[ProcessGroupCollection] = None,
    ):
        super().__init__(config=config)
        unsupported = {
            "context parallelism": config.context_parallel_size != 1,
            "sliding-window attention": config.window_size is not None,
            f"softmax_type {config.softmax_type!r}": config.softmax_type != "vanilla",
        }
        bad = [name for name, on in unsupported.items() if on]
        if bad:
            raise ValueError(f"attention_backend 'sdpa' does not support {', '.join(bad)}; use 'local'")
        if attn_mask_type not in (AttnMaskType.causal, AttnMaskType.no_mask):
            raise ValueError(f"attention_backend 'sdpa' does not support attn_mask_type {attn_mask_type}; use 'local'")
        if pg_collection is None:
            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        tp = pg_collection.tp.size()
        self.attn_mask_type = attn_mask_type
        self.layer_number = max(1, layer_number)
        self.num_heads_per_partition = divide(config.num_attention_heads, tp)
        self.num_groups_per_partition = divide(config.num_query_groups, tp)
        self.hidden_size_per_partition = divide(config.kv_channels * config.num_attention_heads, tp)
        # Query-key layer scaling divides the scores by layer_number and multiplies them back
        # inside the softmax: the net scale is the plain one, which SDPA applies directly.
        head_dim = config.kv_channels
        self.softmax_scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Optional[Tensor],
        attn_mask_type: Optional[AttnMaskType] = None,
        attention_bias: Optional[Tensor] = None,
        packed_seq_params=None,
    ) -> Tensor:
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("attention_backend 'sdpa' does not support packed sequences or attention bias")
        mask_type = self.attn_mask_type if attn_mask_type is None else attn_mask_type
        sq, b = query.shape[0], query.shape[1]
        causal = mask_type == AttnMaskType.causal and attention_mask is None
        if causal and key.shape[0] != sq:
            raise ValueError("attention_backend 'sdpa' needs equal query and key lengths for causal attention")
        # Megatron masks are True where attention is NOT allowed; SDPA's bool masks the opposite.
        attn_mask = None if attention_mask is None else ~attention_mask
        rep = self.num_heads_per_partition // self.num_groups_per_partition
        # Cached decoding (one query against the cache) lets SDPA share kv heads itself; the
        # fused training kernels want equal head counts, so there the groups are expanded.
        gqa = rep > 1 and sq != key.shape[0]
        if rep > 1 and not gqa:  # grouped-query attention: every kv group serves `rep` consecutive query heads
            key = key.repeat_interleave(rep, dim=2)
            value = value.repeat_interleave(rep, dim=2)
        # [s, b, h, d] -> [b, h, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        dropout_p = self.dropout_p if self.training else 0.0
        if dropout_p > 0.0:
            from megatron.core import tensor_parallel

            rng = tensor_parallel.get_cuda_rng_tracker().fork()
        else:
            rng = contextlib.nullcontext()
        with rng:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=causal, scale=self.softmax_scale, enable_gqa=gqa
            )
        # [b, h, s, d] -> [s, b, h * d]
        return out.permute(2, 0, 1, 3).reshape(sq, b, self.hidden_size_per_partition)
