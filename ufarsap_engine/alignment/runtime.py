"""The alignment core as the trainer sees it: one objective and one callback per process.

``build_objective(**spec)`` is what each ``torchrun`` worker calls (through the run spec's
``module:callable`` reference); it loads the selected plugins in that process and keeps the
runtime so that ``build_callback()`` (called next by the worker) shares the same state. In a
single process, :class:`AlignmentRuntime` is built directly.

Per step (the callback, every rank, same arguments): update a(t) from the reduced metrics,
track emergence, call the plugins' ``step_end``/``window_end``/``round_end`` hooks, score the
held-out probe set every round (long horizon), and (rank 0) heartbeat the registry.
"""

from __future__ import annotations

import time
from typing import Any

from ufarsap_engine.alignment.emergence import EmergenceTracker
from ufarsap_engine.alignment.scoring import make_sample, score_batch
from ufarsap_engine.alignment.state import AlignmentTracker
from ufarsap_engine.config import RunConfig
from ufarsap_engine.plugin_host import PluginHost
from ufarsap_engine.schemas import PARADIGMS, Horizon, RoundReport, RunContext, StepReport, TextBatch, WindowReport

_CURRENT: "AlignmentRuntime | None" = None


class AlignmentRuntime:
    name = "alignment"

    def __init__(self, run_config: dict, plugins: list[str], plugin_params: dict, probe: list[dict],
                 run_id: str = "", strategy_id: int | None = None, registry_url: str | None = None,
                 host: PluginHost | None = None):
        self.cfg = RunConfig.model_validate(run_config)
        if host is None:  # a torchrun worker loads and configures its own plugins
            host = PluginHost(plugins, strict=self.cfg.strict_plugins, trace=self.cfg.trace_plugins or None)
            for name in host.names:
                host.call("ufarsap_configure", only=[name], params=plugin_params.get(name, {}))
        self.host = host
        self.tracker = AlignmentTracker(self.cfg.window_steps)
        self.emergence = EmergenceTracker()
        self.probe = [make_sample(p["id"], p["text"]) for p in probe]
        self.context = RunContext(run_id=run_id, out_dir=self.cfg.out, plugins=self.host.names,
                                  strategy_id=strategy_id, config=run_config)
        self.registry_url, self.run_id = registry_url, run_id
        self.window_rewards: list[float] = []
        self.last_heartbeat = 0.0
        self.probe_metrics: dict[str, float] = {}
        self.objective = self._build_objective()

    def _build_objective(self):
        if not self.host.names:
            from ufarsap_engine.trainer.objective import MLEObjective
            return MLEObjective()
        from ufarsap_engine.alignment.unified import UnifiedObjective
        obj = UnifiedObjective(self.host, self.cfg.objective, self.tracker, self.emergence,
                               total_steps=self.cfg.steps, seed=self.cfg.seed)
        obj.extra_metrics = self.extra_metrics
        return obj

    def extra_metrics(self) -> dict[str, float]:
        """State, emergence and probe values logged with every step (as of the previous step)."""
        return {**self.tracker.metrics(), **self.emergence.metrics(), **self.probe_metrics}

    # -- trainer callback protocol ------------------------------------------------------------
    def on_train_start(self, state) -> None:
        self.tracker.state.step = state.step
        self.host.call("ufarsap_run_start", run=self.context, state=self.tracker.state)

    def on_step_end(self, step: int, metrics: dict[str, Any]):
        scores = {p: [metrics[f"align.{p}"]] for p in PARADIGMS if f"align.{p}" in metrics}
        self.tracker.update_step(step, scores)
        orchestrated = [metrics.get(f"O.{p}") for p in PARADIGMS if f"O.{p}" in metrics]
        if orchestrated:
            self.emergence.observe_state(orchestrated)
        if "loss.interact" in metrics and "interact.direct_error" in metrics:
            self.emergence.observe_predictions(metrics["loss.interact"], metrics["interact.direct_error"])
        if "reward.unified" in metrics:
            self.window_rewards.append(metrics["reward.unified"])
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.host.call("ufarsap_step_end", report=StepReport(step=step, loss=metrics.get("loss"), metrics=numeric),
                       state=self.tracker.state)
        if step % self.cfg.window_steps == 0:
            if self.window_rewards:
                self.emergence.observe_window(sum(self.window_rewards) / len(self.window_rewards))
            self.window_rewards = []
            self.host.call("ufarsap_window_end", report=WindowReport(
                first_step=step - self.cfg.window_steps + 1, last_step=step, metrics=numeric), state=self.tracker.state)
        if step % self.cfg.round_steps == 0 or step == self.cfg.steps:
            self.round_end(step)
        self._heartbeat()
        return None

    def round_end(self, step: int) -> dict[str, float]:
        """Long horizon: score the held-out probe set, update a(t).long and generalizability."""
        round_index = step // self.cfg.round_steps
        if self.probe and self.host.names:
            paradigm_of = {n: i.paradigm.value for n, i in self.host.info.items()}
            cells = score_batch(self.host, TextBatch(samples=self.probe, step=step), Horizon.LONG, self.tracker.state)
            means = {p: sum(v for v in vals if v is not None) / max(1, sum(v is not None for v in vals))
                     for p, vals in cells.paradigm_sample_scores(paradigm_of).items()}
            self.tracker.update_round(round_index, means)
            if means:
                self.emergence.observe_probe(sum(means.values()) / len(means))
            self.probe_metrics = {f"probe.{p}": round(v, 6) for p, v in means.items()}
        self.host.call("ufarsap_round_end", report=RoundReport(round=round_index, step=step, metrics=self.probe_metrics),
                       state=self.tracker.state)
        return self.probe_metrics

    def on_train_end(self, summary: dict) -> None:
        self.host.call("ufarsap_run_end", run=self.context, summary=summary)

    def _heartbeat(self) -> None:
        if not self.registry_url or not self.run_id or time.monotonic() - self.last_heartbeat < 30:
            return
        import torch.distributed as dist
        if dist.is_initialized() and dist.get_rank() != 0:
            return
        from ufarsap_registry import open_registry
        with open_registry(self.registry_url) as reg:
            reg.heartbeat(self.run_id)
        self.last_heartbeat = time.monotonic()

    def state_dict(self) -> dict:
        return {"alignment_state": self.tracker.state.model_dump(), "emergence": self.emergence.state_dict(),
                "probe_metrics": self.probe_metrics}

    def load_state_dict(self, data: dict) -> None:
        self.tracker.load(data["alignment_state"])
        self.emergence.load_state_dict(data["emergence"])
        self.probe_metrics = data.get("probe_metrics", {})


def build_objective(**kwargs):
    """For the torchrun worker: build this process's runtime and return its objective."""
    global _CURRENT
    _CURRENT = AlignmentRuntime(**kwargs)
    return _CURRENT.objective


def build_callback():
    """For the torchrun worker: the callback of the runtime ``build_objective`` made."""
    if _CURRENT is None:
        raise RuntimeError("build_objective must run before build_callback")
    return _CURRENT
