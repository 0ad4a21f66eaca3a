"""Run as a script: random tiny Llama -> engine checkpoint -> logits vs HF -> export -> compare.

Prints one JSON line. Runs in its own process (Megatron + the CPU shims stay out of pytest)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(root: str, tied: bool) -> dict:
    import transformers

    from ufarsap_engine.trainer.checkpoint import checkpoint_model_config, load_model_weights
    from ufarsap_engine.trainer.generate import forward_logits
    from ufarsap_engine.trainer.hf_interop import export_hf, import_hf
    from ufarsap_engine.trainer.model import build_gpt
    from ufarsap_engine.trainer.model_config import ModelConfig, TrainConfig
    from ufarsap_engine.trainer.parallel import init_parallel, teardown_parallel
    from ufarsap_engine.trainer.worker import quiet_megatron_warnings

    quiet_megatron_warnings()
    root_p = Path(root)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=512, max_position_embeddings=64, tie_word_embeddings=tied,
    )
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(root_p / "hf")
    ckpt = import_hf(root_p / "hf", root_p / "engine_ckpt")
    tokens = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(tokens).logits

    mc = ModelConfig(**checkpoint_model_config(ckpt))
    info = init_parallel(mc, TrainConfig(global_batch_size=1, micro_batch_size=1))
    try:
        gpt, _ = build_gpt(mc, TrainConfig(), True, True)
        load_model_weights(gpt, ckpt)
        ours = forward_logits(gpt, tokens)
    finally:
        teardown_parallel(info)

    export_hf(ckpt, root_p / "exported")
    back = transformers.LlamaForCausalLM.from_pretrained(root_p / "exported").eval()
    a, b = hf.state_dict(), back.state_dict()
    with torch.no_grad():
        back_logits = back(tokens).logits
    return {
        "import_max_abs_diff": float((ours - ref).abs().max()),
        "logit_scale": float(ref.abs().max()),
        "export_same_keys": sorted(a) == sorted(b),
        "export_weights_equal": all(torch.equal(a[k], b[k]) for k in a),
        "export_max_abs_diff": float((back_logits - ref).abs().max()),
        "tie": mc.tie_embeddings,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2] == "tied")))
