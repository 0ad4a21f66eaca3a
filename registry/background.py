"""Registry writes that must never stop or block training: a queue and one writer thread.

Heartbeats and a run's final records go through ``BackgroundWriter``. The thread writes them
in order; when the registry is unreachable (server down or paused, network, a busy SQLite
file) it keeps what it could not write, says so once, and retries with exponential backoff
until the registry is back. The training thread only appends to the queue. ``close(wait_s)``
waits a bounded time for the queue to drain and returns what was still not recorded, so the
run can end with one line saying what is missing instead of hanging on a dead server.
A write the registry refuses for good (a user error such as an unknown run) is dropped with
a warning rather than retried forever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from sqlalchemy import exc

from .errors import RegistryBusy, RegistryError, RegistryUnavailable

log = logging.getLogger("ufarsap_registry")

FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0
#: What a registry outage looks like; anything else is a refusal and is not retried.
TRANSIENT = (RegistryUnavailable, RegistryBusy, exc.OperationalError, exc.InterfaceError, OSError)


@dataclass
class _Write:
    what: str  # for the closing warning: "end of run 1a2b3c4d (complete)"
    op: Callable[[object], None]  # takes an open Registry
    key: Hashable | None = None  # writes with the same key replace each other (heartbeats)


class BackgroundWriter:
    """Writes to the registry at ``url`` from a daemon thread; see the module docstring."""

    def __init__(self, url: str):
        self.url = url
        self._pending: deque[_Write] = deque()
        self._cond = threading.Condition()
        self._busy = False  # a write is in flight
        self._closed = False
        self._registry = None
        self.failures = 0
        self._thread = threading.Thread(target=self._loop, daemon=True, name="ufarsap-registry-writer")
        self._thread.start()

    # -- the training side -----------------------------------------------------------------

    def submit(self, what: str, op: Callable[[object], None], key: Hashable | None = None) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("registry writer is closed")
            if key is not None:
                self._pending = deque(w for w in self._pending if w.key != key)
            self._pending.append(_Write(what, op, key))
            self._cond.notify_all()

    def heartbeat(self, run_id: str) -> None:
        self.submit(f"heartbeat of run {run_id[:8]}", lambda reg: reg.heartbeat(run_id), key=("heartbeat", run_id))

    def pending(self) -> list[str]:
        with self._cond:
            return [w.what for w in self._pending]

    def close(self, wait_s: float) -> list[str]:
        """Wait up to ``wait_s`` for every write; returns what was not recorded (empty: all)."""
        deadline = time.monotonic() + max(0.0, wait_s)
        with self._cond:
            while self._pending and time.monotonic() < deadline:
                self._cond.wait(min(0.2, max(0.0, deadline - time.monotonic())))
            self._closed = True
            missing = [w.what for w in self._pending if w.key is None or not w.key[0] == "heartbeat"]
            self._pending.clear()
            self._cond.notify_all()
        if not self._busy and self._registry is not None:
            self._registry.close()
        _forget(self)
        return missing

    # -- the writer thread -----------------------------------------------------------------

    def _loop(self) -> None:
        delay = FIRST_RETRY_S
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                write = self._pending[0]
                self._busy = True
            try:
                write.op(self._open())
                ok, retry = True, False
            except TRANSIENT as error:
                ok, retry = False, True
                self._lost_connection(error, write)
            except (RegistryError, ValueError) as error:
                ok, retry = False, False
                log.warning(f"registry refused the {write.what}: {error}")
            except Exception as error:  # never let the thread die: log and move on
                ok, retry = False, False
                log.warning(f"registry write failed ({write.what}): {type(error).__name__}: {error}")
            with self._cond:
                self._busy = False
                if not retry and self._pending and self._pending[0] is write:
                    self._pending.popleft()
                self._cond.notify_all()
                if ok:
                    if self.failures:
                        log.warning(f"registry is reachable again; {len(self._pending)} write(s) still queued")
                    self.failures, delay = 0, FIRST_RETRY_S
                elif retry:
                    retry_at = time.monotonic() + delay  # new writes arriving do not cut the backoff short
                    while not self._closed and time.monotonic() < retry_at:
                        self._cond.wait(retry_at - time.monotonic())
                    delay = min(delay * 2, MAX_RETRY_S)

    def _open(self):
        if self._registry is None:
            from . import open_registry
            self._registry = open_registry(self.url, create=False)
        return self._registry

    def _lost_connection(self, error: BaseException, write: _Write) -> None:
        from .connection import first_line

        if self._registry is not None:
            self._registry.close()
            self._registry = None
        if self.failures == 0:
            log.warning(f"registry unreachable ({first_line(error)}); training goes on, the {write.what} and"
                        " later writes are retried in the background")
        self.failures += 1


_WRITERS: dict[str, BackgroundWriter] = {}
_LOCK = threading.Lock()


def writer_for(url: str) -> BackgroundWriter:
    """This process's writer for ``url`` (the run and its alignment runtime share one)."""
    with _LOCK:
        writer = _WRITERS.get(url)
        if writer is None or writer._closed:
            writer = _WRITERS[url] = BackgroundWriter(url)
        return writer


def _forget(writer: BackgroundWriter) -> None:
    with _LOCK:
        if _WRITERS.get(writer.url) is writer:
            del _WRITERS[writer.url]
