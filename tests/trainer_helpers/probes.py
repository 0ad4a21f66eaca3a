"""Callbacks and objectives that tests load inside trainer workers (by 'module:callable')."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import torch


class KillAt:
    """SIGKILL rank 0 right after step ``step`` (no cleanup, like a crash or an OOM kill)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, step, metrics):
        if step == self.step and int(os.environ.get("RANK", "0")) == 0:
            os.kill(os.getpid(), signal.SIGKILL)


class RecordState:
    """Counts steps, keeps the count in checkpoints (extra_state) and writes what it saw."""

    name = "record"

    def __init__(self, out: str):
        self.out = out
        self.seen: list[int] = []
        self.restored = None

    def on_step_end(self, step, metrics):
        self.seen.append(step)

    def state_dict(self):
        return {"seen": list(self.seen)}

    def load_state_dict(self, d):
        self.restored = d
        self.seen = list(d["seen"])

    def on_train_end(self, summary):
        if int(os.environ.get("RANK", "0")) == 0:
            Path(self.out).write_text(json.dumps({"seen": self.seen, "restored": self.restored}))


class WeightedObjective:
    """MLE with per-token weights from ``prepare`` plus an extra trainable scalar with its own
    LR (exercises the plug point: prepare on every rank, extra metrics, extra modules)."""

    name = "weighted"

    def __init__(self, extra_lr: float = 0.05):
        torch.manual_seed(0)
        self.scale = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.constant_(self.scale.weight, 1.0)
        self.extra_lr = extra_lr

    def prepare(self, batch):
        w = torch.ones_like(batch.loss_mask)
        w[:, ::2] = 0.5
        return {"w": w}

    def loss(self, ce, mask, prepared, outputs):
        w = prepared["w"] * mask
        s = self.scale.weight.reshape(())
        loss_sum = (ce * w).sum() * s + (s - 2.0) ** 2 * mask.sum()
        return loss_sum, mask.sum().to(torch.int), {"weighted_mean_w": w.sum() / mask.sum(), "scale": s.detach()}

    def extra_modules(self):
        return [(self.scale, self.extra_lr)]


class ParamProbe:
    """Records the model's parameter norm before training and after every step (collective:
    runs on every rank, rank 0 writes the list)."""

    def __init__(self, out: str):
        self.out = out
        self.norms: list[float] = []

    def on_train_start(self, state):
        from ufarsap_engine.trainer.loop import param_norm

        self.state = state
        self.norms = [param_norm(state)]

    def on_step_end(self, step, metrics):
        from ufarsap_engine.trainer.loop import param_norm

        self.norms.append(param_norm(self.state))

    def on_train_end(self, summary):
        if int(os.environ.get("RANK", "0")) == 0:
            Path(self.out).write_text(json.dumps(self.norms))
