"""Hugging Face Llama import/export: logits equal within 1e-5; export round-trips exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from trainer_helpers import run
from ufarsap_engine.errors import UserError
from ufarsap_engine.trainer.hf_interop import (
    hf_to_megatron_state,
    megatron_to_hf_state,
    model_config_from_hf,
)


def test_qkv_layout_is_grouped_per_key_value_head():
    cfg = model_config_from_hf({
        "model_type": "llama", "hidden_size": 8, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 16, "num_hidden_layers": 1, "vocab_size": 10, "max_position_embeddings": 16,
    })
    hd = 2
    q = torch.arange(4 * hd).float().repeat_interleave(8).reshape(8, 8)  # row i tagged by head
    k = 100 + torch.arange(2 * hd).float().repeat_interleave(8).reshape(4, 8)
    v = 200 + torch.arange(2 * hd).float().repeat_interleave(8).reshape(4, 8)
    p = "model.layers.0."
    hf = {"model.embed_tokens.weight": torch.zeros(10, 8), "model.norm.weight": torch.ones(8),
          "lm_head.weight": torch.zeros(10, 8), p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k,
          p + "self_attn.v_proj.weight": v, p + "self_attn.o_proj.weight": torch.zeros(8, 8),
          p + "input_layernorm.weight": torch.ones(8), p + "post_attention_layernorm.weight": torch.ones(8),
          p + "mlp.gate_proj.weight": torch.zeros(16, 8), p + "mlp.up_proj.weight": torch.ones(16, 8),
          p + "mlp.down_proj.weight": torch.zeros(8, 16)}
    meg = hf_to_megatron_state(hf, cfg)
    rows = meg["decoder.layers.0.self_attention.linear_qkv.weight"][:, 0].tolist()
    # group 0: q heads 0,1 ; k head 0 ; v head 0 | group 1: q heads 2,3 ; k head 1 ; v head 1
    assert rows == [0, 1, 2, 3, 100, 101, 200, 201, 4, 5, 6, 7, 102, 103, 202, 203]
    fc1 = meg["decoder.layers.0.mlp.linear_fc1.weight"]
    assert fc1.shape == (32, 8) and fc1[:16].sum() == 0 and fc1[16:].sum() == 16 * 8
    back = megatron_to_hf_state(meg, cfg)
    assert all(torch.equal(back[k2], hf[k2]) for k2 in hf)


def test_unsupported_hf_configs_are_user_errors():
    base = {"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 16,
            "num_hidden_layers": 1, "vocab_size": 10}
    for bad, text in [({"model_type": "gpt2"}, "model_type 'gpt2'"), ({"attention_bias": True}, "attention_bias"),
                      ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope scaling"),
                      ({"hidden_act": "gelu"}, "hidden_act")]:
        with pytest.raises(UserError, match=text):
            model_config_from_hf({**base, **bad})


@pytest.mark.slow
@pytest.mark.parametrize("tied", ["untied", "tied"])
def test_llama_import_logits_and_export_roundtrip(tmp_path, tied):
    p = subprocess.run([sys.executable, "-m", "trainer_helpers.hf_check", str(tmp_path), tied],
                       env=run.env(), capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["tie"] == (tied == "tied")
    assert res["import_max_abs_diff"] < 1e-5, res
    assert res["export_same_keys"] and res["export_weights_equal"], res
    assert res["export_max_abs_diff"] == 0.0, res
