"""Hugging Face Llama-style checkpoints <-> engine (Megatron) checkpoints.

No converter installs on Python 3.11 without Transformer Engine, so the engine brings its own,
for the Llama family (RMSNorm, SwiGLU, RoPE, optional GQA, no biases). Conversion happens at
TP=1/PP=1 in one process; the result is a normal engine checkpoint, so ``dist_checkpointing``
reshards it to any TP/PP when it is loaded (``init_from``, generation).

Mapping (HF -> Megatron local spec)::

    model.embed_tokens                 -> embedding.word_embeddings
    layers.N.input_layernorm           -> decoder.layers.N.input_layernorm
    layers.N.post_attention_layernorm  -> decoder.layers.N.pre_mlp_layernorm
    layers.N.self_attn.{q,k,v}_proj    -> decoder.layers.N.self_attention.linear_qkv
        rows laid out per key/value group: [the group's query heads; its k head; its v head]
        (plain [q; k; v] concatenation gives wrong logits)
    layers.N.self_attn.o_proj          -> decoder.layers.N.self_attention.linear_proj
    layers.N.mlp.{gate,up}_proj        -> decoder.layers.N.mlp.linear_fc1 as [gate; up]
    layers.N.mlp.down_proj             -> decoder.layers.N.mlp.linear_fc2
    model.norm                         -> decoder.final_layernorm
    lm_head                            -> output_layer   (absent when embeddings are tied)

Reading an HF directory uses ``config.json`` and ``*.safetensors`` only (no pickle, no
``transformers`` import); exporting uses ``transformers`` to write a standard directory.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from ufarsap_engine.errors import UserError

from .model_config import ModelConfig, TrainConfig


# --------------------------------------------------------------------------------------------
# Config


def model_config_from_hf(hf_config: dict, seq_length: int | None = None) -> ModelConfig:
    """ModelConfig for a Llama-style ``config.json`` (raises UserError for unsupported ones)."""
    arch = hf_config.get("model_type")
    if arch not in ("llama", "mistral", "qwen2") and arch is not None:
        raise UserError(f"unsupported Hugging Face model_type '{arch}' (Llama-style models only)")
    if hf_config.get("hidden_act", "silu") != "silu":
        raise UserError(f"unsupported hidden_act '{hf_config.get('hidden_act')}' (needs silu)")
    if hf_config.get("attention_bias") or hf_config.get("mlp_bias"):
        raise UserError("Llama checkpoints with attention_bias/mlp_bias are not supported")
    rope = hf_config.get("rope_parameters") or {}
    scaling = hf_config.get("rope_scaling")
    if (scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default")) or rope.get(
        "rope_type", "default"
    ) != "default":
        raise UserError("Llama checkpoints with rope scaling are not supported")
    h, heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
    if hf_config.get("head_dim") not in (None, h // heads):
        raise UserError("Llama checkpoints with head_dim != hidden_size / num_attention_heads are not supported")
    theta = hf_config.get("rope_theta", rope.get("rope_theta", 10000.0))
    return ModelConfig(
        num_layers=hf_config["num_hidden_layers"],
        hidden_size=h,
        num_attention_heads=heads,
        num_query_groups=hf_config.get("num_key_value_heads") or heads,
        ffn_hidden_size=hf_config["intermediate_size"],
        vocab_size=hf_config["vocab_size"],
        seq_length=seq_length or min(hf_config.get("max_position_embeddings", 2048), 4096),
        position_embedding="rope",
        normalization="RMSNorm",
        swiglu=True,
        tie_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
        add_bias_linear=False,
        rotary_base=int(theta),
        layernorm_epsilon=float(hf_config.get("rms_norm_eps", 1e-6)),
        init_method_std=float(hf_config.get("initializer_range", 0.02)),
    )


def hf_config_from_model(cfg: ModelConfig, eos_token_id: int | None = None) -> dict:
    """Keyword arguments for ``transformers.LlamaConfig``."""
    if cfg.position_embedding != "rope" or cfg.normalization != "RMSNorm" or not cfg.swiglu or cfg.add_bias_linear:
        raise UserError("only Llama-style models (rope, RMSNorm, swiglu, no bias) can be exported to Hugging Face")
    kw = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.ffn_hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.query_groups,
        max_position_embeddings=cfg.seq_length,
        rms_norm_eps=cfg.layernorm_epsilon,
        tie_word_embeddings=cfg.tie_embeddings,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        initializer_range=cfg.init_method_std,
        rope_theta=float(cfg.rotary_base),
    )
    if eos_token_id is not None:
        kw.update(eos_token_id=eos_token_id, bos_token_id=eos_token_id)
    return kw


# --------------------------------------------------------------------------------------------
# State-dict mapping (pure tensor code, TP=1 full tensors)


def hf_to_megatron_state(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Full HF Llama state dict -> full Megatron ``GPTModel`` state dict (TP=1 names)."""
    hd, g = cfg.head_dim, cfg.query_groups
    qpg = cfg.num_attention_heads // g
    out: dict[str, torch.Tensor] = {"embedding.word_embeddings.weight": hf["model.embed_tokens.weight"]}
    for i in range(cfg.num_layers):
        p, m = f"model.layers.{i}.", f"decoder.layers.{i}."
        q = hf[p + "self_attn.q_proj.weight"].reshape(g, qpg * hd, -1)
        k = hf[p + "self_attn.k_proj.weight"].reshape(g, hd, -1)
        v = hf[p + "self_attn.v_proj.weight"].reshape(g, hd, -1)
        out[m + "self_attention.linear_qkv.weight"] = torch.cat([q, k, v], dim=1).reshape(-1, cfg.hidden_size)
        out[m + "self_attention.linear_proj.weight"] = hf[p + "self_attn.o_proj.weight"]
        out[m + "input_layernorm.weight"] = hf[p + "input_layernorm.weight"]
        out[m + "pre_mlp_layernorm.weight"] = hf[p + "post_attention_layernorm.weight"]
        out[m + "mlp.linear_fc1.weight"] = torch.cat(
            [hf[p + "mlp.gate_proj.weight"], hf[p + "mlp.up_proj.weight"]], dim=0
        )
        out[m + "mlp.linear_fc2.weight"] = hf[p + "mlp.down_proj.weight"]
    out["decoder.final_layernorm.weight"] = hf["model.norm.weight"]
    if not cfg.tie_embeddings:
        out["output_layer.weight"] = hf["lm_head.weight"]
    return out


def megatron_to_hf_state(meg: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Inverse of :func:`hf_to_megatron_state`."""
    hd, g = cfg.head_dim, cfg.query_groups
    qpg = cfg.num_attention_heads // g
    out = {"model.embed_tokens.weight": meg["embedding.word_embeddings.weight"]}
    for i in range(cfg.num_layers):
        p, m = f"model.layers.{i}.", f"decoder.layers.{i}."
        qkv = meg[m + "self_attention.linear_qkv.weight"].reshape(g, (qpg + 2) * hd, -1)
        out[p + "self_attn.q_proj.weight"] = qkv[:, : qpg * hd].reshape(-1, cfg.hidden_size)
        out[p + "self_attn.k_proj.weight"] = qkv[:, qpg * hd : (qpg + 1) * hd].reshape(-1, cfg.hidden_size)
        out[p + "self_attn.v_proj.weight"] = qkv[:, (qpg + 1) * hd :].reshape(-1, cfg.hidden_size)
        out[p + "self_attn.o_proj.weight"] = meg[m + "self_attention.linear_proj.weight"]
        out[p + "input_layernorm.weight"] = meg[m + "input_layernorm.weight"]
        out[p + "post_attention_layernorm.weight"] = meg[m + "pre_mlp_layernorm.weight"]
        gate, up = meg[m + "mlp.linear_fc1.weight"].chunk(2, dim=0)
        out[p + "mlp.gate_proj.weight"], out[p + "mlp.up_proj.weight"] = gate, up
        out[p + "mlp.down_proj.weight"] = meg[m + "mlp.linear_fc2.weight"]
    out["model.norm.weight"] = meg["decoder.final_layernorm.weight"]
    out["lm_head.weight"] = meg["embedding.word_embeddings.weight"] if cfg.tie_embeddings else meg["output_layer.weight"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def read_hf_dir(hf_dir: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """``config.json`` and all weights of an HF directory (safetensors only: no pickle)."""
    from safetensors.torch import load_file

    d = Path(hf_dir)
    if not (d / "config.json").exists():
        raise UserError(f"not a Hugging Face model directory (no config.json): {d}")
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise UserError(f"{d} has no *.safetensors weights (pickle .bin files are not read)")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(str(f)))
    return json.loads((d / "config.json").read_text()), weights


# --------------------------------------------------------------------------------------------
# Whole-checkpoint conversion (world size 1, in this process)


def _world1(model_cfg: ModelConfig, out_dir: Path):
    from .parallel import init_parallel

    return init_parallel(model_cfg, TrainConfig(out_dir=str(out_dir), global_batch_size=1, micro_batch_size=1, progress=False))


def import_hf(hf_dir: str | os.PathLike, out_ckpt: str | os.PathLike, seq_length: int | None = None) -> Path:
    """Convert an HF Llama directory into an engine checkpoint directory (weights only; use it
    with ``init_from`` or for generation, at any TP/PP). Returns the checkpoint path."""
    from megatron.core import dist_checkpointing

    from .checkpoint import ENGINE_STATE, FORMAT_VERSION, TOKENIZER, _in_process_results_queue, write_manifest
    from .model import build_gpt
    from .parallel import teardown_parallel

    hf_cfg, hf_sd = read_hf_dir(hf_dir)
    cfg = model_config_from_hf(hf_cfg, seq_length)
    out = Path(out_ckpt)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output checkpoint directory is not empty: {out}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info = None
    try:
        info = _world1(cfg, tmp)
        gpt, _ = build_gpt(cfg, TrainConfig(), True, True)
        meg = hf_to_megatron_state(hf_sd, cfg)
        own = {k: v for k, v in gpt.state_dict().items() if not k.endswith("_extra_state")}
        missing = sorted(set(own) - set(meg))
        if missing:
            raise UserError(f"{hf_dir}: cannot fill Megatron weight {missing[0]}")
        for k, v in meg.items():
            if own[k].shape != v.shape:
                raise UserError(f"{hf_dir}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
        gpt.load_state_dict(meg, strict=False)
        _in_process_results_queue()
        dist_checkpointing.save({"model": gpt.sharded_state_dict()}, str(tmp))
    finally:
        teardown_parallel(info)
    hf_tok = Path(hf_dir) / "tokenizer.json"
    if hf_tok.exists():
        shutil.copy(hf_tok, tmp / TOKENIZER)
        if (Path(hf_dir) / "tokenizer_config.json").exists():
            shutil.copy(Path(hf_dir) / "tokenizer_config.json", tmp / "tokenizer_config.json")
    engine = {
        "format": FORMAT_VERSION, "kind": "weights", "step": 0, "model_config": cfg.model_dump(),
        "source": {"huggingface": str(hf_dir)}, "extra_state": {},
    }
    (tmp / ENGINE_STATE).write_text(json.dumps(engine, indent=1))
    write_manifest(tmp)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def megatron_full_state(ckpt: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Load an engine checkpoint at TP=1/PP=1 and return its full weights (world size 1)."""
    from .checkpoint import checkpoint_model_config, load_model_weights, resolve_checkpoint, verify_checkpoint
    from .model import build_gpt
    from .parallel import teardown_parallel

    ck = verify_checkpoint(resolve_checkpoint(ckpt))
    cfg = ModelConfig(**checkpoint_model_config(ck))
    info = None
    try:
        info = _world1(cfg, ck)
        gpt, _ = build_gpt(cfg, TrainConfig(), True, True)
        load_model_weights(gpt, ck, verified=True)
        sd = {k: v.detach().clone() for k, v in gpt.state_dict().items() if not k.endswith("_extra_state")}
    finally:
        teardown_parallel(info)
    return cfg, sd


def export_hf(ckpt: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write an engine checkpoint as a Hugging Face ``LlamaForCausalLM`` directory
    (safetensors + config, and the tokenizer when the checkpoint has one)."""
    import transformers

    from .checkpoint import TOKENIZER, resolve_checkpoint

    cfg, meg = megatron_full_state(ckpt)
    ck = resolve_checkpoint(ckpt)
    eos = None
    tok_file = ck / TOKENIZER if (ck / TOKENIZER).exists() else ck.parent.parent / TOKENIZER
    if tok_file.exists():
        from .data import load_tokenizer

        try:
            eos = load_tokenizer(tok_file).eos_id
        except UserError:
            eos = None
    hf_cfg = transformers.LlamaConfig(**hf_config_from_model(cfg, eos))
    model = transformers.LlamaForCausalLM(hf_cfg)
    sd = megatron_to_hf_state(meg, cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k and not (cfg.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"HF export mapping mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    if tok_file.exists():
        shutil.copy(tok_file, out / "tokenizer.json")
        tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast"}
        if eos is not None:
            from tokenizers import Tokenizer

            name = Tokenizer.from_file(str(tok_file)).id_to_token(eos)
            tok_cfg.update(eos_token=name, bos_token=name)
        (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1))
    return out
