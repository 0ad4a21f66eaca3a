"""Short transactions with retries for the conflicts that concurrent writers cause.

Retried: PostgreSQL serialization failures and deadlocks, SQLite "database is locked" (after
each slice of its busy timeout, saying once that the registry is busy and by whom, up to a
bounded total wait: ``busy.py``), and - only where the caller asks - a conflict on the
one-active-strategy index, which means another process activated a strategy in the same scope
first.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .busy import BusyWait
from .models import ONE_ACTIVE_INDEX

T = TypeVar("T")

ATTEMPTS = 12
PG_RETRYABLE = {"40001", "40P01"}  # serialization_failure, deadlock_detected
PG_UNIQUE_VIOLATION = "23505"
PG_FK_VIOLATION = "23503"


def is_active_conflict(error: BaseException) -> bool:
    orig = getattr(error, "orig", None)
    if getattr(orig, "sqlstate", None) == PG_UNIQUE_VIOLATION:
        diag = getattr(orig, "diag", None)
        return getattr(diag, "constraint_name", None) == ONE_ACTIVE_INDEX
    if isinstance(orig, sqlite3.IntegrityError):
        # SQLite names the indexed column, not the index: "... failed: strategies.scope".
        return "UNIQUE constraint failed: strategies.scope" in str(orig)
    return False


def is_missing_reference(error: BaseException) -> bool:
    """A foreign key pointed at a row that does not exist."""
    orig = getattr(error, "orig", None)
    if getattr(orig, "sqlstate", None) == PG_FK_VIOLATION:
        return True
    return isinstance(orig, sqlite3.IntegrityError) and "FOREIGN KEY constraint failed" in str(orig)


def is_sqlite_locked(error: BaseException) -> bool:
    orig = getattr(error, "orig", None)
    return isinstance(orig, sqlite3.OperationalError) and "database is locked" in str(orig)


def is_retryable(error: BaseException, *, active_conflicts: bool) -> bool:
    if not isinstance(error, exc.DBAPIError):
        return False
    if getattr(error.orig, "sqlstate", None) in PG_RETRYABLE or is_sqlite_locked(error):
        return True
    return active_conflicts and is_active_conflict(error)


def transact(
    engine: Engine, work: Callable[[Session], T], *, active_conflicts: bool = False
) -> T:
    """Run ``work(session)`` in one transaction, retrying it whole on a retryable conflict."""
    from .connection import SQLITE_BUSY_SLICE_MS

    busy = BusyWait(engine, SQLITE_BUSY_SLICE_MS / 1000)
    conflicts = 0
    for attempt in itertools.count():
        try:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                return work(session)
        except exc.DBAPIError as error:
            if is_sqlite_locked(error):
                busy.locked()  # raises RegistryBusy once the wait is over
                time.sleep(random.uniform(0, 0.05))
                continue
            conflicts += 1
            if conflicts == ATTEMPTS or not is_retryable(error, active_conflicts=active_conflicts):
                raise
        time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))
    raise AssertionError("unreachable")
