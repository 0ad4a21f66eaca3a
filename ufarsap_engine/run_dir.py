"""Which directory a run writes to, and when it may continue a run already there.

A run without ``--out`` gets a fresh timestamped directory under ``runs/``. A run into an
existing run directory resumes it only when the settings that shape the result are the same
(``run_settings.json``, written when a run starts: plugins, objective, model, data, seed, trainer
settings ...; ``steps`` may grow). Otherwise it is refused with what differs, so that a run never
silently continues another one (and its scores never land on the wrong strategy); ``--overwrite``
discards the old run's files and starts over.

Two runs on one directory would append to the same ``metrics.jsonl`` and delete each other's
checkpoint temp folders, so a run holds an exclusive ``fcntl`` lock on ``OUT/.lock`` for its
whole life. The lock belongs to the open file, so the operating system drops it when the process
dies, even by ``kill -9``: a stale lock file never blocks. The holder's pid is written into the
file for the message a second run gets.

A failed (or interrupted) attempt to continue a completed run must not replace that run's
``summary.json``: its summary goes to ``summary.<status>.json`` beside it instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ufarsap_engine.errors import UserError

SETTINGS_FILE = "run_settings.json"
LOCK_FILE = ".lock"
SUMMARY = "summary.json"
#: What a run writes into its directory (removed by ``--overwrite``; nothing else is touched).
RUN_FILES = ("metrics.jsonl", "summary.json", "summary.failed.json", "summary.interrupted.json", "interrupted.json", "tokenizer.json", "run_spec.json", "worker_error.json", "data_marks.json", SETTINGS_FILE)
RUN_DIRS = ("checkpoints", "annotations")
#: Trainer settings that do not change what is trained (output, logging, saving, timeouts).
_NEUTRAL_TRAIN_KEYS = {"progress", "log_interval", "save_interval", "save_final", "keep_last", "dist_timeout_s",
                       "resume", "out_dir", "steps", "log_param_norm", "save_interval_s"}


def fresh_out_dir(root: str | Path = "runs", now: datetime | None = None) -> str:
    """``runs/YYYYmmdd-HHMMSS`` (UTC), with a ``-N`` suffix if that already exists."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / stamp
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = Path(f"{base}-{n}")
    return str(candidate)


def run_settings(cfg, plugins: list[str] | None, plugin_params: dict) -> dict[str, Any]:
    """The settings that shape a run's result. ``plugins=None``: the run follows the registry's
    active strategy (which may change during the run), so no fixed set is recorded. Execution
    fields of the model (e.g. ``attention_backend``) do not shape the result and are left out."""
    from ufarsap_engine.trainer.model_config import EXECUTION_FIELDS

    return json.loads(json.dumps({
        "plugins": sorted(plugins) if plugins is not None else "the registry's active strategy",
        "plugin_params": plugin_params,
        "objective": cfg.objective.model_dump(mode="json"),
        "model": cfg.model,
        "model_overrides": {k: v for k, v in cfg.model_overrides.items() if k not in EXECUTION_FIELDS},
        "data": str(Path(cfg.data).resolve()) if cfg.data else "embedded corpus",
        "seed": cfg.seed,
        "train": {k: v for k, v in cfg.train.items() if k not in _NEUTRAL_TRAIN_KEYS},
        "train_model": cfg.train_model,
        "probe_documents": cfg.probe_documents,
        "batch_samples": cfg.batch_samples,
        "window_steps": cfg.window_steps,
        "round_steps": cfg.round_steps,
        "evolve": cfg.evolve,
        "evolution": cfg.evolution,
        "scope": cfg.scope,
        # only when on, so that runs from before the phase existed still resume
        **({"onpolicy": cfg.onpolicy.model_dump(mode="json")} if cfg.onpolicy.every else {}),
    }, default=str))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flat(v, key) if isinstance(v, dict) and v else {key: v})
    return out


def differences(old: dict, new: dict) -> list[str]:
    """``key old -> new`` for every setting that differs (nested keys dotted)."""
    a, b = _flat(old), _flat(new)
    missing = object()

    def show(v):
        return "(unset)" if v is missing else json.dumps(v)

    return [f"{k} {show(a.get(k, missing))} -> {show(b.get(k, missing))}"
            for k in sorted(set(a) | set(b)) if a.get(k, missing) != b.get(k, missing)]


def _checkpoint_step(out: Path) -> int | None:
    from ufarsap_engine.trainer.checkpoint import find_latest

    latest = find_latest(out / "checkpoints")
    m = re.match(r"iter_(\d+)$", latest.name) if latest is not None else None
    return int(m.group(1)) if m else None


def has_run(out: Path) -> bool:
    return any((out / f).exists() for f in ("metrics.jsonl", "summary.json", SETTINGS_FILE, *RUN_DIRS))


def check_out_dir(out: str | Path, settings: dict, steps: int, overwrite: bool = False,
                  resume: bool = True) -> int | None:
    """Decide whether a run with ``settings`` may use ``out``; nothing is written.

    Returns the checkpoint step the run resumes from (``None``: it starts fresh; always with
    ``resume=False``, the trainer's ``train.resume``). Raises a
    one-line ``UserError`` when ``out`` holds a run with other settings (unless ``overwrite``)
    or one already past ``steps``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    refuse_if_in_use(out)  # before comparing settings: a live run's directory is simply busy
    if overwrite or not has_run(out):
        return None
    how = (f"give another --out (or none, for a fresh directory), rerun with the old settings to resume it, "
           f"or add --overwrite to discard it")
    path = out / SETTINGS_FILE
    if not path.exists():
        raise UserError(f"{out} holds a run whose settings were not recorded, so it cannot be resumed safely; {how}")
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} cannot be read ({type(exc).__name__}); {how}") from None
    diff = differences(old, settings)
    if diff:
        shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise UserError(f"{out} holds a run with other settings ({shown}); {how}")
    step = _checkpoint_step(out) if resume else None
    if step is not None and step > steps:
        raise UserError(f"{out} is already at step {step}, past --steps {steps}; give --steps {step} or more "
                        "to continue it, or another --out")
    return step


def start_out_dir(out: str | Path, settings: dict, overwrite: bool = False) -> None:
    """Create ``out`` (removing the old run's files with ``overwrite``) and record the settings."""
    out = Path(out)
    if overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=1, sort_keys=True), encoding="utf-8")

def _in_use(out: Path, fd: int) -> UserError:
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    return UserError(f"run directory {out} is in use by pid {holder} (wait for that run to end, "
                     "or choose another --out)")


def refuse_if_in_use(out: str | os.PathLike) -> None:
    """Raise the "in use by pid N" error if a live process holds ``out``'s lock; takes nothing."""
    out = Path(out)
    try:
        fd = os.open(out / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody ever ran here, or it cannot be opened (the real lock says)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(out, fd) from None
    finally:
        os.close(fd)


@contextmanager
def locked_run_dir(out_dir: str | os.PathLike, on_refusal: Callable[[], None] = lambda: None):
    """Hold the run directory's lock (creating the directory); a second holder gets one line
    "run directory X is in use by pid N" (exit 2) after ``on_refusal()`` ran."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except BaseException:
        on_refusal()
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_refusal()
            raise _in_use(out, fd) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield out
    finally:
        os.close(fd)  # releases the lock


def write_summary(out_dir: str | os.PathLike, summary: dict) -> Path:
    """Write ``OUT/summary.json``, unless this attempt says it did not complete (``status``
    failed, interrupted ...) and the one there records a completed run: then
    ``OUT/summary.<status>.json``. Returns the path written."""
    out = Path(out_dir)
    path = out / SUMMARY
    status = summary.get("status")
    if status not in (None, "complete") and _status_of(path) == "complete":
        path = out / f"summary.{status}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, path)
    return path


def _status_of(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
