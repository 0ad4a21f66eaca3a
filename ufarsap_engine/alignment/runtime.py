"""The alignment core around the steps: one runtime per process, holding the objective and the
callback that share one explicit state.

:class:`AlignmentRuntime` loads the selected plugins, builds a(t) (``AlignmentTracker``) and the
emergence tracker, and the objective that owns them (``runtime.objective``); the runtime itself is
the trainer callback (``runtime.callbacks``). A ``torchrun`` worker builds it from the run spec's
``runtime`` reference and takes both from it; a single process, and the hook-only loop, build it
directly. Nothing is kept in module globals.

The step's own statistics reach a(t).short and emergence through the objective's ``end_step``
(called by the trainer loop). Per step here (every rank, same arguments): the plugins'
``step_end`` hook and (rank 0) the registry heartbeat. Per window (medium horizon): re-score a
seeded sample of the window's documents per sample with the medium scoring hooks and set
a(t).medium from those scores, then ``window_end``. Per round (long horizon): score the held-out
probe set, set a(t).long, call ``round_end``, run an evolution round (rank 0, with ``evolve``),
then re-read the registry's active strategy (with ``follow_registry``) and switch plugins if it
changed, so that ``registry activate`` from another shell, or a strategy integrated by
evolution on another node, takes effect.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from ufarsap_engine.alignment.emergence import EmergenceTracker
from ufarsap_engine.alignment.scoring import make_sample, score_batch
from ufarsap_engine.alignment.state import AlignmentTracker
from ufarsap_engine.config import RunConfig
from ufarsap_engine.plugin_config import configure_plugins
from ufarsap_engine.plugin_host import PluginHost
from ufarsap_engine.schemas import Horizon, RoundReport, RunContext, Sample, StepReport, TextBatch, WindowReport


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
        self.last_heartbeat = 0.0
        # The medium horizon's documents: the last ``n`` steps' documents (set from the trainer's
        # data at the start, or by the hook-only loop).
        self.recent_documents: Callable[[int], list[Sample]] | None = None
        self.probe_metrics: dict[str, float] = {}
        self.round_metrics: dict[str, float] = {}
        self.evolution = None
        self.annotations = annotations  # {"dir", "plugins", "annotate": bool, "data", "workers"} or None
        self.background = None
        self.objective = self._build_objective()
        self.policy_phase = self._build_policy_phase()

    def _build_policy_phase(self):
        """The on-policy phase (``onpolicy.every > 0``): the model samples, the plugins judge."""
        if not self.cfg.onpolicy.every:
            return None
        from ufarsap_engine.alignment.onpolicy import OnPolicyPhase
        return OnPolicyPhase(self.cfg.onpolicy, self.host, self.cfg.objective.flag_threshold, self.cfg.seed,
                             alignment_state=lambda: self.tracker.state)

    def _build_objective(self):
        if not self.host.names and not self.follow_registry:
            from ufarsap_engine.trainer.objective import MLEObjective
            return MLEObjective()
        from ufarsap_engine.alignment.unified import UnifiedObjective
        obj = UnifiedObjective(self.host, self.cfg.objective, self.tracker, self.emergence,
                               total_steps=self.cfg.steps, seed=self.cfg.seed)
        obj.extra_metrics = self.extra_metrics
        return obj

    @property
    def callbacks(self) -> list:
        """The trainer callbacks that go with ``objective`` (the runtime itself)."""
        return [self]

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
        data = getattr(state, "data", None)
        if data is not None and self.recent_documents is None:
            def recent(steps: int) -> list[Sample]:
                from ufarsap_engine.annotate.table import document_key

                docs = data.ds.docs
                return [make_sample(str(docs[d].doc_id), docs[d].text,
                                    meta={"content_key": document_key(docs[d].text, docs[d].prompt, docs[d].messages)})
                        for d in data.recent_documents(steps)]
            self.recent_documents = recent
        self._read_annotations(state)
        self.host.call("ufarsap_run_start", run=self.context, state=self.tracker.state)

    def on_step_end(self, step: int, metrics: dict[str, Any]):
        """Lifecycle hooks and the medium/long horizons; ``metrics`` are only reported to the
        plugins (a(t) and emergence come from the objective's ``end_step``, not from here)."""
        self.tracker.state.step = step
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.host.call("ufarsap_step_end", report=StepReport(step=step, loss=metrics.get("loss"), metrics=numeric),
                       state=self.tracker.state)
        if step % self.cfg.window_steps == 0:
            self.window_end(step, numeric)
        if step % self.cfg.round_steps == 0 or step == self.cfg.steps:
            self.round_end(step)
            if step < self.cfg.steps:
                self.sync_strategy(step)
        self._heartbeat()
        return None

    def window_end(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """Medium horizon: re-score a seeded sample (``window_samples``) of the window's documents
        per sample with the current state, set a(t).medium per paradigm to the mean of those
        scores, then call ``window_end``. Stateless plugins the annotation holds are read from it
        (their scores depend on the text alone); the others are called."""
        recent = self.recent_documents(self.cfg.window_steps) if self.recent_documents else []
        generations: list[Sample] = []  # the window's own generations join here once the trainer samples
        pool = recent[:]
        if len(pool) > self.cfg.window_samples:
            keep = np.random.default_rng([self.cfg.seed, step]).choice(len(pool), self.cfg.window_samples,
                                                                       replace=False)
            pool = [pool[i] for i in sorted(keep.tolist())]
        means = self._paradigm_means(pool + generations, step, Horizon.MEDIUM)
        if means:
            self.tracker.update_window(step, means)
        self.host.call("ufarsap_window_end", report=WindowReport(
            first_step=step - self.cfg.window_steps + 1, last_step=step, metrics=metrics), state=self.tracker.state)
        return means

    def _paradigm_means(self, samples: list[Sample], step: int, horizon: Horizon) -> dict[str, float]:
        """Per paradigm: the mean over samples of each sample's score at ``horizon``."""
        if not samples or not self.host.names:
            return {}
        paradigm_of = {n: i.paradigm.value for n, i in self.host.info.items()}
        known = {}
        keys = [s.meta.get("content_key") for s in samples]  # set on training documents (recent_documents)
        if all(keys) and hasattr(self.objective, "known_results"):  # training documents: the annotation has them
            known = self.objective.known_results(samples, keys, horizon)
        cells = score_batch(self.host, TextBatch(samples=samples, step=step), horizon, self.tracker.state,
                            known=known)
        means = {}
        for p, vals in cells.paradigm_sample_scores(paradigm_of).items():
            vals = [v for v in vals if v is not None]
            if vals:
                means[p] = sum(vals) / len(vals)
        return means

    def round_end(self, step: int) -> dict[str, float]:
        """Long horizon: score the held-out probe set, update a(t).long and generalizability."""
        round_index = step // self.cfg.round_steps
        if self.probe and self.host.names:
            means = self._paradigm_means(self.probe, step, Horizon.LONG)
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
        if self.policy_phase is not None:
            self.policy_phase.host = self.host

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

    # -- checkpointed state (a(t) and emergence are the objective's; see UnifiedObjective) ------
    def state_dict(self) -> dict:
        return {"probe_metrics": self.probe_metrics}

    def load_state_dict(self, data: dict) -> None:
        if "alignment_state" in data:  # a checkpoint from before the objective owned a(t)
            self.tracker.load(data["alignment_state"])
            self.emergence.load_state_dict(data["emergence"])
        self.probe_metrics = data.get("probe_metrics", {})
