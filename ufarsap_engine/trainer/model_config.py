"""Typed configuration of the model and of a training run, with presets and layout checks.

Both are pydantic models so that the CLI, the torchrun spec file (JSON) and tests share one
validated schema. :func:`validate_layout` turns every impossible parallel layout into one
readable :class:`~ufarsap_engine.errors.UserError` line *before* any process group exists, so a
bad ``--tp``/``--pp`` never turns into a hang or a Megatron assertion deep inside a rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ufarsap_engine.errors import UserError


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Cfg):
    """Architecture of the Megatron ``GPTModel`` (decoder-only transformer)."""

    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_query_groups: int | None = Field(default=None, description="None = plain multi-head")
    ffn_hidden_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    seq_length: int = Field(gt=1)
    position_embedding: Literal["rope", "learned_absolute"] = "rope"
    normalization: Literal["LayerNorm", "RMSNorm"] = "RMSNorm"
    swiglu: bool = True
    tie_embeddings: bool = False
    add_bias_linear: bool = False
    rotary_base: int = 10000
    layernorm_epsilon: float = 1e-5
    init_method_std: float = 0.02
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    attention_backend: Literal["sdpa", "local"] = Field(
        default="sdpa",
        description="core attention: 'sdpa' (PyTorch's fused scaled_dot_product_attention) or 'local' "
        "(Megatron's unfused DotProductAttention); same maths and weights, so it may change on resume",
    )

    @model_validator(mode="after")
    def _shapes(self) -> "ModelConfig":
        g = self.query_groups
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % g:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not divisible by "
                f"num_query_groups {g}"
            )
        return self

    @property
    def query_groups(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def num_parameters(self) -> int:
        """Parameter count (used for MFU and the summary)."""
        h, f, v, L = self.hidden_size, self.ffn_hidden_size, self.vocab_size, self.num_layers
        kv = self.query_groups * self.head_dim
        attn = h * (h + 2 * kv) + h * h
        mlp = (3 if self.swiglu else 2) * h * f
        norms = 2 * h
        emb = v * h * (1 if self.tie_embeddings else 2)
        pos = self.seq_length * h if self.position_embedding == "learned_absolute" else 0
        return L * (attn + mlp + norms) + emb + pos + h


#: ModelConfig fields that choose how the model is computed, not what it is: the weights and
#: the maths are the same whatever their value, so a checkpoint resumes across them.
EXECUTION_FIELDS: frozenset[str] = frozenset({"attention_backend"})


#: Named model sizes. ``tiny`` trains the embedded corpus in a couple of minutes on 2 CPU cores;
#: ``small`` is a larger CPU smoke size; ``125m`` and ``1b`` are GPU sizes (Llama-style).
PRESETS: dict[str, dict] = {
    "tiny": dict(
        num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2,
        ffn_hidden_size=176, vocab_size=1024, seq_length=128,
    ),
    "small": dict(
        num_layers=4, hidden_size=256, num_attention_heads=8, num_query_groups=4,
        ffn_hidden_size=688, vocab_size=8192, seq_length=256,
    ),
    "125m": dict(
        num_layers=12, hidden_size=768, num_attention_heads=12, num_query_groups=12,
        ffn_hidden_size=2048, vocab_size=32768, seq_length=2048,
    ),
    "1b": dict(
        num_layers=16, hidden_size=2048, num_attention_heads=32, num_query_groups=8,
        ffn_hidden_size=8192, vocab_size=32768, seq_length=2048, rotary_base=500000,
    ),
}


def model_preset(name: str, **overrides) -> ModelConfig:
    """Return the named preset, with field overrides (e.g. ``seq_length=64``)."""
    if name not in PRESETS:
        raise UserError(f"unknown model preset '{name}'; choose one of {', '.join(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


class TrainConfig(_Cfg):
    """One training run: schedule, batch, parallel layout, device, output."""

    steps: int = Field(default=100, ge=0)
    micro_batch_size: int = Field(default=4, gt=0)
    global_batch_size: int = Field(default=8, gt=0)
    lr: float = Field(default=3e-3, ge=0)
    min_lr: float = Field(default=3e-4, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(default=0.01, ge=0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: float = Field(default=1.0, ge=0, description="0 disables clipping")
    seed: int = 1234
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    device: Literal["cpu", "cuda"] = "cpu"
    bf16: bool = False
    save_interval: int = Field(default=0, ge=0, description="checkpoint every N steps; 0 = off")
    save_interval_s: float = Field(default=600, ge=0, description="also checkpoint once this many seconds have "
                                   "passed since the last one (a crash loses minutes, not the run); 0 = off")
    save_final: bool = True
    keep_last: int = Field(default=2, ge=1, description="completed checkpoints kept on disk")
    log_interval: int = Field(default=10, gt=0)
    out_dir: str = "runs/default"
    resume: bool = Field(default=True, description="continue from OUT/checkpoints/latest")
    init_from: str | None = Field(
        default=None, description="checkpoint dir to take model weights from (step restarts at 0)"
    )
    dist_timeout_s: int = Field(default=600, gt=0, description="collective timeout (no hangs)")
    progress: bool = True
    log_param_norm: bool = Field(default=False, description="add 'param_norm' to every step's metrics")

    @model_validator(mode="after")
    def _checks(self) -> "TrainConfig":
        if self.bf16 and self.device != "cuda":
            raise ValueError("bf16 needs device='cuda' (on the CPU the engine trains in fp32)")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} is larger than lr {self.lr}")
        return self

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir)


def data_parallel_size(train: TrainConfig, world_size: int) -> int:
    return world_size // (train.tp * train.pp)


def num_microbatches(train: TrainConfig, world_size: int) -> int:
    """Microbatches per rank per step = global batch / (micro batch * data-parallel size)."""
    return train.global_batch_size // (train.micro_batch_size * data_parallel_size(train, world_size))


def validate_layout(model: ModelConfig, train: TrainConfig, world_size: int, check_batch: bool = True) -> None:
    """Raise a one-line UserError for a parallel layout that cannot work. No side effects."""
    tp, pp = train.tp, train.pp
    if model.num_attention_heads % tp:
        raise UserError(
            f"--tp {tp} does not divide the model's {model.num_attention_heads} attention heads"
        )
    if model.query_groups % tp:
        raise UserError(f"--tp {tp} does not divide the model's {model.query_groups} query groups")
    if model.vocab_size % tp:
        raise UserError(f"--tp {tp} does not divide the model's vocab_size {model.vocab_size}")
    if model.ffn_hidden_size % tp:
        raise UserError(f"--tp {tp} does not divide ffn_hidden_size {model.ffn_hidden_size}")
    if model.num_layers % pp:
        raise UserError(f"--pp {pp} does not divide the model's {model.num_layers} layers")
    if world_size % (tp * pp):
        raise UserError(
            f"tp*pp = {tp}*{pp} = {tp * pp} does not divide the world size {world_size} "
            f"(processes launched)"
        )
    if not check_batch:
        return
    dp = world_size // (tp * pp)
    per_step = train.micro_batch_size * dp
    if train.global_batch_size % per_step:
        raise UserError(
            f"global_batch_size {train.global_batch_size} is not a multiple of "
            f"micro_batch_size*data_parallel = {train.micro_batch_size}*{dp} = {per_step}"
        )
