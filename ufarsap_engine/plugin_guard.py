"""The boundary around plugin code: time limits, caught exits, no registry writes.

Plugin code (imports and hook calls) runs on a daemon worker thread, and the engine waits for
it with a time limit. A call that does not return in time is abandoned: the worker is left
behind (a daemon thread never keeps the process alive) and the next call gets a fresh one.
Whatever the plugin raises, ``SystemExit`` and ``KeyboardInterrupt`` included, comes back as
:class:`PluginRaised`, so it is always the plugin's failure and never ends the engine. A real
Ctrl-C lands on the main thread, which is only waiting, so it still interrupts the run as usual.

While plugin code runs, SQL statements that would change the strategy registry are refused
(an SQLAlchemy event on every engine), and the attempt is reported as the plugin's failure
even if the plugin swallows the error.
"""

from __future__ import annotations

import queue
import re
import threading
from typing import Any, Callable

from sqlalchemy import event
from sqlalchemy.engine import Engine

_local = threading.local()
_READ_ONLY = re.compile(r"^\s*(SELECT|PRAGMA|EXPLAIN|SHOW|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|SET)\b", re.I)
_REGISTRY_TABLES: frozenset[str] | None = None


class PluginTimeout(Exception):
    """Plugin code did not return within its time limit."""


class PluginRaised(Exception):
    """Plugin code raised; ``error`` is what it raised (any ``BaseException``)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class RegistryWriteRefused(PermissionError):
    """Raised inside plugin code that tries to change the strategy registry."""


def in_plugin_code() -> bool:
    return getattr(_local, "depth", 0) > 0


def _run_marked(fn: Callable[..., Any], args: tuple) -> Any:
    _local.depth = getattr(_local, "depth", 0) + 1
    _local.violation = None
    try:
        result = fn(*args)
    finally:
        _local.depth -= 1
    if _local.violation:
        raise RegistryWriteRefused(_local.violation)
    return result


class _Worker:
    """One daemon thread with a job queue and a result queue (abandoned, not reused, after a
    timeout, so a late result never reaches the next call)."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._loop, daemon=True, name="ufarsap-plugin").start()

    def _loop(self) -> None:
        while True:
            fn, args = self.jobs.get()
            try:
                self.results.put((True, _run_marked(fn, args)))
            except BaseException as exc:  # noqa: BLE001 - everything a plugin raises is its failure
                self.results.put((False, exc))


class PluginRunner:
    """Runs plugin callables on a daemon worker with a time limit (``None`` or 0: no limit, and
    the call runs inline on the calling thread)."""

    def __init__(self) -> None:
        self._worker: _Worker | None = None

    def run(self, fn: Callable[..., Any], args: tuple = (), timeout_s: float | None = None) -> Any:
        if not timeout_s or in_plugin_code():  # nested calls from plugin code run where they are
            try:
                return _run_marked(fn, args)
            except BaseException as exc:  # noqa: BLE001
                raise PluginRaised(exc) from None
        if self._worker is None:
            self._worker = _Worker()
        worker = self._worker
        worker.jobs.put((fn, args))
        try:
            ok, value = worker.results.get(timeout=timeout_s)
        except queue.Empty:
            self._worker = None  # abandoned: it may never return
            raise PluginTimeout(f"did not return within {timeout_s:g} s") from None
        except BaseException:  # a real Ctrl-C while waiting: the call's result is no longer wanted
            self._worker = None
            raise
        if not ok:
            raise PluginRaised(value)
        return value


def _registry_tables() -> frozenset[str]:
    global _REGISTRY_TABLES
    if _REGISTRY_TABLES is None:
        from ufarsap_registry.models import Base
        _REGISTRY_TABLES = frozenset(Base.metadata.tables)
    return _REGISTRY_TABLES


@event.listens_for(Engine, "before_cursor_execute")
def _refuse_registry_writes(conn, cursor, statement, parameters, context, executemany) -> None:
    if not in_plugin_code() or _READ_ONLY.match(statement or ""):
        return
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", statement.lower()))
    if words & _registry_tables():
        what = " ".join(statement.split()[:3])
        _local.violation = f"tried to write the strategy registry ({what} ...); plugins may only read it"
        raise RegistryWriteRefused(_local.violation)
