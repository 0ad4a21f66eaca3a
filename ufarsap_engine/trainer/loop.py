"""THE training loop. Start reading here.

One optimizer step (:func:`train_step`):

1. ``StepBatches.next_step()`` gives this data-parallel rank its microbatches of the global batch.
2. Megatron's ``get_forward_backward_func()`` runs forward + backward over the microbatches
   (no pipelining at PP=1, 1F1B at PP>1). Our ``forward_step`` calls ``objective.prepare`` and the
   ``GPTModel`` (which returns per-token cross-entropy when given labels); our loss function calls
   ``objective.loss`` on the last stage and returns ``(loss_sum, num_tokens, metrics)``. The
   schedule finalizes grads once (DP all-reduce, tied-embedding sync, divide by the global token
   count, see ``model.build_optimizer``).
3. Metrics and the objective's state statistics are reduced: sums over microbatches and DP
   ranks, then broadcast from the last pipeline stage, so *every rank* holds identical values
   (callbacks see the same metrics everywhere and stay in lock-step).
4. The objective's extra modules get their grads reduced the same way and are stepped.
5. ``scheduler.step(1)`` then ``optimizer.step()`` (Megatron clips grads and returns the norm).
6. ``objective.end_step(step, stats)`` hands the objective the step's reduced state statistics
   (the only way the next step's loss learns from this one). Metrics are only logged: nothing
   that shapes a loss is read back out of them.

:func:`run_training` repeats that, appends one JSON object per step to ``OUT/metrics.jsonl``
(rank 0), shows progress, calls callbacks, saves checkpoints, writes ``OUT/summary.json``.

Callbacks are objects with any of ``on_train_start(state)``, ``on_step_end(step, metrics)``
(return ``"stop"`` to end training after this step), ``on_train_end(summary)``,
``state_dict()``/``load_state_dict(d)`` (JSON-serialisable; saved in checkpoints as
``extra_state``), or plain callables ``f(step, metrics)``. They run on every rank, with the same
arguments.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from . import interrupt
from .cpu_compat import suspended
from .data import Batch, StepBatches
from .finite import check_step, check_weights
from .model import BuiltModel, current_lr
from .model_config import ModelConfig, TrainConfig
from .objective import ModelOutputs
from .parallel import ParallelInfo

_RESERVED = ("_loss_sum", "_num_tokens", "_lm_sum", "_lm_tokens")
_STAT = "stat:"  # report-key prefix of the objective's state statistics (kept apart from metrics)


@dataclass
class TrainState:
    """Everything one rank needs to train; saved/restored by ``checkpoint.py``."""

    model_cfg: ModelConfig
    train_cfg: TrainConfig
    info: ParallelInfo
    built: BuiltModel
    optimizer: Any
    scheduler: Any
    data: StepBatches
    objective: Any
    extra_modules: list = field(default_factory=list)  # [(module, lr)]
    extra_optimizers: list = field(default_factory=list)
    callbacks: list = field(default_factory=list)
    policy_phase: Any = None  # the on-policy phase (alignment/onpolicy.py), or None
    step: int = 0


# --------------------------------------------------------------------------------------------
# One step


def _loss_func(objective, mb: Batch, prepared: dict, output_tensor: torch.Tensor):
    """Megatron loss function (last stage): objective loss + this microbatch's metrics.

    The metrics travel as ONE detached vector (the reserved sums first, then the objective's
    metrics in ``names`` order): a handful of tensor ops per microbatch, whatever the number of
    metrics, which on CPU is most of what reporting them costs."""
    ce = output_tensor.float()
    mask = mb.loss_mask.float()
    with suspended():  # the objective's many small ops need no CUDA shim; on CPU it would double their cost
        loss_sum, num_tokens, metrics, *rest = objective.loss(
            ce, mask, prepared, ModelOutputs(token_logprobs=-ce, batch=mb)
        )
    stats = rest[0] if rest else {}
    clash = [k for k in (metrics or {}) if k in _RESERVED or k.startswith(_STAT)]
    if clash:
        raise ValueError(f"objective metric name {clash[0]!r} is reserved")
    metrics = {**(metrics or {}), **{_STAT + k: v for k, v in (stats or {}).items()}}
    tensors = {k: v for k, v in metrics.items() if isinstance(v, torch.Tensor)}
    floats = {k: float(v) for k, v in metrics.items() if not isinstance(v, torch.Tensor)}
    parts = [loss_sum.detach().float().reshape(1), num_tokens.detach().float().reshape(1),
             (ce.detach() * mask).sum().reshape(1), mask.sum().reshape(1)]
    if tensors:
        parts.append(torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).to(ce.device))
    if floats:
        parts.append(torch.tensor(list(floats.values()), dtype=torch.float32, device=ce.device))
    # .clone() via cat: the schedule divides the returned loss in place; a metric that shared its
    # storage would be silently scaled.
    report = {"vector": torch.cat(parts), "names": (*_RESERVED, *tensors, *floats)}
    return loss_sum, num_tokens.to(torch.int).reshape(()), report


def _row_weighted_loss_func(mb: Batch, output_tensor: torch.Tensor):
    """Loss of the on-policy phase's preference rows: each row's weight x its token
    cross-entropy sum. They add no tokens to the step's count and report nothing (the phase
    logs its own metrics), so the step's ``loss`` and ``lm_loss`` stay those of the data."""
    ce = output_tensor.float()
    loss_sum = (ce * mb.loss_mask.float() * mb.row_weight.float().unsqueeze(1)).sum()
    zero = torch.zeros(len(_RESERVED), dtype=torch.float32, device=ce.device)
    return loss_sum, torch.zeros((), dtype=torch.int, device=ce.device), {"vector": zero, "names": _RESERVED}


def _forward_step(state: TrainState, data_iterator, model):
    mb: Batch = next(data_iterator).to(state.info.device)
    if mb.row_weight is not None:
        output = model(mb.tokens, mb.position_ids, None, labels=mb.labels)
        return output, partial(_row_weighted_loss_func, mb)
    with suspended():
        prepared = state.objective.prepare(mb)
    output = model(mb.tokens, mb.position_ids, None, labels=mb.labels)
    return output, partial(_loss_func, state.objective, mb, prepared)


def _reduce_metrics(state: TrainState, store: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """Sum/mean per-microbatch reports over microbatches and DP ranks, then broadcast from the
    last pipeline stage so that all ranks return the same ``(metrics, stats)``."""
    from megatron.core import parallel_state as ps

    out: dict[str, float] | None = None
    if state.info.is_last_stage:
        # Each metric is the mean over the microbatches that report it (counts kept per name), so
        # one that only some microbatches have (e.g. a plugin's score where it scored something)
        # is not diluted by the others.
        rows = [(d["names"], d["vector"].double().cpu().tolist()) for d in store]
        names = sorted({k for n, _ in rows for k in n if k not in _RESERVED})
        if state.info.dp > 1:  # the same names, in the same order, on every data-parallel rank
            boxes: list = [None] * state.info.dp
            dist.all_gather_object(boxes, names, group=ps.get_data_parallel_group())
            names = sorted(set().union(*boxes))
        r, n = len(_RESERVED), len(names)
        slot = {k: i for i, k in enumerate(names)}
        vec = [0.0] * (r + 2 * n)
        for row_names, values in rows:
            for k, v in zip(row_names, values):
                if k in _RESERVED:
                    vec[_RESERVED.index(k)] += v
                else:
                    vec[r + slot[k]] += v
                    vec[r + n + slot[k]] += 1.0
        vec = torch.tensor(vec, dtype=torch.float64)
        if state.info.dp > 1:
            dev_vec = vec.to(state.info.device)
            dist.all_reduce(dev_vec, group=ps.get_data_parallel_group())
            vec = dev_vec.cpu()
        vec = vec.tolist()
        loss_sum, ntok, lm_sum, lm_tok = vec[:r]
        out = {
            "loss": loss_sum / max(ntok, 1.0),
            "lm_loss": lm_sum / max(lm_tok, 1.0),
            "loss_tokens": ntok,
        }
        for j, k in enumerate(names):
            out[k] = vec[r + j] / max(vec[r + n + j], 1.0)
    if state.info.pp > 1:
        box = [out]
        dist.broadcast_object_list(
            box, src=ps.get_pipeline_model_parallel_last_rank(), group=ps.get_pipeline_model_parallel_group()
        )
        out = box[0]
    metrics = {k: v for k, v in out.items() if not k.startswith(_STAT)}
    stats = {k[len(_STAT):]: v for k, v in out.items() if k.startswith(_STAT)}
    return metrics, stats


def _step_extra_modules(state: TrainState, total_tokens: float) -> None:
    """Reduce the objective's extra-module grads (sum over DP and PP, / global tokens), step."""
    if not state.extra_modules:
        return
    from megatron.core import parallel_state as ps

    params = [p for m, _ in state.extra_modules for p in m.parameters() if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    if state.info.dp > 1:
        dist.all_reduce(flat, group=ps.get_data_parallel_group())
    if state.info.pp > 1:
        dist.all_reduce(flat, group=ps.get_pipeline_model_parallel_group())
    flat /= max(total_tokens, 1.0)
    off = 0
    for p in params:
        n = p.numel()
        p.grad = flat[off : off + n].view_as(p).clone()
        off += n
    for opt in state.extra_optimizers:
        opt.step()


@torch.no_grad()
def param_norm(state: TrainState) -> float:
    """L2 norm of all model weights (TP-duplicated weights counted once), same on every rank."""
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import param_is_not_tensor_parallel_duplicate

    sq = torch.zeros(1, dtype=torch.float64, device=state.info.device)
    for p in state.built.gpt.parameters():
        if param_is_not_tensor_parallel_duplicate(p) or state.info.tp_rank == 0:
            sq += p.detach().double().pow(2).sum()
    dist.all_reduce(sq, group=ps.get_model_parallel_group())
    return float(sq.sqrt())


def train_step(state: TrainState) -> dict[str, float]:
    """One optimizer step over one global batch. Returns the step's metrics (all ranks)."""
    from megatron.core.pipeline_parallel.schedules import get_forward_backward_func

    t0 = time.perf_counter()
    microbatches = state.data.next_step()
    extra, phase_metrics = [], {}
    if state.policy_phase is not None:  # samples, judges and pairs before the step's update
        extra, phase_metrics = state.policy_phase.before_step(state, microbatches)
    ddp = state.built.ddp
    ddp.zero_grad_buffer()
    state.optimizer.zero_grad()
    for m, _ in state.extra_modules:
        m.zero_grad(set_to_none=True)

    fwd_bwd = get_forward_backward_func()
    store = fwd_bwd(
        forward_step_func=partial(_forward_step, state),
        data_iterator=iter(microbatches + extra),
        model=[ddp],
        num_microbatches=len(microbatches) + len(extra),
        seq_length=state.model_cfg.seq_length,
        micro_batch_size=state.train_cfg.micro_batch_size,
        forward_only=False,
    )
    metrics, stats = _reduce_metrics(state, store)
    metrics.update(phase_metrics)
    with suspended():  # the objective's own small modules and bookkeeping: plain PyTorch
        step_metrics = getattr(state.objective, "step_metrics", None)
        if callable(step_metrics):  # values the same on every rank and microbatch: logged once, not reduced
            metrics.update(step_metrics())
        _step_extra_modules(state, metrics["loss_tokens"])

    state.scheduler.step(1)
    ok, grad_norm, _ = state.optimizer.step()
    state.step += 1
    end_step = getattr(state.objective, "end_step", None)
    if end_step is not None:
        with suspended():
            end_step(state.step, stats)
    if state.info.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0

    tokens = state.train_cfg.global_batch_size * state.model_cfg.seq_length
    metrics.update(
        step=state.step,
        lr=current_lr(state.optimizer),
        grad_norm=float(grad_norm) if grad_norm is not None else float("nan"),
        step_time_s=dt,
        tokens=tokens,
        tokens_per_s=tokens / dt if dt > 0 else float("nan"),
        consumed_samples=state.data.consumed,
        update_ok=bool(ok),
    )
    if state.train_cfg.log_param_norm:
        metrics["param_norm"] = param_norm(state)
    return metrics


# --------------------------------------------------------------------------------------------
# The loop


def _call(cb, name: str, *args):
    fn = getattr(cb, name, None)
    if fn is None and name == "on_step_end" and callable(cb):
        fn = cb
    return fn(*args) if fn is not None else None


def _cb_name(cb, i: int) -> str:
    return str(getattr(cb, "name", None) or f"{type(cb).__name__}_{i}")


def collect_extra_state(state: TrainState) -> dict:
    """JSON extra state from the objective and callbacks (``state_dict()`` where defined)."""
    extra: dict[str, Any] = {"callbacks": {}}
    if state.policy_phase is not None:
        extra["policy_phase"] = state.policy_phase.state_dict()
    sd = getattr(state.objective, "state_dict", None)
    if callable(sd) and not isinstance(state.objective, torch.nn.Module):
        extra["objective"] = sd()
    for i, cb in enumerate(state.callbacks):
        f = getattr(cb, "state_dict", None)
        if callable(f):
            extra["callbacks"][_cb_name(cb, i)] = f()
    return extra


def restore_extra_state(state: TrainState, extra: dict) -> None:
    if state.policy_phase is not None and "policy_phase" in extra:
        state.policy_phase.load_state_dict(extra["policy_phase"])
    f = getattr(state.objective, "load_state_dict", None)
    if "objective" in extra and callable(f) and not isinstance(state.objective, torch.nn.Module):
        f(extra["objective"])
    for i, cb in enumerate(state.callbacks):
        g = getattr(cb, "load_state_dict", None)
        name = _cb_name(cb, i)
        if callable(g) and name in extra.get("callbacks", {}):
            g(extra["callbacks"][name])


class _Progress:
    """Rich progress bar on a terminal; a plain log line every ``log_interval`` otherwise."""

    def __init__(self, state: TrainState, total: int, start: int):
        self.enabled = state.info.is_logging_rank and state.train_cfg.progress
        self.interval = state.train_cfg.log_interval
        self.total = total
        self.flagged = None  # the latest on-policy flagged rate, shown once there is one
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=start, info="")

    def update(self, m: dict) -> None:
        if not self.enabled:
            return
        self.flagged = m.get("onpolicy/flagged_rate", self.flagged)
        info = f"loss {m['loss']:.4f} lr {m['lr']:.2e} {m['tokens_per_s']:.0f} tok/s"
        if self.flagged is not None:
            info += f" flagged {self.flagged:.1%}"
        if self.bar is not None:
            self.bar.update(self.task, completed=m["step"], info=info)
        elif m["step"] % self.interval == 0 or m["step"] == self.total or m["step"] == 1:
            print(f"step {m['step']}/{self.total} {info} grad_norm {m['grad_norm']:.3f}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _truncate_metrics(path: Path, keep_until_step: int) -> None:
    """On resume, drop lines of steps after the checkpoint (written before a crash)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= keep_until_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue
    path.write_text("".join(x + "\n" for x in kept))


def _json_safe(m: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in m.items()}


def run_training(state: TrainState) -> dict:
    """Train from ``state.step`` to ``train_cfg.steps``; returns the summary (all ranks)."""
    from .checkpoint import find_latest, save_checkpoint

    cfg = state.train_cfg
    out = cfg.out_path
    metrics_path = out / "metrics.jsonl"
    rank0 = state.info.is_logging_rank
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(metrics_path, state.step)
    for cb in state.callbacks:
        _call(cb, "on_train_start", state)

    start_step = state.step
    progress = _Progress(state, cfg.steps, start_step)
    history: list[dict] = []
    last_ckpt = None
    t_start = time.perf_counter()
    stop = False
    stop_signal = None
    last_save_t = time.monotonic()
    signals = ExitStack()
    signals.enter_context(interrupt.deferred())  # a signal ends the run at the next step boundary
    try:
        while state.step < cfg.steps and not stop:
            m = train_step(state)
            history.append(m)
            if rank0:
                with open(metrics_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(_json_safe(m)) + "\n")
            check_step(m, grad_norm_computed=cfg.clip_grad > 0)
            progress.update(m)
            for cb in state.callbacks:
                if _call(cb, "on_step_end", state.step, dict(m)) == "stop":
                    stop = True
            stop_signal, time_due = interrupt.poll(
                state.info.device, cfg.save_interval_s > 0 and time.monotonic() - last_save_t >= cfg.save_interval_s)
            if stop_signal:
                break
            if ((cfg.save_interval and state.step % cfg.save_interval == 0) or time_due) and state.step < cfg.steps:
                check_weights(param_norm(state), state.step)
                last_ckpt = save_checkpoint(state, collect_extra_state(state))
                last_save_t = time.monotonic()
        if (cfg.save_final or stop_signal) and (state.step > start_step or find_latest(out / "checkpoints") is None):
            check_weights(param_norm(state), state.step)
            last_ckpt = save_checkpoint(state, collect_extra_state(state))
        elif last_ckpt is None:
            last_ckpt = find_latest(out / "checkpoints")
    finally:
        progress.close()
        signals.close()
    elapsed = time.perf_counter() - t_start

    losses = [h["loss"] for h in history]
    step_time = sum(h["step_time_s"] for h in history)
    summary = {
        "start_step": start_step,
        "end_step": state.step,
        "steps_run": len(history),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "min_loss": min(losses) if losses else None,
        # The run's mean throughput: all tokens over all step time (not a mean of per-step rates,
        # which fast cached steps would inflate).
        "tokens_per_s": sum(h["tokens"] for h in history) / step_time if step_time > 0 else None,
        "train_time_s": elapsed,
        "tokens_seen": sum(h["tokens"] for h in history),
        "consumed_samples": state.data.consumed,
        "num_parameters": state.model_cfg.num_parameters(),
        "layout": {"tp": state.info.tp, "pp": state.info.pp, "dp": state.info.dp,
                   "world_size": state.info.world_size, "device": str(state.info.device)},
        "checkpoint": str(last_ckpt) if last_ckpt else None,
        "out_dir": str(out),
        "metrics_file": str(metrics_path),
    }
    flagged = [(h["step"], h["onpolicy/flagged_rate"]) for h in history if "onpolicy/flagged_rate" in h]
    if flagged:  # the model's own samples, before the first and the last phase of this run
        summary["onpolicy"] = {"phases": len(flagged), "first_flagged_rate": flagged[0][1],
                               "last_flagged_rate": flagged[-1][1], "last_phase_step": flagged[-1][0] - 1}
    if stop_signal:
        summary.update(status="interrupted", interrupted_by=interrupt.Interrupted(stop_signal).signal_name)
    if rank0:
        from ufarsap_engine.run_dir import write_summary

        write_summary(out, _json_safe(summary))
    for cb in state.callbacks:
        _call(cb, "on_train_end", summary)
    if stop_signal:
        raise interrupt.Interrupted(stop_signal, state.step, str(last_ckpt) if last_ckpt else None)
    return summary


Callback = Callable[[int, dict], Any]
