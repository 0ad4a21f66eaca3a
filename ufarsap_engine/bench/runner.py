"""``ufarsap-engine bench``: train and evaluate every method x seed, resumably.

Each (method, seed) trains in a fresh directory ``OUT/runs/<method>/seed<i>`` (same data, same
steps and batch, same seed for every method of a seed), is evaluated, and its record is written
into ``OUT/results.json`` as soon as it finishes; a rerun skips finished records and starts
unfinished ones afresh. Seeds are the outer loop, so a run stopped early holds whole seeds.
After every record the report (``OUT/report.md``, PNGs) is rewritten from ``results.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from ufarsap_engine.bench.presets import BENCH_PLUGINS, METHODS, Preset

RESULTS = "results.json"
SEED_BASE = 1000


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def load_results(out: Path) -> dict[str, Any]:
    p = out / RESULTS
    if p.exists():
        return json.loads(p.read_text(encoding="utf-8"))
    return {"runs": []}


def save_results(out: Path, results: dict[str, Any]) -> None:
    _atomic_write(out / RESULTS, json.dumps(_clean(results), indent=1, default=str))


class _PeakRSS:
    """Peak resident memory of this process while training (sampled by a thread every 50 ms)."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except Exception:  # noqa: BLE001
                return

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=1)


def _read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _train_metrics(rows: list[dict]) -> dict[str, float]:
    """Figures of the training log: last-10-step means and the emergence measurements."""
    out: dict[str, float] = {}
    if not rows:
        return out
    tail = rows[-10:]

    def mean(key, rs=tail):
        vals = [r[key] for r in rs if isinstance(r.get(key), (int, float))]
        return sum(vals) / len(vals) if vals else None

    for key in ("loss", "lm_loss", "loss.lm", "reward.unified", "synergy", "flagged_token_frac"):
        v = mean(key)
        if v is not None:
            out[f"train.{key}"] = v
    steady = rows[1:] or rows
    out["train.tokens_per_s"] = mean("tokens_per_s", steady)
    out["train.step_time_s"] = mean("step_time_s", steady)
    last = rows[-1]
    for key in ("emergence.score", "emergence.novelty", "emergence.effectiveness", "emergence.generalizability",
                "emergence.indicator", "evolution.round"):
        if isinstance(last.get(key), (int, float)):
            out[key] = float(last[key])
    return {k: v for k, v in out.items() if v is not None}


def run_config(method, preset: Preset, seed_index: int, run_dir: Path, data, registry_url: str):
    from ufarsap_engine.config import load_config

    seed = SEED_BASE + seed_index
    cfg: dict[str, Any] = {
        "plugins": list(BENCH_PLUGINS) if (method.plugins or method.conditional or method.filtered) else [],
        "data": str(data.train_path), "steps": preset.steps, "seed": seed, "out": str(run_dir),
        "registry": registry_url, "scope": f"bench-{method.name}-s{seed_index}"[:64],
        "tp": preset.tp, "pp": preset.pp, "nproc": preset.nproc, "device": preset.device,
        "model": preset.model, "model_overrides": dict(preset.model_overrides),
        "train": {"progress": False, **preset.train},
        "round_steps": preset.round_steps or max(1, preset.steps // 2),
        "probe_documents": preset.probe_documents,
        "evolve": method.evolve, "objective": dict(method.objective), "onpolicy": dict(method.onpolicy),
    }
    if method.evolve:
        cfg["evolution"] = dict(preset.evolution)
    return load_config(None, [], **cfg)


def _corpus_scores(out: Path, records: list[dict]) -> list[float]:
    """Scores of the training corpus by the bench plugins (the strictest plugin's, so below the
    threshold exactly when one flags it), computed once per benchmark for conditional training
    and document filtering."""
    from ufarsap_engine.alignment.conditional import score_documents
    from ufarsap_engine.plugin_host import PluginHost

    path = out / "data" / "conditional_scores.json"
    ids = [r.get("id") for r in records]
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("ids") == ids and saved.get("plugins") == BENCH_PLUGINS and saved.get("rule") == "strictest":
            return saved["scores"]
    host = PluginHost(list(BENCH_PLUGINS))
    for name in host.names:
        host.call("ufarsap_configure", only=[name], params={})
    t0 = time.perf_counter()
    scores = score_documents(host, records)
    _atomic_write(path, json.dumps({"plugins": BENCH_PLUGINS, "rule": "strictest", "ids": ids, "scores": scores,
                                    "seconds": time.perf_counter() - t0}))
    return scores


def run_one(method_name: str, seed_index: int, preset: Preset, out: Path, data, judge,
            step_cb: Callable[[int], None] = lambda s: None) -> dict[str, Any]:
    """Train + evaluate one (method, seed); returns its record."""
    from ufarsap_engine.bench import data as bench_data
    from ufarsap_engine.bench.evaluate import evaluate_checkpoint
    from ufarsap_engine.run import execute, prepare

    method = METHODS[method_name]
    run_dir = out / "runs" / method_name / f"seed{seed_index}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # unfinished earlier attempt: start afresh
    bench_data.seed_run_dir(run_dir, data)
    registry_url = f"sqlite:///{(out / 'registry.sqlite').resolve()}"
    cfg = run_config(method, preset, seed_index, run_dir, data, registry_url)
    record: dict[str, Any] = {"method": method_name, "seed": seed_index, "run_seed": cfg.seed,
                              "run_dir": str(run_dir.relative_to(out)), "status": "failed"}
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if method.conditional or method.filtered:
        from ufarsap_engine.alignment.conditional import prepare_conditional_run, read_records

        records = read_records(data.train_path)
        ts = time.perf_counter()
        scores = _corpus_scores(out, records)
    if method.conditional:
        cfg, corpus = prepare_conditional_run(cfg, preset.conditional_threshold, scores, records)
        extra["conditional"] = {**corpus.as_dict(), "path": str(Path(corpus.path).relative_to(out)),
                                "scoring_s_this_run": time.perf_counter() - ts}
        extra["conditional"]["scoring_s_once"] = json.loads(
            (out / "data" / "conditional_scores.json").read_text()).get("seconds")
    if method.filtered:
        kept = [r for r, sc in zip(records, scores) if sc >= preset.conditional_threshold]
        path = run_dir / "filtered_corpus.jsonl"
        _atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept))
        cfg = cfg.model_copy(update={"plugins": [], "plugin_params": {}, "data": str(path), "evolve": False})
        extra["filtered"] = {"documents": len(records), "kept": len(kept), "removed": len(records) - len(kept),
                             "threshold": preset.conditional_threshold, "scoring_s_this_run": time.perf_counter() - ts}
    prepared = prepare(cfg)
    with _PeakRSS() as mem:
        if preset.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        summary = execute(prepared, progress=lambda step, metrics: step_cb(step))
    wall = time.perf_counter() - t0
    training = summary.get("training") or {}
    metrics: dict[str, Any] = {
        "train.wall_s": wall,
        "train.time_s": training.get("train_time_s"),
        "train.peak_rss_mb": mem.peak / 2**20 if preset.nproc == 1 else None,
        "train.rss_growth_mb": (mem.peak - mem.start) / 2**20 if preset.nproc == 1 else None,
        "train.tokens_seen": training.get("tokens_seen"),
        **_train_metrics(_read_metrics(run_dir / "metrics.jsonl")),
    }
    if preset.device == "cuda" and preset.nproc == 1:
        import torch

        metrics["train.peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if method.evolve:
        extra["evolution"] = _evolution_report(registry_url, summary["run_id"], cfg.scope)
    ev = evaluate_checkpoint(training.get("checkpoint") or str(run_dir / "checkpoints"), data, judge,
                             preset.evaluation, seed=cfg.seed, conditional=method.conditional,
                             tag_aware=method.tag_aware, device=preset.device)
    samples = ev.pop("samples", {})
    metrics.update(ev)
    record.update(status="complete", metrics=metrics, samples=samples, run_id=summary.get("run_id"),
                  plugins=summary.get("plugins"), wall_s=time.perf_counter() - t0, **extra)
    return record


def _evolution_report(url: str, run_id: str, scope: str) -> dict[str, Any]:
    from ufarsap_engine.evolution.report import report
    from ufarsap_registry import open_registry

    with open_registry(url) as reg:
        r = report(reg, run_id=run_id, out_png=None, scope=scope)
    keep = ("rounds", "candidates", "evaluated", "failed", "rejected", "integrated", "discovery_rate",
            "effectiveness", "generalisability", "by_category")
    return {k: r.get(k) for k in keep}


def run_bench(preset: Preset, out: str | Path, methods: list[str], seeds: int, *, show_progress: bool = True,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the benchmark; returns the results dict (also ``OUT/results.json``)."""
    from ufarsap_engine.bench import data as bench_data
    from ufarsap_engine.bench.judges import default_judge, validate
    from ufarsap_engine.bench.report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    results = load_results(out)
    if results.get("runs") and (results.get("preset"), results.get("steps")) != (preset.name, preset.steps):
        from ufarsap_engine.errors import UserError

        raise UserError(f"{out} holds results of preset '{results.get('preset')}' ({results.get('steps')} steps); "
                        f"give another --out for preset '{preset.name}'")
    results.update(preset=preset.name, steps=preset.steps, seeds=seeds, methods=methods,
                   command=f"ufarsap-engine bench --preset {preset.name} --out {out}"
                           + (f" --seeds {seeds}" if seeds != preset.seeds else "")
                           + (f" --methods {','.join(methods)}" if list(methods) != list(preset.methods) else ""),
                   plugins=BENCH_PLUGINS, evaluation=preset.evaluation.__dict__, model=preset.model,
                   device=preset.device, note=preset.note)
    data = bench_data.build(out, n_clean=preset.n_clean, n_bad_per_kind=preset.n_bad_per_kind,
                            n_adv_per_kind=preset.n_adv_per_kind, max_train_documents=preset.max_train_documents,
                            vocab_size=preset.vocab_size, harm_repeat=preset.harm_repeat)
    judge = default_judge()
    results["data"] = data.summary()
    if "judge_validation" not in results:
        results["judge_validation"] = validate(judge)
    results.setdefault("machine", _machine())
    save_results(out, results)
    done = {(r["method"], r["seed"]) for r in results["runs"] if r.get("status") == "complete"}
    todo = [(m, s) for s in range(seeds) for m in methods if (m, s) not in done]
    if done:
        log(f"bench: {len(done)} finished runs kept, {len(todo)} to run")
    progress = None
    if show_progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        progress.start()
        overall = progress.add_task("bench", total=len(done) + len(todo), completed=len(done))
        steps_task = progress.add_task("train", total=preset.steps)
    t_bench = time.perf_counter()
    try:
        for method, seed in todo:
            if progress is not None:
                progress.update(steps_task, description=f"{method} seed {seed}", completed=0)
                cb = lambda s: progress.update(steps_task, completed=s)  # noqa: E731
            else:
                cb = lambda s: None  # noqa: E731
            t0 = time.perf_counter()
            try:
                rec = run_one(method, seed, preset, out, data, judge, cb)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - record and go on with the next run
                rec = {"method": method, "seed": seed, "status": "failed",
                       "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
            results["runs"] = [r for r in results["runs"] if (r["method"], r["seed"]) != (method, seed)] + [rec]
            save_results(out, results)
            m = rec.get("metrics", {})
            log(f"bench: {method} seed {seed} {rec['status']} in {time.perf_counter() - t0:.0f}s"
                + (f" (adv flag {m.get('adversarial.flag_rate', float('nan')):.3f}, "
                   f"ppl {m.get('heldout_ppl', float('nan')):.1f})" if rec["status"] == "complete"
                   else f": {rec.get('error')}"))
            if progress is not None:
                progress.advance(overall)
            try:
                write_report(out)
            except Exception as exc:  # noqa: BLE001 - the report is rewritten at the end anyway
                log(f"bench: report not written yet: {type(exc).__name__}: {exc}")
    finally:
        if progress is not None:
            progress.stop()
    results = load_results(out)
    if todo:  # a rerun that had nothing to do keeps the figure of the invocation that ran
        results["bench_wall_s_last_invocation"] = time.perf_counter() - t_bench
    save_results(out, results)
    write_report(out)
    return results


def _machine() -> dict[str, Any]:
    import platform

    import psutil
    import torch

    return {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "torch": torch.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
