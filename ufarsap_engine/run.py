"""One ``ufarsap-engine run``: config -> plugins -> registry -> steps -> summary.

The steps themselves are the trainer's (``ufarsap_engine/trainer/loop.py``) when a model is
trained; with ``train_model = false`` the plugin hooks run over the data without a model update
(useful for checking plugins and for scoring a corpus). Either way the run and the strategy it
ran are recorded in the SQL strategy registry.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ufarsap_engine import __version__
from ufarsap_engine.alignment.scoring import CellScores, make_sample, score_batch
from ufarsap_engine.alignment.state import AlignmentTracker
from ufarsap_engine.config import DEFAULT_PLUGINS, RunConfig
from ufarsap_engine.data.corpus import default_corpus_path, iter_documents
from ufarsap_engine.errors import EngineError
from ufarsap_engine.plugin_host import PluginHost, installed_plugins, resolve_selection
from ufarsap_engine.schemas import (
    Horizon,
    RoundReport,
    RunContext,
    StepReport,
    TextBatch,
    WindowReport,
)


@dataclass
class PluginChoice:
    names: list[str]
    source: str  # "flag", "registry", "default"
    strategy_id: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


def choose_plugins(cfg: RunConfig, registry, installed) -> PluginChoice:
    """``--plugins`` if given (``no:`` entries subtract from the active/default set), else the
    registry's active strategy, else the documented default set."""
    active = registry.active_strategy(cfg.scope)
    base = active.plugins if active else DEFAULT_PLUGINS
    if cfg.plugins is not None and any(not p.startswith("no:") for p in cfg.plugins):
        return PluginChoice(resolve_selection(cfg.plugins, installed), "flag")
    if cfg.plugins:  # only exclusions
        names = resolve_selection(cfg.plugins, installed, base=base)
        return PluginChoice(names, "flag")
    if active:
        missing = [p for p in active.plugins if p not in installed]
        if missing:
            from ufarsap_engine.errors import UserError
            raise UserError(f"active strategy {active.id} needs plugins that are not installed: "
                            f"{', '.join(missing)} (pip install them, or `ufarsap-engine registry activate` another)")
        return PluginChoice(list(active.plugins), "registry", active.id, dict(active.params))
    return PluginChoice(resolve_selection(DEFAULT_PLUGINS, installed), "default")


class AlignmentSession:
    """What the engine does around each step: score the batch with the plugins at every scale,
    update a(t), call the lifecycle hooks, write metrics. Shared by the trainer and the
    hook-only loop, so both behave the same."""

    def __init__(self, cfg: RunConfig, host: PluginHost, out_dir: Path):
        self.cfg, self.host, self.out_dir = cfg, host, out_dir
        self.tracker = AlignmentTracker(cfg.window_steps)
        self.paradigm_of = {n: i.paradigm.value for n, i in host.info.items()}
        self.window: list[dict[str, float]] = []
        self.metrics_file = open(out_dir / "metrics.jsonl", "w", encoding="utf-8")

    def score(self, step: int, samples: list, horizon: Horizon = Horizon.SHORT) -> CellScores:
        batch = TextBatch(samples=samples, step=step)
        return score_batch(self.host, batch, horizon, self.tracker.state)

    def alignment_metrics(self, step: int, cells: CellScores) -> dict[str, float]:
        scores = cells.paradigm_sample_scores(self.paradigm_of)
        self.tracker.update_step(step, scores)
        out = self.tracker.metrics()
        flagged = cells.flagged_spans()
        out["flagged_spans"] = float(sum(len(f) for f in flagged))
        out["flagged_samples"] = float(sum(1 for f in flagged if f))
        for (plugin, scale), res in cells.results.items():
            vals = [v for v in res.sample_scores if v is not None]
            if vals:
                out[f"score.{plugin}.{scale}"] = round(sum(vals) / len(vals), 6)
        return out

    def step_end(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **metrics}
        self.metrics_file.write(json.dumps(record) + "\n")
        self.metrics_file.flush()
        self.host.call("ufarsap_step_end", report=StepReport(step=step, loss=metrics.get("loss"),
                       metrics=_numeric(metrics)), state=self.tracker.state)
        self.window.append(_numeric(metrics))
        if step % self.cfg.window_steps == 0:
            keys = set().union(*self.window)
            mean = {k: sum(m.get(k, 0.0) for m in self.window) / len(self.window) for k in keys}
            self.host.call("ufarsap_window_end", report=WindowReport(
                first_step=step - len(self.window) + 1, last_step=step, metrics=mean), state=self.tracker.state)
            self.window = []

    def round_end(self, round_index: int, step: int, probe_samples: list) -> dict[str, float]:
        """The long horizon: score a held-out probe set and record it in a(t)."""
        cells = self.score(step, probe_samples, Horizon.LONG)
        means = {p: sum(v for v in vals if v is not None) / max(1, sum(v is not None for v in vals))
                 for p, vals in cells.paradigm_sample_scores(self.paradigm_of).items()}
        self.tracker.update_round(round_index, means)
        metrics = {f"probe.{p}": round(v, 6) for p, v in means.items()}
        self.host.call("ufarsap_round_end", report=RoundReport(round=round_index, step=step, metrics=metrics),
                       state=self.tracker.state)
        return metrics

    def close(self) -> None:
        self.metrics_file.close()


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def load_samples(cfg: RunConfig) -> list:
    path = cfg.data or default_corpus_path()
    samples = [make_sample(doc_id, text, **extras) for doc_id, text, extras in iter_documents(path)]
    if not samples:
        from ufarsap_engine.errors import UserError
        raise UserError(f"data file {path} holds no documents")
    return samples


def hook_only_loop(cfg: RunConfig, session: AlignmentSession, samples: list, probe: list, progress) -> dict[str, float]:
    """Run the plugin hooks step by step over the data, without a model update."""
    rng = random.Random(cfg.seed)
    order = list(range(len(samples)))
    rng.shuffle(order)
    last: dict[str, float] = {}
    for step in range(1, cfg.steps + 1):
        start = ((step - 1) * cfg.batch_samples) % len(order)
        batch = [samples[order[(start + i) % len(order)]] for i in range(cfg.batch_samples)]
        t0 = time.perf_counter()
        cells = session.score(step, batch)
        metrics: dict[str, Any] = {"loss": None, **session.alignment_metrics(step, cells)}
        metrics["step_time_s"] = round(time.perf_counter() - t0, 6)
        if step % cfg.round_steps == 0 or step == cfg.steps:
            metrics.update(session.round_end(step // cfg.round_steps, step, probe))
        session.step_end(step, metrics)
        last = metrics
        progress(step)
    return last


@dataclass
class PreparedRun:
    """Everything checked and loaded before a run writes anything."""

    cfg: RunConfig
    registry: Any
    choice: PluginChoice
    host: PluginHost
    plugin_params: dict[str, dict[str, Any]]
    samples: list


def prepare(cfg: RunConfig) -> PreparedRun:
    """Open the registry, choose and load plugins, read the data: every user error surfaces
    here, before the run directory or the registry is touched."""
    from ufarsap_registry import open_registry

    registry = open_registry(cfg.registry)
    try:
        installed = installed_plugins()
        choice = choose_plugins(cfg, registry, installed)
        host = PluginHost(choice.names, strict=cfg.strict_plugins, trace=cfg.trace_plugins or None,
                          installed=installed)
        plugin_params = {**choice.params.get("plugins", {}), **cfg.plugin_params}
        unknown = sorted(set(plugin_params) - set(host.names))
        if unknown:
            from ufarsap_engine.errors import UserError
            raise UserError(f"plugin_params names plugins that are not selected: {', '.join(unknown)}")
        for name in host.names:
            host.call("ufarsap_configure", only=[name], params=plugin_params.get(name, {}))
        samples = load_samples(cfg)
    except BaseException:
        registry.close()
        raise
    return PreparedRun(cfg, registry, choice, host, plugin_params, samples)


def execute(prepared: PreparedRun, progress=lambda step: None) -> dict[str, Any]:
    """Run to the end and return the summary (also written to ``OUT/summary.json``)."""
    cfg, registry, choice, host = prepared.cfg, prepared.registry, prepared.choice, prepared.host
    plugin_params, samples = prepared.plugin_params, prepared.samples
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = registry.start_run(name=out_dir.name, config=cfg.model_dump(mode="json"), scope=cfg.scope)
    # Every run is recorded as a strategy of its own; a run of the active strategy is its child.
    parent = choice.strategy_id
    strategy_id = registry.add_strategy(
        plugins=host.names, params={**choice.params, "plugins": plugin_params}, origin="manual",
        run_id=run_id, parent_id=parent, state="running", scope=cfg.scope,
        reason=f"run of active strategy {parent}" if parent else f"plugins chosen by {choice.source}")
    t0 = time.perf_counter()
    status, last, training = "failed", {}, None
    try:
        if cfg.train_model:
            training = _train(prepared, run_id, strategy_id, progress)
            last = _last_metrics(out_dir / "metrics.jsonl")
        else:
            last = _hook_only(prepared, run_id, strategy_id, out_dir, progress)
        status = "complete"
    finally:
        summary = {
            "run_id": run_id, "status": status, "steps": cfg.steps, "plugins": host.names,
            "plugins_source": choice.source, "strategy_id": strategy_id, "parent_strategy_id": parent,
            "quarantined": host.quarantined, "wall_time_s": round(time.perf_counter() - t0, 3),
            "final_metrics": last, "engine_version": __version__, "trained_model": cfg.train_model,
            "training": training,
        }
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        scores = {k: v for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        registry.record_scores(strategy_id, scores, step=cfg.steps)
        registry.set_state(strategy_id, status)
        registry.end_run(run_id, status)
        registry.close()
    return summary


def _last_metrics(path: Path) -> dict[str, Any]:
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else {}


def _hook_only(prepared: PreparedRun, run_id: str, strategy_id: int, out_dir: Path, progress) -> dict[str, float]:
    cfg, host, samples = prepared.cfg, prepared.host, prepared.samples
    ctx = RunContext(run_id=run_id, out_dir=str(out_dir), plugins=host.names, strategy_id=strategy_id,
                     config=cfg.model_dump(mode="json"))
    session = AlignmentSession(cfg, host, out_dir)
    probe_n = max(1, min(32, len(samples) // 10))
    probe, train = samples[-probe_n:], samples[:-probe_n] or samples
    host.call("ufarsap_run_start", run=ctx, state=session.tracker.state)
    last: dict[str, float] = {}
    status = "failed"
    try:
        last = hook_only_loop(cfg, session, train, probe, progress)
        status = "complete"
    finally:
        session.close()
        host.call("ufarsap_run_end", run=ctx, summary={"status": status, "final_metrics": last})
    return last


def trainer_configs(cfg: RunConfig):
    """The trainer's model, training and data configs from the run config (one line per
    invalid value)."""
    from pydantic import ValidationError

    from ufarsap_engine.config import validation_lines
    from ufarsap_engine.errors import UserError
    from ufarsap_engine.trainer.data import DataSpec
    from ufarsap_engine.trainer.model_config import TrainConfig, model_preset

    try:
        model_cfg = model_preset(cfg.model, **cfg.model_overrides)
    except ValidationError as exc:
        raise UserError("\n".join(validation_lines(exc, "model_overrides"))) from None
    train_fields = {"steps": cfg.steps, "seed": cfg.seed, "tp": cfg.tp, "pp": cfg.pp, "device": cfg.device,
                    "out_dir": cfg.out, **cfg.train}
    try:
        train_cfg = TrainConfig(**train_fields)
        data_spec = DataSpec(path=cfg.data, holdout_documents=cfg.probe_documents)
    except ValidationError as exc:
        raise UserError("\n".join(validation_lines(exc, "train"))) from None
    return model_cfg, train_cfg, data_spec


def probe_documents(data_spec) -> list[dict]:
    """The held-out documents (never trained on) that rounds score at the long horizon."""
    from ufarsap_engine.trainer.data import heldout_documents

    return [{"id": str(d.doc_id), "text": d.text} for d in heldout_documents(data_spec)]


def _train(prepared: PreparedRun, run_id: str, strategy_id: int, progress) -> dict:
    from ufarsap_engine.alignment.runtime import AlignmentRuntime
    from ufarsap_engine.errors import EngineFailure, UserError
    from ufarsap_engine.trainer import worker

    cfg = prepared.cfg
    model_cfg, train_cfg, data_spec = trainer_configs(cfg)
    runtime_args = dict(run_config=cfg.model_dump(mode="json"), plugins=prepared.host.names,
                        plugin_params=prepared.plugin_params, probe=probe_documents(data_spec),
                        run_id=run_id, strategy_id=strategy_id, registry_url=prepared.registry.url)
    if cfg.nproc == 1:
        runtime = AlignmentRuntime(**runtime_args, host=prepared.host)
        step_progress = lambda step, metrics: progress(step)  # noqa: E731
        train_cfg = train_cfg.model_copy(update={"progress": False})
        return worker.train(model_cfg, train_cfg, data_spec, objective=runtime.objective,
                            callbacks=[runtime, step_progress])
    spec = worker.RunSpec(
        model=model_cfg, train=train_cfg, data=data_spec,
        objective=worker.ImportRef(target="ufarsap_engine.alignment.runtime:build_objective", kwargs=runtime_args),
        callbacks=[worker.ImportRef(target="ufarsap_engine.alignment.runtime:build_callback")])
    spec_path = worker.write_spec(spec, Path(cfg.out) / "run_spec.json")
    rc = worker.launch_torchrun(cfg.nproc, spec_path)
    if rc == 2:
        raise UserError(worker.read_worker_error(cfg.out) or "the workers reported a user error")
    if rc != 0:
        raise EngineFailure(f"torchrun exited with status {rc}; see the output above")
    return json.loads((Path(cfg.out) / "summary.json").read_text())
