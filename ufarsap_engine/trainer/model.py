"""Build the Megatron model for this pipeline stage, its DDP wrapper, optimizer and LR schedule.

Everything here is plain Megatron-Core: ``GPTModel`` (with a fused cross-entropy at TP=1, see
:mod:`.gpt_model`) with the local (no Transformer Engine) layer spec, whose core attention runs
through PyTorch's SDPA by default (:mod:`.sdpa_attention`), Megatron
``DistributedDataParallel`` and ``get_megatron_optimizer``. A plain
``torch.optim`` optimizer must NOT be used on the DDP-wrapped model: Megatron DDP moves
gradients into ``param.main_grad`` and leaves ``param.grad`` as None, so a torch optimizer
silently never updates the weights. The LR schedule is Megatron's ``OptimizerParamScheduler``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model_config import ModelConfig, TrainConfig


def transformer_config(model_cfg: ModelConfig, train_cfg: TrainConfig):
    """The Megatron ``TransformerConfig`` for a model/run pair.

    Fusions are off (they need CUDA kernels), ``calculate_per_token_loss`` is on (the loss plug
    point returns sums + token counts, and Megatron divides by the global token count), and
    weights are initialised on the CPU so that TP=1 and TP=2 build identical weights from one
    seed."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    dtype = torch.bfloat16 if train_cfg.bf16 else torch.float32
    return TransformerConfig(
        num_layers=model_cfg.num_layers,
        hidden_size=model_cfg.hidden_size,
        num_attention_heads=model_cfg.num_attention_heads,
        num_query_groups=model_cfg.query_groups,
        ffn_hidden_size=model_cfg.ffn_hidden_size,
        kv_channels=model_cfg.head_dim,
        normalization=model_cfg.normalization,
        layernorm_epsilon=model_cfg.layernorm_epsilon,
        gated_linear_unit=model_cfg.swiglu,
        activation_func=F.silu if model_cfg.swiglu else F.gelu,
        add_bias_linear=model_cfg.add_bias_linear,
        add_qkv_bias=model_cfg.add_bias_linear,
        hidden_dropout=model_cfg.hidden_dropout,
        attention_dropout=model_cfg.attention_dropout,
        init_method_std=model_cfg.init_method_std,
        tensor_model_parallel_size=train_cfg.tp,
        pipeline_model_parallel_size=train_cfg.pp,
        pipeline_dtype=dtype,
        params_dtype=dtype,
        bf16=train_cfg.bf16,
        use_cpu_initialization=True,
        calculate_per_token_loss=True,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        batch_p2p_sync=train_cfg.device == "cuda",
        deallocate_pipeline_outputs=train_cfg.device == "cuda",
        sequence_parallel=False,
    )


@dataclass
class BuiltModel:
    """The DDP-wrapped model chunk of this rank, plus what the loop needs next to it."""

    ddp: torch.nn.Module  # megatron DistributedDataParallel
    gpt: torch.nn.Module  # the unwrapped GPTModel (this pipeline stage)
    config: object  # TransformerConfig


def layer_spec(model_cfg: ModelConfig):
    """Megatron's local layer spec, its core attention swapped for SDPA unless 'local' is chosen."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    spec = get_gpt_layer_local_spec(normalization=model_cfg.normalization)
    if model_cfg.attention_backend == "sdpa":
        from .sdpa_attention import SDPAAttention

        spec = copy.deepcopy(spec)
        spec.submodules.self_attention.submodules.core_attention = SDPAAttention
    return spec


def build_gpt(model_cfg: ModelConfig, train_cfg: TrainConfig, pre_process: bool, post_process: bool):
    """Build the unwrapped ``GPTModel`` for one pipeline stage (no DDP)."""
    from .gpt_model import EngineGPTModel

    cfg = transformer_config(model_cfg, train_cfg)
    model = EngineGPTModel(
        config=cfg,
        transformer_layer_spec=layer_spec(model_cfg),
        vocab_size=model_cfg.vocab_size,
        max_sequence_length=model_cfg.seq_length,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=model_cfg.tie_embeddings,
        position_embedding_type=model_cfg.position_embedding,
        rotary_base=model_cfg.rotary_base,
        parallel_output=True,
    )
    if train_cfg.device == "cuda":
        model = model.cuda(torch.cuda.current_device())
    return model, cfg


def build_model(model_cfg: ModelConfig, train_cfg: TrainConfig) -> BuiltModel:
    """``GPTModel`` for this rank's pipeline stage, wrapped in Megatron DDP."""
    from megatron.core import parallel_state as ps
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    gpt, cfg = build_gpt(
        model_cfg,
        train_cfg,
        pre_process=ps.is_pipeline_first_stage(),
        post_process=ps.is_pipeline_last_stage(),
    )
    ddp_cfg = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=False,
        check_for_nan_in_grad=False,
    )
    ddp = DistributedDataParallel(config=cfg, ddp_config=ddp_cfg, module=gpt)
    return BuiltModel(ddp=ddp, gpt=gpt, config=cfg)


def build_optimizer(built: BuiltModel, train_cfg: TrainConfig):
    """Megatron's Adam (``get_megatron_optimizer``), wired into the model config.

    ``grad_scale_func`` and ``finalize_model_grads_func`` are set here, once: the schedule calls
    them, and finalizing grads a second time by hand would silently change the grad norm."""
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    opt_cfg = OptimizerConfig(
        optimizer="adam",
        lr=train_cfg.lr,
        min_lr=train_cfg.min_lr,
        weight_decay=train_cfg.weight_decay,
        adam_beta1=train_cfg.adam_beta1,
        adam_beta2=train_cfg.adam_beta2,
        adam_eps=train_cfg.adam_eps,
        clip_grad=train_cfg.clip_grad,
        bf16=train_cfg.bf16,
        params_dtype=torch.bfloat16 if train_cfg.bf16 else torch.float32,
        use_distributed_optimizer=False,
    )
    optimizer = get_megatron_optimizer(opt_cfg, [built.ddp])
    built.config.grad_scale_func = optimizer.scale_loss
    built.config.finalize_model_grads_func = finalize_model_grads
    return optimizer


def build_scheduler(optimizer, train_cfg: TrainConfig):
    """Megatron's ``OptimizerParamScheduler``: linear warmup then cosine/linear/constant decay.

    The loop calls ``scheduler.step(1)`` *before* each optimizer step, so update k (1-based)
    uses lr(k): warmup starts at lr/warmup (not at 0) and the last step reaches min_lr."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    decay_steps = max(train_cfg.steps, train_cfg.warmup_steps + 1, 1)
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=train_cfg.lr,
        min_lr=train_cfg.min_lr if train_cfg.lr_schedule != "constant" else train_cfg.lr,
        lr_warmup_steps=train_cfg.warmup_steps,
        lr_decay_steps=decay_steps,
        lr_decay_style=train_cfg.lr_schedule,
        start_wd=train_cfg.weight_decay,
        end_wd=train_cfg.weight_decay,
        wd_incr_steps=decay_steps,
        wd_incr_style="constant",
        # On resume the step count comes from the checkpoint but the shape of the schedule from
        # this run's config, so extending --steps stretches the decay instead of staying at min_lr.
        override_opt_param_scheduler=True,
        use_checkpoint_opt_param_scheduler=False,
    )


def current_lr(optimizer) -> float:
    for group in optimizer.param_groups:
        return float(group["lr"])
    return 0.0


@torch.no_grad()
def param_checksum(module: torch.nn.Module) -> float:
    """Sum of |w| over this rank's parameters (cheap 'did the weights change' probe)."""
    return float(sum(p.detach().float().abs().sum() for p in module.parameters()))
