"""The SQL strategy registry: scored strategies, their lineage, and each scope's active one.

Embedded SQLite under ``strategies_db/`` by default (one machine); any SQLAlchemy URL such as
``postgresql+psycopg://user:pw@host/db`` for many writer processes and machines.

    with open_registry() as reg:
        sid = reg.add_strategy(plugins=["safety.toxicity"], params={"w": 0.5}, origin="seed")
        reg.record_scores(sid, {"toxicity": 0.02})
        reg.activate(sid)
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from . import migrate
from .connection import check_connection, make_engine
from .errors import (
    InvalidArgument,
    InvalidTransition,
    NotARegistry,
    RegistryError,
    RegistryUnavailable,
    RunNotFound,
    SchemaOutOfDate,
    SchemaTooNew,
    StrategyNotFound,
)
from .models import LIFECYCLES, ORIGINS, RUN_STATUSES, STATES
from .records import LineageEvent, StrategyRecord
from .store import Registry

__all__ = [
    "LIFECYCLES",
    "ORIGINS",
    "RUN_STATUSES",
    "STATES",
    "InvalidArgument",
    "InvalidTransition",
    "LineageEvent",
    "NotARegistry",
    "Registry",
    "RegistryError",
    "RegistryUnavailable",
    "RunNotFound",
    "SchemaOutOfDate",
    "SchemaTooNew",
    "StrategyNotFound",
    "StrategyRecord",
    "default_url",
    "open_registry",
    "upgrade",
]

URL_ENV = "UFARSAP_REGISTRY_URL"


def default_url() -> str:
    """``$UFARSAP_REGISTRY_URL``, else SQLite at ``./strategies_db/registry.sqlite``."""
    url = os.environ.get(URL_ENV)
    if url:
        return url
    folder = Path.cwd() / "strategies_db"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'registry.sqlite'}"


def _connect(url: str, *, create: bool) -> Engine:
    if not create and _missing_sqlite_file(url):
        # Connecting would create an empty file; say what is wrong without leaving one behind.
        raise migrate.missing_schema(url)
    engine = make_engine(url)
    check_connection(engine, url)
    return engine


def _missing_sqlite_file(url: str) -> bool:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    db = parsed.database
    return (
        parsed.get_backend_name() == "sqlite"
        and bool(db)
        and db != ":memory:"
        and not db.startswith("file:")
        and not Path(db).exists()
    )


def open_registry(url: str | None = None, *, create: bool = True) -> Registry:
    """Open the registry at ``url`` (default: ``default_url()``), checking its schema version.

    A new empty database is initialised (unless ``create=False``); an older schema raises
    ``SchemaOutOfDate`` and a newer one ``SchemaTooNew`` - neither is changed.
    """
    url = url or default_url()
    engine = _connect(url, create=create)
    try:
        with engine.connect() as conn:
            status = migrate.status(conn)
        if migrate.check(status, url, create=create):
            migrate.upgrade_to_head(engine, url)
    except BaseException:
        engine.dispose()
        raise
    return Registry(engine, url)


def upgrade(url: str | None = None) -> tuple[str | None, str]:
    """Migrate the registry at ``url`` to this engine's schema; returns (old rev, new rev)."""
    url = url or default_url()
    engine = _connect(url, create=True)
    try:
        return migrate.upgrade_to_head(engine, url)
    finally:
        engine.dispose()
