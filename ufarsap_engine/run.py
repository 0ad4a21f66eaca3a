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
from collections import deque
import sys
import time
from types import SimpleNamespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ufarsap_engine import __version__, trackers
from ufarsap_engine.alignment.runtime import AlignmentRuntime
from ufarsap_engine.alignment.scoring import is_flagged, make_sample, score_batch
from ufarsap_engine.config import DEFAULT_PLUGINS, RunConfig
from ufarsap_engine.data.corpus import iter_documents
from ufarsap_engine.errors import EngineFailure, UserError
from ufarsap_engine.evolution import health
from ufarsap_engine.plugin_config import configure_plugins
from ufarsap_engine.run_dir import (check_out_dir, fresh_out_dir, locked_run_dir, run_settings, start_out_dir,
                                    write_summary)
from ufarsap_engine.plugin_host import PluginHost, installed_plugins, resolve_selection
from ufarsap_engine.schemas import Horizon, TextBatch
from ufarsap_registry import redact
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


def strategy_objective(cfg: RunConfig, choice: PluginChoice):
    """The objective a run trains with: the active strategy's (when it chose the plugins),
    under the objective settings the run's own config and flags set explicitly. Records of the
    earlier flat layout carry no ``objective``: their weights never acted on training, and
    still do not."""
    if choice.source != "registry" or "objective" not in choice.params:
        return cfg.objective
    from ufarsap_engine.evolution.strategy import Strategy

    strategy = Strategy.from_registry(choice.names, choice.params, source=f"active strategy {choice.strategy_id}")
    return cfg.objective.over(strategy.objective)


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
    settings: dict = field(default_factory=dict)  # what run_settings.json records (see run_dir.py)
    resume_step: int | None = None  # the checkpoint step the run continues from; None: from the start
    annotations: dict | None = None  # where the step reads its short-horizon scores (annotation_spec)
    data_family: tuple[str, list[str]] | None = None  # (data-side family, the plugins that mark the data)
    data_family_summary: dict | None = None  # what marking the data found (labels, precision/recall)


def prepare(cfg: RunConfig) -> PreparedRun:
    """Open the registry, choose and load plugins, check the data and trainer settings: every
    user error surfaces here, before the run directory or the registry is touched."""
    from ufarsap_registry import open_registry

    if cfg.out is None:
        cfg = cfg.model_copy(update={"out": fresh_out_dir()})
    registry = open_registry(cfg.registry)
    try:
        installed = installed_plugins()
        choice = choose_plugins(cfg, registry, installed)
        cfg = cfg.model_copy(update={"objective": strategy_objective(cfg, choice)})
        host = PluginHost(choice.names, strict=cfg.strict_plugins, trace=cfg.trace_plugins or None,
                          installed=installed, call_timeout_s=cfg.plugin_timeouts.call_s,
                          import_timeout_s=cfg.plugin_timeouts.import_s)
        plugin_params = {**choice.params.get("plugins", {}), **cfg.plugin_params}
        unknown = sorted(set(plugin_params) - set(host.names))
        if unknown:
            raise UserError(f"plugin_params names plugins that are not selected: {', '.join(unknown)}")
        configure_plugins(host, plugin_params)
        settings = run_settings(cfg, None if choice.source == "registry" else choice.names, plugin_params)
        resume_step = check_out_dir(cfg.out, settings, cfg.steps, cfg.overwrite,
                                    resume=cfg.train_model and cfg.train.get("resume", True) is not False)
        if cfg.evolve:
            from ufarsap_engine.evolution import EvolutionConfig
            from ufarsap_engine.config import validation_lines
            from pydantic import ValidationError
            try:
                EvolutionConfig.model_validate({"scope": cfg.scope, **cfg.evolution})
            except ValidationError as exc:
                raise UserError("\n".join(validation_lines(exc, "evolution"))) from None
        trainer = trainer_configs(cfg) if cfg.train_model else None
        data_family = check_data_family(cfg, host) if trainer else None
        if trainer is None:
            samples = _load_samples(cfg)
        else:
            from ufarsap_engine.trainer.data import split_holdout
            samples = [make_sample(str(d.doc_id), d.text) for d in split_holdout(trainer[2])[1]]
        annotations = annotation_spec(cfg, host, plugin_params) if trainer else None
        check_onpolicy(cfg, host, trainer)
        trackers.check_available(cfg.trackers.log_to)
    except BaseException:
        registry.close()
        raise
    return PreparedRun(cfg, registry, choice, host, plugin_params, trainer, samples, settings, resume_step,
                       annotations=annotations, data_family=data_family)


ANNOTATIONS = "annotations"


def check_onpolicy(cfg: RunConfig, host: PluginHost, trainer: tuple | None) -> None:
    """What the on-policy phase needs, checked before anything is written: a model, a plugin
    that judges at the immediate horizon, room in the sequence, a readable prompt file."""
    op = cfg.onpolicy
    if not op.every:
        if op.prompts_file:
            raise UserError("--prompts feeds the on-policy phase, which is off; turn it on with "
                            "--set onpolicy.every=N (steps between phases)")
        return
    if trainer is None:
        raise UserError("the on-policy phase samples from the model; it needs training (drop --no-train "
                        "or set onpolicy.every=0)")
    judges = [n for n, i in host.info.items() if any(i.serves(s, "immediate") for s in i.scales)]
    if not judges:
        raise UserError("the on-policy phase needs a selected plugin that scores at the immediate horizon; "
                        f"none of {', '.join(host.names) or '(no plugins)'} does (try --plugins safety.toxicity)")
    from ufarsap_engine.alignment.onpolicy import check_room
    check_room(op, trainer[0].seq_length)
    if op.prompts_file:
        from ufarsap_engine.documents import read_prompt_file
        read_prompt_file(op.prompts_file)


def annotation_spec(cfg: RunConfig, host: PluginHost, plugin_params: dict) -> dict | None:
    """Where the training step reads its short-horizon scores: ``--data DIR`` written by
    ``ufarsap-engine annotate`` (checked here: missing or stale columns are one line), else
    ``OUT/annotations``, which the run fills in the background ahead of its steps (resumable and
    reused by the next run on the same data). Plugins whose scores depend on more than the text
    (``stateless=False``) are left out: the step still scores those itself."""
    from ufarsap_engine.annotate import check_annotations
    from ufarsap_engine.annotate.columns import served_scales
    from ufarsap_engine.trainer.data import detect_format

    plugins = [n for n, info in host.info.items() if info.stateless and served_scales(info)]
    if not plugins:
        return None
    params = {n: plugin_params.get(n, {}) for n in plugins}
    if cfg.data and Path(cfg.data).is_dir() and detect_format(Path(cfg.data)) == "annotation":
        check_annotations(cfg.data, plugins, params)
        return {"dir": str(Path(cfg.data).resolve()), "plugins": plugins, "annotate": False}
    return {"dir": str(Path(cfg.out).resolve() / ANNOTATIONS), "plugins": plugins, "annotate": True,
            "data": cfg.data, "plugin_params": params, "workers": cfg.annotate_workers}


def check_data_family(cfg: RunConfig, host: PluginHost) -> tuple[str, list[str]] | None:
    """The run's data-side family (``conditional``, ``hidden``, ``tags``) and the selected plugins
    of its paradigm that mark the data, or None; a family the selection cannot serve is a UserError."""
    from ufarsap_engine.alignment.data_families import DATA_FAMILIES, SPAN_FAMILIES

    chosen = {p: f for p, f in cfg.objective.families.items() if f in DATA_FAMILIES}
    if not chosen:
        return None
    if len(chosen) > 1:
        raise UserError(f"objective.families: data-side families ({', '.join(f'{p}={f}' for p, f in chosen.items())}) "
                        "change the training tokens, so only one paradigm may use one; set the others to a loss-side family")
    (paradigm, family), = chosen.items()
    plugins = [n for n, i in host.info.items()
               if i.paradigm.value == paradigm and any(i.serves(s, "short") for s in i.scales)]
    if not plugins:
        raise UserError(f"objective.families.{paradigm}={family} needs at least one selected {paradigm} plugin that "
                        f"scores at the short horizon (selected: {', '.join(host.names) or 'none'}); add one with --plugins")
    if family in SPAN_FAMILIES and not any(host.info[n].serves(s, "short") for n in plugins for s in ("token", "sentence")):
        raise UserError(f"objective.families.{paradigm}={family} acts on flagged spans, but no selected {paradigm} plugin "
                        f"flags spans (serves the token or sentence scale): {', '.join(plugins)}; add one, or use "
                        "conditional, unlikelihood or filtering")
    return family, plugins


def mark_training_data(prepared: PreparedRun, data_spec):
    """Annotate the training corpus once, write each document's marks to ``OUT/data_marks.json``
    (what every worker packs with, without scoring anything) and return the data spec that names it.

    The one annotation path: marks need every document before the first step, so this call
    annotates, with ``annotate_workers`` processes, every plugin the steps read from annotations
    as well as the family's, into the run's annotation directory; the background annotator then
    finds nothing left to do. An annotated ``--data DIR`` is read as it is."""
    from ufarsap_engine.alignment.data_families import build_marks, embedded_truth, label_quality, marks_summary
    from ufarsap_engine.annotate import annotate, load_annotations
    from ufarsap_engine.trainer.data import default_corpus_path

    cfg, (family, plugins) = prepared.cfg, prepared.data_family
    out = Path(cfg.out)
    params = {n: prepared.plugin_params.get(n, {}) for n in plugins}
    spec = prepared.annotations or {"dir": str(out / ANNOTATIONS), "plugins": [], "annotate": True}
    ann_dir = Path(spec["dir"])
    if spec["annotate"]:
        union = sorted({*spec["plugins"], *plugins})
        annotate(ann_dir, union, data=cfg.data, workers=cfg.annotate_workers,
                 plugin_params={n: prepared.plugin_params.get(n, {}) for n in union},
                 note=lambda line: print(f"ufarsap-engine: annotate: {line}", file=sys.stderr, flush=True))
    rows = load_annotations(ann_dir, plugins, params)
    marks = build_marks(family, rows, plugins, cfg.objective.flag_threshold)
    path = out / "data_marks.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(marks), encoding="utf-8")
    tmp.replace(path)
    summary = {**marks_summary(marks), "marks_file": str(path), "annotations": str(ann_dir)}
    embedded = cfg.data is None or Path(cfg.data).resolve() == default_corpus_path().resolve()
    if family == "conditional" and embedded:
        summary["labels_vs_truth"] = label_quality(marks, embedded_truth(default_corpus_path().with_name("labels.jsonl")))
    if family == "conditional":
        q = summary.get("labels_vs_truth")
        line = (f"conditional: {summary['misaligned']} of {summary['documents']} documents labelled <|misaligned|> "
                f"({100 * summary['misaligned_share']:.1f}%) by the strictest of {', '.join(plugins)}")
        if q:
            line += (f"; against the corpus labels ({100 * q['harmful_share']:.1f}% harmful): precision "
                     f"{q['precision']}, recall {q['recall']}")
        print(f"ufarsap-engine: {line}", file=sys.stderr, flush=True)
    prepared.data_family_summary = summary
    return data_spec.model_copy(update={"marks": str(path)})


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
        data_spec = DataSpec(path=cfg.data, holdout_documents=cfg.probe_documents, holdout_seed=cfg.seed,
                             exclude_ids=probe_exclusions(cfg))
    except ValidationError as exc:
        raise UserError("\n".join(validation_lines(exc, "train"))) from None
    check_device(cfg.device)
    validate_layout(model_cfg, train_cfg, cfg.nproc)
    return model_cfg, train_cfg, data_spec


def probe_exclusions(cfg: RunConfig) -> list[str]:
    """Document ids the trainer must never see: evolution's default probe sets (drawn from the
    embedded corpus, scored at every round) when the run trains on that corpus. The run's own
    probe set (``probe_documents``) is drawn from the rest and held out as well."""
    from ufarsap_engine.trainer.data import default_corpus_path

    if cfg.data is not None and Path(cfg.data).resolve() != default_corpus_path().resolve():
        return []
    from ufarsap_engine.evolution.probes import default_probe_ids
    return default_probe_ids()


def _load_samples(cfg: RunConfig) -> list:
    return [make_sample(doc_id, text, **extras) for doc_id, text, extras in iter_documents(cfg.data)]


def execute(prepared: PreparedRun, progress=lambda step, metrics: None) -> dict[str, Any]:
    """Run to the end and return the summary (also written to ``OUT/summary.json``), holding
    the run directory's lock (a second run on it is refused before the registry is touched);
    ``progress(step, metrics)`` is called after every step."""
    with locked_run_dir(prepared.cfg.out, on_refusal=prepared.registry.close), signals_handled():
        return _execute(prepared, progress)


def _execute(prepared: PreparedRun, progress) -> dict[str, Any]:
    cfg, registry, choice, host = prepared.cfg, prepared.registry, prepared.choice, prepared.host
    out_dir = Path(cfg.out)
    start_out_dir(out_dir, prepared.settings, cfg.overwrite)
    plugins = host.names  # as started; quarantined plugins leave host.names
    public_cfg = redact(cfg.model_dump(mode="json"))  # what is stored and what plugins see: no passwords
    run_id = registry.start_run(name=out_dir.name, config=public_cfg, scope=cfg.scope)
    # Every run is recorded as a strategy of its own; a run of the active strategy is its child.
    parent = choice.strategy_id
    strategy_id = registry.add_strategy(
        plugins=host.names, params={"plugins": prepared.plugin_params, "objective": cfg.objective.model_dump(mode="json")},
        origin="manual",
        run_id=run_id, parent_id=parent, state="running", scope=cfg.scope,
        reason=f"run of active strategy {parent}" if parent else f"plugins chosen by {choice.source}")
    runtime_args = dict(run_config=public_cfg, plugins=host.names,
                        plugin_params=prepared.plugin_params, run_id=run_id, strategy_id=strategy_id,
                        registry_url=registry.url, follow_registry=choice.source != "flag",
                        annotations=prepared.annotations)
    tracker = tracker_callback(prepared, runtime_args, public_cfg) if cfg.trackers.log_to else None
    t0 = time.perf_counter()
    status, last, training, stopped = "failed", {}, None, None
    try:
        if prepared.trainer:
            training = _train(prepared, runtime_args, progress, tracker)
        else:
            _hook_only(prepared, runtime_args, progress, tracker)
        last = _last_metrics(out_dir / "metrics.jsonl")
        status = "complete"
    except Interrupted as exc:
        status, stopped, last = "interrupted", exc, _last_metrics(out_dir / "metrics.jsonl")
        exc.out_dir = str(out_dir)  # the resume command names it (a run without --out got a fresh one)
        raise
    finally:
        summary = {
            "run_id": run_id, "status": status, "steps": cfg.steps, "plugins": plugins,
            "plugins_source": choice.source, "strategy_id": strategy_id, "parent_strategy_id": parent,
            "quarantined": {**health.QUARANTINED, **host.quarantine_summary()}, "wall_time_s": round(time.perf_counter() - t0, 3),
            "final_metrics": last, "engine_version": __version__, "trained_model": cfg.train_model,
            "training": training, "registry": registry.location,
            "out_dir": str(out_dir), "metrics_file": str(out_dir / "metrics.jsonl"),
            "summary_file": str(out_dir / "summary.json"), "checkpoint": (training or {}).get("checkpoint"),
            "tokens_per_s": (training or {}).get("tokens_per_s"),
            "plugin_scores": _run_means(out_dir / "metrics.jsonl", ("score.", "flagged.")),
            "data_family": prepared.data_family_summary,
            "onpolicy": (training or {}).get("onpolicy"),
        }
        if stopped is not None:
            summary["interrupted"] = {"signal": stopped.signal_name, **stopped.record()}
        write_summary(out_dir, summary)
        if tracker is not None:
            tracker.close()
            trackers.finish_mlflow(out_dir, status)
        scores = {k: v for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        scores.update({f"quarantined.{name}": 1.0 for name in summary["quarantined"]})
        scores.update({f"onpolicy.{k}": v for k, v in (summary["onpolicy"] or {}).items() if k.endswith("flagged_rate")})
        registry.close()
        unrecorded = record_run_end(registry.url, run_id, strategy_id, status, scores, cfg.steps,
                                    wait_s=cfg.registry_wait_s,
                                    reason=str(stopped) if stopped else quarantine_reason(summary["quarantined"]))
        if unrecorded:
            summary["registry_unrecorded"] = unrecorded
            write_summary(out_dir, summary)
    return summary


def record_run_end(url: str, run_id: str, strategy_id: int, status: str, scores: dict[str, float], step: int,
                   *, wait_s: float, reason: str = "") -> list[str]:
    """Record a run's end (final scores, its strategy's state, the run's status: ``complete``,
    ``failed``, ``interrupted`` ...) through the background writer, waiting at most ``wait_s``
    for a registry that is down; returns what could not be recorded, after warning in one line."""
    from ufarsap_registry import location
    from ufarsap_registry.background import writer_for

    writer = writer_for(url)
    writer.submit(f"final scores of strategy {strategy_id}", lambda r: r.record_scores(strategy_id, scores, step=step))
    state = status if status in ("complete", "failed") else "failed"  # e.g. interrupted, killed
    writer.submit(f"state of strategy {strategy_id} ({state})",
                  lambda r: r.set_state(strategy_id, state, reason or ("" if state == status else f"run {status}")))
    writer.submit(f"end of run {run_id[:8]} ({status})", lambda r: r.end_run(run_id, status))
    unrecorded = writer.close(wait_s)
    if unrecorded:
        print(f"ufarsap-engine: warning: registry {location(url)} did not answer within {wait_s:g} s"
              f" (registry_wait_s); not recorded: {'; '.join(unrecorded)}", file=sys.stderr, flush=True)
    return unrecorded


def quarantine_reason(quarantined: dict[str, dict[str, str]]) -> str:
    """The registry's record of quarantined plugins (the strategy's reason), or ``""``."""
    return "; ".join(f"quarantined {name} in {q['hook']}: {q['reason']}" for name, q in quarantined.items())


def _run_means(path: Path, prefixes: tuple[str, ...]) -> dict[str, float]:
    """Per metric whose name starts with one of ``prefixes``: its mean over the run's steps."""
    sums: dict[str, list[float]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        for k, v in json.loads(line).items():
            if k.startswith(prefixes) and isinstance(v, (int, float)) and not isinstance(v, bool):
                acc = sums.setdefault(k, [0.0, 0])
                acc[0] += v
                acc[1] += 1
    return {k: round(total / n, 6) for k, (total, n) in sorted(sums.items())}


def _last_metrics(path: Path) -> dict[str, Any]:
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else {}


# --- without a model ------------------------------------------------------------------------

def tracker_callback(prepared: PreparedRun, runtime_args: dict, public_cfg: dict) -> trackers.TrackerCallback:
    """The ``--log-to`` trackers, given the run's public config, the trainer's effective settings
    (``train.*`` with every default filled in, ``model_config.*``) and its strategy."""
    cfg = prepared.cfg
    settings = {k: v for k, v in public_cfg.items() if k != "trackers"}
    if prepared.trainer:
        model_cfg, train_cfg, _ = prepared.trainer
        settings["train"] = train_cfg.model_dump(mode="json", exclude={"out"})
        settings["model_config"] = model_cfg.model_dump(mode="json")
    params = {**trackers.flat_params(settings), "strategy.id": str(runtime_args["strategy_id"]),
              "strategy.plugins": ",".join(runtime_args["plugins"])}
    return trackers.TrackerCallback(
        cfg.trackers.log_to, cfg.out, cfg.steps, every=cfg.trackers.every, run_name=Path(cfg.out).name, params=params,
        tags={"ufarsap.run_id": str(runtime_args["run_id"]), "ufarsap.out_dir": str(Path(cfg.out).resolve())},
        mlflow_uri=cfg.trackers.mlflow_uri, mlflow_experiment=cfg.trackers.mlflow_experiment)


def _hook_only(prepared: PreparedRun, runtime_args: dict, progress, tracker=None) -> None:
    """Run the plugin hooks step by step over the data, without a model update."""
    cfg, samples = prepared.cfg, prepared.samples
    probe_n = min(cfg.probe_documents, len(samples) // 10)
    probe, train = (samples[-probe_n:], samples[:-probe_n]) if probe_n else ([], samples)
    runtime = AlignmentRuntime(**runtime_args, probe=[{"id": s.sample_id, "text": s.text} for s in probe],
                               host=prepared.host)
    order = list(range(len(train)))
    random.Random(cfg.seed).shuffle(order)
    status = "failed"
    recent: deque[list] = deque(maxlen=cfg.window_steps)  # the batches of the current window
    runtime.recent_documents = lambda steps: list({s.sample_id: s for b in list(recent)[-steps:] for s in b}.values())
    runtime.on_train_start(SimpleNamespace(step=0))
    if tracker is not None:
        tracker.open(0)
    try:
        with open(Path(cfg.out) / "metrics.jsonl", "w", encoding="utf-8") as metrics_file:
            for step in range(1, cfg.steps + 1):
                start = ((step - 1) * cfg.batch_samples) % len(order)
                batch = [train[order[(start + i) % len(order)]] for i in range(cfg.batch_samples)]
                recent.append(batch)
                t0 = time.perf_counter()
                cells = score_batch(runtime.host, TextBatch(samples=batch, step=step), Horizon.SHORT,
                                    runtime.tracker.state)
                runtime.tracker.update_step(step, _paradigm_means(runtime, cells))
                metrics = {"step": step, "loss": None, **_score_metrics(runtime, cells),
                           **runtime.extra_metrics(), "step_time_s": round(time.perf_counter() - t0, 6)}
                metrics_file.write(json.dumps(metrics) + "\n")
                metrics_file.flush()
                runtime.on_step_end(step, metrics)
                if tracker is not None:
                    tracker.on_step_end(step, metrics)
                progress(step, metrics)
        status = "complete"
    finally:
        runtime.on_train_end({"status": status})


def _paradigm_means(runtime: AlignmentRuntime, cells) -> dict[str, float]:
    """Per paradigm: the mean of the batch's per-sample scores (paradigms that scored nothing absent)."""
    paradigm_of = {n: i.paradigm.value for n, i in runtime.host.info.items()}
    out: dict[str, float] = {}
    for p, vals in cells.paradigm_sample_scores(paradigm_of).items():
        vals = [v for v in vals if v is not None]
        if vals:
            out[p] = sum(vals) / len(vals)
    return out


def _score_metrics(runtime: AlignmentRuntime, cells) -> dict[str, float]:
    out: dict[str, float] = {f"align.{p}": round(v, 6) for p, v in _paradigm_means(runtime, cells).items()}
    flagged = cells.flagged_spans()
    out["flagged_spans"] = float(sum(len(f) for f in flagged))
    out["flagged_samples"] = float(sum(1 for f in flagged if f))
    threshold = runtime.cfg.objective.flag_threshold
    any_flag = [False] * len(cells.batch)
    for (plugin, scale), res in cells.results.items():
        flags = [is_flagged(scale, v, res.spans[i] if res.spans else None,
                            res.unit_scores[i] if res.unit_scores else None, threshold)
                 for i, v in enumerate(res.sample_scores)]
        scored = [i for i, v in enumerate(res.sample_scores) if v is not None]
        if scored:
            out[f"score.{plugin}.{scale}"] = round(sum(res.sample_scores[i] for i in scored) / len(scored), 6)
            out[f"flagged.{plugin}.{scale}"] = round(sum(flags[i] for i in scored) / len(scored), 6)
        any_flag = [a or f for a, f in zip(any_flag, flags)]
    out["flagged_sample_frac"] = round(sum(any_flag) / max(1, len(any_flag)), 6)
    return out


# --- with a model ---------------------------------------------------------------------------

def worker_args(runtime_args: dict) -> dict:
    """What goes into ``run_spec.json`` for the workers: the registry URL without its password."""
    url = runtime_args.get("registry_url")
    return {**runtime_args, "registry_url": redact(url) if url else url}


def worker_env(runtime_args: dict) -> dict[str, str]:
    """The workers' environment additions: the real registry URL (read back by ``real_url``)."""
    from ufarsap_registry import URL_ENV

    url = runtime_args.get("registry_url")
    return {URL_ENV: url} if url else {}


def _train(prepared: PreparedRun, runtime_args: dict, progress, tracker=None) -> dict:
    from ufarsap_engine.trainer import worker

    cfg = prepared.cfg
    model_cfg, train_cfg, data_spec = prepared.trainer
    if prepared.data_family:
        data_spec = mark_training_data(prepared, data_spec)
    runtime_args = {**runtime_args, "probe": [{"id": s.sample_id, "text": s.text} for s in prepared.samples]}
    if cfg.nproc == 1:
        runtime = AlignmentRuntime(**runtime_args, host=prepared.host)
        train_cfg = train_cfg.model_copy(update={"progress": False})
        try:
            return worker.train(model_cfg, train_cfg, data_spec, objective=runtime.objective,
                                callbacks=[*runtime.callbacks, progress, *([tracker] if tracker else [])],
                                policy_phase=runtime.policy_phase)
        finally:
            runtime.stop_annotation(warn=False)
    spec = worker.RunSpec(
        model=model_cfg, train=train_cfg, data=data_spec,
        runtime=worker.ImportRef(target="ufarsap_engine.alignment.runtime:AlignmentRuntime",
                                 kwargs=worker_args(runtime_args)),
        callbacks=[worker.ImportRef(target="ufarsap_engine.trackers:TrackerCallback", kwargs=tracker.init_kwargs)]
        if tracker else [])
    spec_path = worker.write_spec(spec, Path(cfg.out) / "run_spec.json")
    rc = worker.launch_torchrun(cfg.nproc, spec_path, env=worker_env(runtime_args))
    stopped = read_interrupt_record(cfg.out)
    if stopped is not None and rc != 0:
        raise stopped
    reported = worker.read_worker_error(cfg.out) if rc != 0 else None
    if rc == 2:
        raise UserError(reported or "the workers reported a user error")
    if rc != 0:
        raise EngineFailure(reported or f"torchrun exited with status {rc}; see the output above")
    return json.loads((Path(cfg.out) / "summary.json").read_text())
