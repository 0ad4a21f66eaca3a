"""Progress of ``ufarsap-engine run`` on stderr: a live bar on a terminal, plain lines otherwise.

The bar shows the loss (total objective) and the flagged rate of the last step. When stderr is
not a terminal (output redirected to a file, CI logs) a bar would print nothing until the end,
so one plain line is printed every ``every`` steps instead (default: every 10% of the run, at
most 50 steps apart), plus the first and the last step.
"""

from __future__ import annotations

import math
import time
from typing import Any


def default_every(total: int) -> int:
    return max(1, min(50, math.ceil(total / 10)))


def describe(metrics: dict[str, Any]) -> str:
    """``loss 6.7432  flagged 9.9% of tokens`` from one step's metrics (what is there)."""
    parts = []
    if isinstance(metrics.get("loss"), (int, float)):
        parts.append(f"loss {metrics['loss']:.4f}")
    if isinstance(metrics.get("flagged_token_frac"), (int, float)):
        parts.append(f"flagged {metrics['flagged_token_frac']:.1%} of tokens")
    elif isinstance(metrics.get("flagged_sample_frac"), (int, float)):
        parts.append(f"flagged {metrics['flagged_sample_frac']:.1%} of samples")
    return "  ".join(parts)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class RunProgress:
    """Context manager; call ``update(step, metrics)`` after every step."""

    def __init__(self, total: int, start: int = 0, every: int | None = None, enabled: bool = True, console=None):
        from rich.console import Console

        self.total, self.start, self.enabled = total, start, enabled
        self.every = every or default_every(total)
        self.console = console or Console(stderr=True)
        self.bar = None
        self.t0 = time.perf_counter()
        self.first: tuple[int, float] | None = None
        self.own_flagged: float | None = None  # the latest on-policy phase's flagged share of the model's samples

    def __enter__(self) -> "RunProgress":
        if self.enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]run"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=self.console)
            self.bar.start()
            self.task = self.bar.add_task("run", total=self.total, completed=self.start, info="")
        return self

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if isinstance(metrics.get("onpolicy/flagged_rate"), (int, float)):
            self.own_flagged = metrics["onpolicy/flagged_rate"]
        info = describe(metrics)
        if self.own_flagged is not None:
            info += f"  own samples flagged {self.own_flagged:.1%}"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)
            return
        if self.first is not None and step % self.every and step != self.total:
            return
        now = time.perf_counter()
        if self.first is None:
            self.first = (step, now)  # the time to the first step is setup; the rate is measured after it
        first_step, first_t = self.first
        left = f", ~{_duration((now - first_t) / (step - first_step) * (self.total - step))} left" \
            if step > first_step else ""
        parts = [f"run step {step}/{self.total}", info, f"{_duration(now - self.t0)} elapsed{left}"]
        print("  ".join(p for p in parts if p), file=self.console.file, flush=True)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
