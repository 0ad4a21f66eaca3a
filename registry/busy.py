"""Waiting on a busy SQLite registry: say so, and by whom, instead of hanging silently.

SQLite lets one writer in at a time. A process that wants to write waits in slices (the
connection's busy timeout); after the first slice it says once that the registry is busy and
who holds the lock - the process ids from the kernel's lock table (``/proc/locks``) and, when
such a process is a registered run, its name and last heartbeat - and after
``UFARSAP_REGISTRY_BUSY_TIMEOUT`` seconds (default 60) in all it gives up with ``RegistryBusy``.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from sqlalchemy.engine import Engine

from .errors import RegistryBusy

log = logging.getLogger("ufarsap_registry")

BUSY_ENV = "UFARSAP_REGISTRY_BUSY_TIMEOUT"
DEFAULT_BUSY_S = 60.0
#: SQLite's lock bytes: the WAL write lock (in the -shm file) and PENDING..SHARED (main file).
WAL_WRITE_LOCK = 120
PENDING_BYTE = 0x40000000


def busy_limit_s() -> float:
    try:
        return max(0.0, float(os.environ.get(BUSY_ENV, DEFAULT_BUSY_S)))
    except ValueError:
        return DEFAULT_BUSY_S


def sqlite_file(engine: Engine) -> Path | None:
    db = engine.url.database
    if not db or db == ":memory:":
        return None
    if db.startswith("file:"):
        db = db[5:].split("?", 1)[0]
        from urllib.parse import unquote
        db = unquote(db)
    return Path(db).absolute()


def lock_holders(path: Path) -> list[int]:
    """Pids (other than ours) holding SQLite's write lock on ``path``, from ``/proc/locks``."""
    targets: dict[int, tuple[int, int]] = {}  # inode -> byte range that means "writing"
    for file, span in ((path, (PENDING_BYTE, 2**63)), (Path(f"{path}-shm"), (WAL_WRITE_LOCK, WAL_WRITE_LOCK))):
        try:
            targets[file.stat().st_ino] = span
        except OSError:
            pass
    pids: list[int] = []
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return pids
    for line in lines:
        fields = line.split()
        if "->" in fields:  # a process waiting for a lock, not holding it
            continue
        try:
            kind, pid, where, start = fields[3], int(fields[4]), fields[5], int(fields[6])
            end = fields[7]
            inode = int(where.split(":")[2])
        except (IndexError, ValueError):
            continue
        span = targets.get(inode)
        if span is None or kind != "WRITE" or pid in (os.getpid(), -1):
            continue
        last = 2**63 if end == "EOF" else int(end)
        if start <= span[1] and last >= span[0] and pid not in pids:
            pids.append(pid)
    return pids


def _runs_of(path: Path, pids: list[int]) -> dict[int, str]:
    """What the registry itself says about those processes (read-only, never waiting)."""
    found: dict[int, str] = {}
    try:
        con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=0.2)
    except sqlite3.Error:
        return found
    try:
        rows = con.execute(
            "SELECT pid, name, id, heartbeat_at FROM runs WHERE status = 'running' AND host = ?",
            (socket.gethostname()[:255],),
        ).fetchall()
    except sqlite3.Error:
        rows = []
    finally:
        con.close()
    for pid, name, run_id, beat in rows:
        if pid in pids:
            age = ""
            try:
                seen = datetime.fromisoformat(str(beat)).replace(tzinfo=UTC)
                age = f", last heartbeat {int((datetime.now(UTC) - seen).total_seconds())} s ago"
            except ValueError:
                pass
            found[pid] = f"run '{name}' {run_id[:8]}{age}"
    return found


def holders(engine: Engine) -> str:
    """Who holds the write lock, as far as can be known: 'pid 123 (run 'x' 1a2b3c4d, ...)'."""
    path = sqlite_file(engine)
    pids = lock_holders(path) if path else []
    if not pids:
        return "another process"
    runs = _runs_of(path, pids) if path else {}
    return ", ".join(f"pid {p} ({runs[p]})" if p in runs else f"pid {p}" for p in pids)


class BusyWait:
    """One transaction's wait for the lock: a notice after the first slice, then a limit."""

    def __init__(self, engine: Engine, slice_s: float):
        self.engine, self.slice_s = engine, slice_s
        self.started: float | None = None
        self.limit = busy_limit_s()

    def locked(self) -> None:
        """Called after each 'database is locked'; raises ``RegistryBusy`` past the limit."""
        now = time.monotonic()
        if self.started is None:
            self.started = now - self.slice_s  # the first slice was spent inside SQLite
            if self.limit > self.slice_s:
                log.warning(f"registry {sqlite_file(self.engine)} is busy: {holders(self.engine)} holds its"
                            f" write lock; waiting up to {self.limit:.0f} s ({BUSY_ENV} sets the wait)")
        waited = now - self.started
        if waited >= self.limit:
            raise RegistryBusy(
                f"registry {sqlite_file(self.engine)} is busy: its write lock was held by"
                f" {holders(self.engine)} for more than {waited:.0f} s; nothing was changed - try again"
                f" when it is free, or wait longer with {BUSY_ENV}=SECONDS"
            )
