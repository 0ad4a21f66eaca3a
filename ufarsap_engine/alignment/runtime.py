"""The alignment core around the steps: one objective and one callback per process.

``build_objective(**spec)`` is what each ``torchrun`` worker calls (through the run spec's
``module:callable`` reference); it loads the selected plugins in that process and keeps the
runtime so that ``build_callback()`` (called next by the worker) shares the same state. In a
single process, :class:`AlignmentRuntime` is built directly; the hook-only loop uses it too.

Per step (every rank, same arguments): update a(t) from the step's metrics, track emergence,
call the plugins' ``step_end``/``window_end`` hooks, and (rank 0) heartbeat the registry.
Per round: score the held-out probe set (long horizon), call ``round_end``, run an evolution
round (rank 0, with ``evolve``), then re-read the registry's active strategy (with
``follow_registry``) and switch plugins if it changed, so that ``registry activate`` from
another shell, or a strategy integrated by evolution on another node, takes effect.
"""

from __future__ import annotations

import time
from typing import Any

from ufarsap_engine.alignment.emergence import EmergenceTracker
from ufarsap_engine.alignment.scoring import make_sample, score_batch
from ufarsap_engine.alignment.state import AlignmentTracker
from ufarsap_engine.config import RunConfig
from ufarsap_engine.plugin_config import configure_plugins
from ufarsap_engine.plugin_host import PluginHost
from ufarsap_engine.schemas import PARADIGMS, Horizon, RoundReport, RunContext, StepReport, TextBatch, WindowReport

_CURRENT: "AlignmentRuntime | None" = None


def load_host(cfg: RunConfig, plugins: list[str], plugin_params: dict) -> PluginHost:
    host = PluginHost(plugins, strict=cfg.strict_plugins, trace=cfg.trace_plugins or None,
                      call_timeout_s=cfg.plugin_timeouts.call_s, import_timeout_s=cfg.plugin_timeouts.import_s)
    configure_plugins(host, plugin_params)
    return host


def _connectable(url: str | None) -> str | None:
    """Workers get the registry URL without its password; the real one is in their environment."""
    if not url:
        return url
    from ufarsap_registry import real_url
    return real_url(url)


def _is_rank0() -> bool:
    import torch.distributed as dist
    return not dist.is_initialized() or dist.get_rank() == 0


def _on_rank0_then_share(fn):
    """Run ``fn`` on rank 0 only and give its (picklable) result to every rank."""
    import torch.distributed as dist
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return fn()
    box = [fn() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class AlignmentRuntime:
    name = "alignment"

    def __init__(self, run_config: dict, plugins: list[str], plugin_params: dict, probe: list[dict],
                 run_id: str = "", strategy_id: int | None = None, registry_url: str | None = None,
                 follow_registry: bool = False, host: PluginHost | None = None,
                 annotations: dict | None = None):
        self.cfg = RunConfig.model_validate(run_config)
        self.host = host if host is not None else load_host(self.cfg, plugins, plugin_params)
        self.tracker = AlignmentTracker(self.cfg.window_steps)
        self.emergence = EmergenceTracker()
        self.probe = [make_sample(p["id"], p["text"]) for p in probe]
        self.context = RunContext(run_id=run_id, out_dir=self.cfg.out, plugins=self.host.names,
                                  strategy_id=strategy_id, config=run_config)
        self.registry_url, self.run_id = _connectable(registry_url), run_id
        self.follow_registry = follow_registry or self.cfg.evolve
        self.active_strategy_id = strategy_id
        self.window_rewards: list[float] = []
        self.last_heartbeat = 0.0
        self.probe_metrics: dict[str, float] = {}
        self.round_metrics: dict[str, float] = {}
        self.evolution = None
        self.annotations = annotations  # {"dir", "plugins", "annotate": bool, "data", "workers"} or None
        self.background = None
        self.objective = self._build_objective()

    def _build_objective(self):
        if not self.host.names and not self.follow_registry:
            from ufarsap_engine.trainer.objective import MLEObjective
            return MLEObjective()
        from ufarsap_engine.alignment.unified import UnifiedObjective
        obj = UnifiedObjective(self.host, self.cfg.objective, self.tracker, self.emergence,
                               total_steps=self.cfg.steps, seed=self.cfg.seed)
        obj.extra_metrics = self.extra_metrics
        return obj

    def extra_metrics(self) -> dict[str, float]:
        """Values logged with every step: a(t), emergence, probe and round results, and which
        plugins are active (``plugin.<name> = 1``)."""
        active = {f"plugin.{n}": 1.0 for n in self.host.names}
        if self.active_strategy_id is not None:
            active["strategy.id"] = float(self.active_strategy_id)
        return {**self.tracker.metrics(), **self.emergence.metrics(), **self.probe_metrics,
                **self.round_metrics, **active}

    # -- trainer callback protocol ------------------------------------------------------------
    def on_train_start(self, state) -> None:
        self.tracker.state.step = state.step
        self._read_annotations(state)
        self.host.call("ufarsap_run_start", run=self.context, state=self.tracker.state)

    def on_step_end(self, step: int, metrics: dict[str, Any]):
        scores = {p: [metrics[f"align.{p}"]] for p in PARADIGMS if metrics.get(f"align.{p}") is not None}
        self.tracker.update_step(step, scores)
        if hasattr(self.objective, "observe_step"):
            self.objective.observe_step(metrics)
        orchestrated = [metrics[f"O.{p}"] for p in PARADIGMS if metrics.get(f"O.{p}") is not None]
        if orchestrated:
            self.emergence.observe_state(orchestrated)
        if metrics.get("loss.interact") is not None and metrics.get("interact.direct_error") is not None:
            self.emergence.observe_predictions(metrics["loss.interact"], metrics["interact.direct_error"])
        if metrics.get("reward.unified") is not None:
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
            if step < self.cfg.steps:
                self.sync_strategy(step)
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

    # -- strategy control ---------------------------------------------------------------------
    def sync_strategy(self, step: int) -> None:
        """Evolve (rank 0, with ``evolve``) and follow the registry's active strategy."""
        if not self.follow_registry or not self.registry_url:
            return
        active = _on_rank0_then_share(self._evolve_and_read_active_or_skip)
        if active is None:
            return
        strategy_id, plugins, params = active
        self.active_strategy_id = strategy_id
        if sorted(plugins) == self.host.names:
            return
        self.host = load_host(self.cfg, plugins, params.get("plugins", {}))
        self.context = self.context.model_copy(update={"plugins": self.host.names, "strategy_id": strategy_id})
        if hasattr(self.objective, "set_host"):
            self.objective.set_host(self.host)

    def _evolve_and_read_active_or_skip(self):
        """A registry outage skips this round's evolution and strategy check; training goes on."""
        from sqlalchemy.exc import InterfaceError, OperationalError
        from ufarsap_registry import RegistryBusy, RegistryUnavailable

        try:
            return self._evolve_and_read_active()
        except (RegistryUnavailable, RegistryBusy, OperationalError, InterfaceError) as exc:
            import logging
            logging.getLogger("ufarsap_registry").warning(
                f"registry unreachable at a round boundary ({str(exc).splitlines()[0]}): keeping plugins"
                f" {', '.join(self.host.names) or '(none)'}; evolution skips this round")
            return None

    def _evolve_and_read_active(self):
        from ufarsap_registry import open_registry

        with open_registry(self.registry_url) as reg:
            if self.cfg.evolve:
                result = self._evolution(reg).run_round()
                self.round_metrics = {"evolution.round": float(result.round_index),
                                      "evolution.integrated_id": float(result.integrated_id or 0),
                                      "evolution.improvement": float(result.improvement or 0.0),
                                      "evolution.candidates": float(len(result.candidates))}
                from ufarsap_engine.evolution.health import QUARANTINED
                if QUARANTINED:  # recorded with the round's incumbent and in this run's metrics
                    left_out = {f"evolution.quarantined.{name}": 1.0 for name in QUARANTINED}
                    reg.record_scores(result.incumbent_id, left_out, step=result.round_index)
                    self.round_metrics.update(left_out)
            rec = reg.active_strategy(self.cfg.scope)
        if rec is None:
            return None
        from ufarsap_engine.plugin_host import installed_plugins
        missing = [p for p in rec.plugins if p not in installed_plugins()]
        if missing:  # never switch to a strategy that cannot run here
            return None
        return rec.id, list(rec.plugins), dict(rec.params)

    def _evolution(self, reg):
        from ufarsap_engine.evolution import Evolution, EvolutionConfig, ProbeEvaluator
        from ufarsap_engine.evolution.health import healthy_plugins

        settings = {"scope": self.cfg.scope, "seed": self.cfg.seed, "default_plugins": self.host.names,
                    **self.cfg.evolution}
        # Only plugins that pass a health check may be explored (plus those this run already uses).
        installed = healthy_plugins(self.host.names, call_timeout_s=self.cfg.plugin_timeouts.call_s,
                                    import_timeout_s=self.cfg.plugin_timeouts.import_s)
        return Evolution(reg, ProbeEvaluator(), EvolutionConfig.model_validate(settings), run_id=self.run_id,
                         installed=installed)

    def on_train_end(self, summary: dict) -> None:
        self.stop_annotation()
        self.host.call("ufarsap_run_end", run=self.context, summary=summary)

    # -- the short horizon: read from an annotation, never scored in the step -------------------
    def _read_annotations(self, state) -> None:
        """Give the objective the annotation to read; on raw data, global rank 0 first starts
        annotating it in the background, shards in the order the steps will need them."""
        spec = self.annotations
        if not spec or not spec.get("plugins") or not hasattr(self.objective, "use_annotations"):
            return
        from ufarsap_engine.annotate.table import AnnotationTable

        if spec.get("annotate") and _is_rank0() and self.background is None:
            from ufarsap_engine.annotate.background import BackgroundAnnotation, need_order

            data = state.data
            order = need_order(data.ds, data.seed, data.consumed, state.train_cfg.steps - state.step,
                               data.global_batch)
            self.background = BackgroundAnnotation(spec["dir"], spec["plugins"], spec.get("plugin_params", {}),
                                                   spec.get("data"), spec.get("workers", 2), order)
        self.objective.use_annotations(AnnotationTable(spec["dir"], spec["plugins"]))

    def stop_annotation(self, warn: bool = True) -> None:
        """End a background annotation that is still running (its complete shards stay for the
        next run). A failure after the last step needed it only costs the next run the rest
        (``warn``: say so; a run that failed on it has said it already)."""
        bg, self.background = self.background, None
        if bg is None:
            return
        bg.stop()
        try:
            bg.join()
        except Exception as exc:
            import sys
            if warn:
                print(f"ufarsap-engine: warning: background annotation stopped: {(str(exc).splitlines() or [''])[0]}",
                      file=sys.stderr, flush=True)

    def _heartbeat(self) -> None:
        """Queued to the background writer: a registry outage never stops or blocks a step."""
        if not self.registry_url or not self.run_id or not _is_rank0() \
                or time.monotonic() - self.last_heartbeat < self.cfg.registry_heartbeat_s:
            return
        from ufarsap_registry.background import writer_for
        writer_for(self.registry_url).heartbeat(self.run_id)
        self.last_heartbeat = time.monotonic()

    # -- checkpointed state ---------------------------------------------------------------------
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
