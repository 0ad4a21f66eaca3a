"""The run directory (``--out``): one process at a time, and what a failed attempt may write.

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
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from ufarsap_engine.errors import UserError

LOCK_FILE = ".lock"
SUMMARY = "summary.json"


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
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            on_refusal()
            raise UserError(f"run directory {out} is in use by pid {holder} (wait for that run to end, "
                            "or choose another --out)") from None
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
