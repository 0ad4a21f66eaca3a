"""Run as a script: the SDPA core attention next to Megatron's local DotProductAttention.

Same random query/key/value (and output grad) through both, for plain multi-head and grouped-query
shapes; prints one JSON line with the largest output and input-gradient differences. Runs in its
own process (Megatron + the CPU shims stay out of pytest)."""

from __future__ import annotations

import json

import torch


def compare(heads: int, groups: int, s: int = 24, b: int = 3, d: int = 16) -> dict:
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    from ufarsap_engine.trainer.model import transformer_config
    from ufarsap_engine.trainer.model_config import ModelConfig, TrainConfig
    from ufarsap_engine.trainer.sdpa_attention import SDPAAttention

    mc = ModelConfig(num_layers=1, hidden_size=heads * d, num_attention_heads=heads, num_query_groups=groups,
                     ffn_hidden_size=32, vocab_size=64, seq_length=s)
    cfg = transformer_config(mc, TrainConfig())
    g = torch.Generator().manual_seed(heads * 10 + groups)
    q = torch.randn(s, b, heads, d, generator=g)
    k = torch.randn(s, b, groups, d, generator=g)
    v = torch.randn(s, b, groups, d, generator=g)
    dout = torch.randn(s, b, heads * d, generator=g)
    res = {}
    for name, cls in (("local", DotProductAttention), ("sdpa", SDPAAttention)):
        attn = cls(cfg, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self")
        ins = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = attn(*ins, attention_mask=None)
        out.backward(dout)
        res[name] = (out.detach(), [t.grad for t in ins])
    (o1, g1), (o2, g2) = res["local"], res["sdpa"]
    return {
        "shape_equal": o1.shape == o2.shape,
        "out_max_abs_diff": float((o1 - o2).abs().max()),
        "grad_max_abs_diff": max(float((a - c).abs().max()) for a, c in zip(g1, g2)),
    }


def main() -> dict:
    from ufarsap_engine.trainer.model_config import ModelConfig, TrainConfig
    from ufarsap_engine.trainer.parallel import init_parallel, teardown_parallel
    from ufarsap_engine.trainer.worker import quiet_megatron_warnings

    quiet_megatron_warnings()
    mc = ModelConfig(num_layers=1, hidden_size=64, num_attention_heads=4, ffn_hidden_size=32, vocab_size=64, seq_length=8)
    info = init_parallel(mc, TrainConfig(global_batch_size=1, micro_batch_size=1))
    try:
        return {"mha": compare(4, 4), "gqa": compare(8, 2), "mqa": compare(4, 1)}
    finally:
        teardown_parallel(info)


if __name__ == "__main__":
    print(json.dumps(main()))
