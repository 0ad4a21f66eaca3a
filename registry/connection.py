"""Turning a URL into a configured SQLAlchemy engine, and connection failures into one line.

SQLite: WAL (readers never block the writer), a busy timeout in short slices (the caller
says that the registry is busy and bounds the total wait: ``busy.py``), foreign keys on, our own
``BEGIN`` so that write transactions take the write lock up front (``BEGIN IMMEDIATE``) and
wait for it, instead of failing with "database is locked" when a read turns into a write.
PostgreSQL: pre-ping (survives server restarts), a connect timeout, an application name that
shows in ``pg_stat_activity``. Both: pooled connections are never reused across ``fork``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Engine, make_url

from .errors import RegistryUnavailable

SQLITE_BUSY_TIMEOUT_MS = 30_000  # for the switch to WAL of a new file
#: How long SQLite itself waits for a lock before ``transact`` looks again (and speaks up).
SQLITE_BUSY_SLICE_MS = 1_000
PG_CONNECT_TIMEOUT_S = 10
#: Execution option that makes a SQLite transaction start with ``BEGIN IMMEDIATE``.
SQLITE_BEGIN = "ufarsap_sqlite_begin"


def display_url(url: str | URL) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", str(url))


_PASSWORD_IN_URL = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@/\s]+@")


def redact(value: Any) -> Any:
    """``value`` (JSON-like) with every password inside a URL replaced by ``***``: what may be
    stored (``runs.config``, ``run_spec.json``), handed to plugins or printed."""
    if isinstance(value, str):
        return _PASSWORD_IN_URL.sub(r"\1***@", value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def real_url(url: str) -> str:
    """The URL to connect with, for one whose password was redacted: the password travels to
    worker processes only in ``$UFARSAP_REGISTRY_URL`` (never in a file or a plugin's view)."""
    if "***@" not in url:
        return url
    secret = os.environ.get("UFARSAP_REGISTRY_URL", "")
    if secret and redact(secret) == url:
        return secret
    raise unavailable(url, "its password is not available here: pass the registry URL to this"
                      " process in UFARSAP_REGISTRY_URL")


def location(url: str | URL) -> str:
    """Where the registry lives, for the line every registry command prints: the absolute
    file of a SQLite URL, the URL with its password hidden otherwise."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        return display_url(url)
    db = parsed.database
    if parsed.get_backend_name() == "sqlite" and db and db != ":memory:" and not db.startswith("file:"):
        return str(Path(db).absolute())
    return display_url(parsed)


def first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def unavailable(url: str | URL, reason: str) -> RegistryUnavailable:
    return RegistryUnavailable(f"registry {display_url(url)} is unavailable: {reason}")


def make_engine(url: str | URL, *, read_only: bool = False) -> Engine:
    """A configured engine; raises ``RegistryUnavailable`` for bad URLs or missing drivers.

    ``read_only``: SQLite files are opened with ``mode=ro`` (nothing is written, not even the
    switch to WAL, and read-only files can be read); PostgreSQL sessions are read-only.
    """
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        raise unavailable(url, "not a database URL (e.g. sqlite:///path/registry.sqlite or"
                          " postgresql+psycopg://user:password@host/db)") from None
    kwargs: dict[str, Any] = {}
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        if "application_name" not in parsed.query:
            connect_args["application_name"] = "ufarsap-engine registry"
        kwargs.update(pool_pre_ping=True, connect_args=connect_args)
    if backend == "sqlite" and read_only and parsed.database and parsed.database != ":memory:" \
            and not parsed.database.startswith("file:"):
        ro = f"file:{quote(str(Path(parsed.database).absolute()))}?mode=ro"
        parsed = parsed.set(database=ro).update_query_dict({"uri": "true"})
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except exc.NoSuchModuleError:
        raise unavailable(
            url, f"unknown database type {parsed.drivername!r} (use sqlite or postgresql+psycopg)"
        ) from None
    except ImportError as error:
        raise unavailable(url, f"its database driver is not installed ({first_line(error)})") from None
    except exc.ArgumentError as error:
        raise unavailable(url, first_line(error)) from None
    if backend == "sqlite":
        _configure_sqlite(engine, read_only=read_only)
    elif backend == "postgresql" and read_only:
        _read_only_sessions(engine)
    _guard_against_fork(engine)
    return engine


def check_connection(engine: Engine, url: str | URL) -> None:
    """Connect once, so that an unreachable database fails here with a one-line message."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except exc.DBAPIError as error:
        engine.dispose()
        raise unavailable(url, first_line(error)) from None


def _enable_wal(cursor: Any) -> None:
    """Switch to WAL (persistent in the file, so usually a no-op). Switching a new database
    needs an exclusive lock, and SQLite can answer "database is locked" at once, without the
    busy handler, while other processes open the same new file: retry within the busy timeout."""
    import sqlite3
    import time

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _configure_sqlite(engine: Engine, *, read_only: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_SLICE_MS}")
            if not read_only:
                _enable_wal(cursor)
                cursor.execute("PRAGMA synchronous = NORMAL")  # durable per commit in WAL mode
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _read_only_sessions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        dbapi_conn.autocommit = autocommit


def _guard_against_fork(engine: Engine) -> None:
    """SQLAlchemy's recipe: a forked child must not use its parent's pooled connections."""

    @event.listens_for(engine, "connect")
    def _remember_pid(_dbapi_conn: Any, record: Any) -> None:
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _check_pid(_dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if record.info.get("pid") != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None
            raise exc.DisconnectionError("connection was opened in another process")


def write_engine(engine: Engine) -> Engine:
    """The same engine (same pool), with SQLite write transactions starting IMMEDIATE."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
    return engine
