"""One ``ufarsap-engine run``: config -> plugins -> registry -> steps -> summary.

The steps are the trainer's (``ufarsap_engine/trainer/loop.py``) when a model is trained;
with ``train_model = false`` the plugin hooks run over the data without a model update (to check
plugins or score a corpus). Either way the same :class:`AlignmentRuntime` keeps a(t), calls the
lifecycle hooks and follows the registry, and the run and the strategy it ran are recorded in
the SQL strategy registry.
"""

from __future__ import annotations

import json
import random
import time
from types import SimpleNamespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ufarsap_engine import __version__
from ufarsap_engine.alignment.runtime import AlignmentRuntime
from ufarsap_engine.alignment.scoring import make_sample, score_batch
from ufarsap_engine.config import DEFAULT_PLUGINS, RunConfig
from ufarsap_engine.data.corpus import iter_documents
from ufarsap_engine.errors import EngineFailure, UserError
from ufarsap_engine.plugin_host import PluginHost, installed_plugins, resolve_selection
from ufarsap_engine.rundir import locked_run_dir, write_summary
from ufarsap_engine.schemas import Horizon, TextBatch
from ufarsap_engine.trainer.interrupt import Interrupted, signals_handled
from ufarsap_engine.trainer.interrupt import read_record as read_interrupt_record


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
    if cfg.plugins:
        only_exclusions = all(p.startswith("no:") for p in cfg.plugins)
        return PluginChoice(resolve_selection(cfg.plugins, installed, base=base if only_exclusions else ()), "flag")
    if cfg.plugins == []:
        return PluginChoice([], "flag")
    if active:
        missing = [p for p in active.plugins if p not in installed]
        if missing:
            raise UserError(f"active strategy {active.id} needs plugins that are not installed: "
                            f"{', '.join(missing)} (pip install them, or `ufarsap-engine registry activate` another)")
        return PluginChoice(list(active.plugins), "registry", active.id, dict(active.params))
    return PluginChoice(resolve_selection(DEFAULT_PLUGINS, installed), "default")


@dataclass
class PreparedRun:
    """Everything checked and loaded before a run writes anything."""

    cfg: RunConfig
    registry: Any
    choice: PluginChoice
    host: PluginHost
    plugin_params: dict[str, dict[str, Any]]
    trainer: tuple | None  # (model_cfg, train_cfg, data_spec) when a model is trained
    samples: list  # hook-only: the data; with a model: the held-out probe documents


def prepare(cfg: RunConfig) -> PreparedRun:
    """Open the registry, choose and load plugins, check the data and trainer settings: every
    user error surfaces here, before the run directory or the registry is touched."""
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
            raise UserError(f"plugin_params names plugins that are not selected: {', '.join(unknown)}")
        for name in host.names:
            host.call("ufarsap_configure", only=[name], params=plugin_params.get(name, {}))
        if cfg.evolve:
            from ufarsap_engine.evolution import EvolutionConfig
            from ufarsap_engine.config import validation_lines
            from pydantic import ValidationError
            try:
                EvolutionConfig.model_validate({"scope": cfg.scope, **cfg.evolution})
            except ValidationError as exc:
                raise UserError("\n".join(validation_lines(exc, "evolution"))) from None
        trainer = trainer_configs(cfg) if cfg.train_model else None
        if trainer is None:
            samples = _load_samples(cfg)
        else:
            from ufarsap_engine.trainer.data import split_holdout
            samples = [make_sample(str(d.doc_id), d.text) for d in split_holdout(trainer[2])[1]]
    except BaseException:
        registry.close()
        raise
    return PreparedRun(cfg, registry, choice, host, plugin_params, trainer, samples)


def trainer_configs(cfg: RunConfig):
    """The trainer's model, training and data configs from the run config, checked (layout,
    device, data) without starting any process."""
    from pydantic import ValidationError

    from ufarsap_engine.config import validation_lines
    from ufarsap_engine.trainer.data import DataSpec
    from ufarsap_engine.trainer.model_config import TrainConfig, model_preset, validate_layout
    from ufarsap_engine.trainer.parallel import check_device

    try:
        model_cfg = model_preset(cfg.model, **cfg.model_overrides)
    except ValidationError as exc:
        raise UserError("\n".join(validation_lines(exc, "model_overrides"))) from None
    train_fields = {"steps": cfg.steps, "seed": cfg.seed, "tp": cfg.tp, "pp": cfg.pp, "device": cfg.device,
                    "out_dir": cfg.out, **cfg.train}
    try:
        train_cfg = TrainConfig(**train_fields)
        data_spec = DataSpec(path=cfg.data, holdout_documents=cfg.probe_documents, holdout_seed=cfg.seed)
    except ValidationError as exc:
        raise UserError("\n".join(validation_lines(exc, "train"))) from None
    check_device(cfg.device)
    validate_layout(model_cfg, train_cfg, cfg.nproc)
    return model_cfg, train_cfg, data_spec


def _load_samples(cfg: RunConfig) -> list:
    return [make_sample(doc_id, text, **extras) for doc_id, text, extras in iter_documents(cfg.data)]


def execute(prepared: PreparedRun, progress=lambda step: None) -> dict[str, Any]:
    """Run to the end and return the summary (also written to ``OUT/summary.json``), holding
    the run directory's lock (a second run on it is refused before the registry is touched)."""
    with locked_run_dir(prepared.cfg.out, on_refusal=prepared.registry.close), signals_handled():
        return _execute(prepared, progress)


def _execute(prepared: PreparedRun, progress) -> dict[str, Any]:
    cfg, registry, choice, host = prepared.cfg, prepared.registry, prepared.choice, prepared.host
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    plugins = host.names  # as started; quarantined plugins leave host.names
    run_id = registry.start_run(name=out_dir.name, config=cfg.model_dump(mode="json"), scope=cfg.scope)
    # Every run is recorded as a strategy of its own; a run of the active strategy is its child.
    parent = choice.strategy_id
    strategy_id = registry.add_strategy(
        plugins=host.names, params={**choice.params, "plugins": prepared.plugin_params}, origin="manual",
        run_id=run_id, parent_id=parent, state="running", scope=cfg.scope,
        reason=f"run of active strategy {parent}" if parent else f"plugins chosen by {choice.source}")
    runtime_args = dict(run_config=cfg.model_dump(mode="json"), plugins=host.names,
                        plugin_params=prepared.plugin_params, run_id=run_id, strategy_id=strategy_id,
                        registry_url=registry.url, follow_registry=choice.source != "flag")
    t0 = time.perf_counter()
    status, last, training, stopped = "failed", {}, None, None
    try:
        if prepared.trainer:
            training = _train(prepared, runtime_args, progress)
        else:
            _hook_only(prepared, runtime_args, progress)
        last = _last_metrics(out_dir / "metrics.jsonl")
        status = "complete"
    except Interrupted as exc:
        status, stopped, last = "interrupted", exc, _last_metrics(out_dir / "metrics.jsonl")
        raise
    finally:
        summary = {
            "run_id": run_id, "status": status, "steps": cfg.steps, "plugins": plugins,
            "plugins_source": choice.source, "strategy_id": strategy_id, "parent_strategy_id": parent,
            "quarantined": host.quarantined, "wall_time_s": round(time.perf_counter() - t0, 3),
            "final_metrics": last, "engine_version": __version__, "trained_model": cfg.train_model,
            "training": training,
        }
        if stopped is not None:
            summary["interrupted"] = {"signal": stopped.signal_name, **stopped.record()}
        write_summary(out_dir, summary)
        scores = {k: v for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        registry.record_scores(strategy_id, scores, step=cfg.steps)
        registry.set_state(strategy_id, "failed" if stopped else status, reason=str(stopped or ""))
        registry.end_run(run_id, status)
        registry.close()
    return summary


def _last_metrics(path: Path) -> dict[str, Any]:
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else {}


# --- without a model ------------------------------------------------------------------------

def _hook_only(prepared: PreparedRun, runtime_args: dict, progress) -> None:
    """Run the plugin hooks step by step over the data, without a model update."""
    cfg, samples = prepared.cfg, prepared.samples
    probe_n = min(cfg.probe_documents, len(samples) // 10)
    probe, train = (samples[-probe_n:], samples[:-probe_n]) if probe_n else ([], samples)
    runtime = AlignmentRuntime(**runtime_args, probe=[{"id": s.sample_id, "text": s.text} for s in probe],
                               host=prepared.host)
    order = list(range(len(train)))
    random.Random(cfg.seed).shuffle(order)
    status = "failed"
    runtime.on_train_start(SimpleNamespace(step=0))
    try:
        with open(Path(cfg.out) / "metrics.jsonl", "w", encoding="utf-8") as metrics_file:
            for step in range(1, cfg.steps + 1):
                start = ((step - 1) * cfg.batch_samples) % len(order)
                batch = [train[order[(start + i) % len(order)]] for i in range(cfg.batch_samples)]
                t0 = time.perf_counter()
                metrics = {"step": step, "loss": None,
                           **_score_metrics(runtime, score_batch(runtime.host, TextBatch(samples=batch, step=step),
                                                                 Horizon.SHORT, runtime.tracker.state)),
                           **runtime.extra_metrics(), "step_time_s": round(time.perf_counter() - t0, 6)}
                metrics_file.write(json.dumps(metrics) + "\n")
                metrics_file.flush()
                runtime.on_step_end(step, metrics)
                progress(step)
        status = "complete"
    finally:
        runtime.on_train_end({"status": status})


def _score_metrics(runtime: AlignmentRuntime, cells) -> dict[str, float]:
    paradigm_of = {n: i.paradigm.value for n, i in runtime.host.info.items()}
    out: dict[str, float] = {}
    for p, vals in cells.paradigm_sample_scores(paradigm_of).items():
        vals = [v for v in vals if v is not None]
        if vals:
            out[f"align.{p}"] = round(sum(vals) / len(vals), 6)
    flagged = cells.flagged_spans()
    out["flagged_spans"] = float(sum(len(f) for f in flagged))
    out["flagged_samples"] = float(sum(1 for f in flagged if f))
    for (plugin, scale), res in cells.results.items():
        vals = [v for v in res.sample_scores if v is not None]
        if vals:
            out[f"score.{plugin}.{scale}"] = round(sum(vals) / len(vals), 6)
    return out


# --- with a model ---------------------------------------------------------------------------

def _train(prepared: PreparedRun, runtime_args: dict, progress) -> dict:
    from ufarsap_engine.trainer import worker

    cfg = prepared.cfg
    model_cfg, train_cfg, data_spec = prepared.trainer
    runtime_args = {**runtime_args, "probe": [{"id": s.sample_id, "text": s.text} for s in prepared.samples]}
    if cfg.nproc == 1:
        runtime = AlignmentRuntime(**runtime_args, host=prepared.host)
        train_cfg = train_cfg.model_copy(update={"progress": False})
        return worker.train(model_cfg, train_cfg, data_spec, objective=runtime.objective,
                            callbacks=[runtime, lambda step, metrics: progress(step)])
    spec = worker.RunSpec(
        model=model_cfg, train=train_cfg, data=data_spec,
        objective=worker.ImportRef(target="ufarsap_engine.alignment.runtime:build_objective", kwargs=runtime_args),
        callbacks=[worker.ImportRef(target="ufarsap_engine.alignment.runtime:build_callback")])
    spec_path = worker.write_spec(spec, Path(cfg.out) / "run_spec.json")
    rc = worker.launch_torchrun(cfg.nproc, spec_path)
    stopped = read_interrupt_record(cfg.out)
    if stopped is not None and rc != 0:
        raise stopped
    if rc == 2:
        raise UserError(worker.read_worker_error(cfg.out) or "the workers reported a user error")
    if rc != 0:
        raise EngineFailure(f"torchrun exited with status {rc}; see the output above")
    return json.loads((Path(cfg.out) / "summary.json").read_text())
