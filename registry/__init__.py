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
from .connection import check_connection, display_url, location, make_engine, real_url, redact
from .errors import (
    InvalidArgument,
    InvalidTransition,
    NoRegistry,
    NotARegistry,
    RegistryBusy,
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
    "NoRegistry",
    "NotARegistry",
    "Registry",
    "RegistryBusy",
    "RegistryError",
    "RegistryUnavailable",
    "RunNotFound",
    "SchemaOutOfDate",
    "SchemaTooNew",
    "StrategyNotFound",
    "StrategyRecord",
    "default_url",
    "display_url",
    "location",
    "open_registry",
    "real_url",
    "redact",
    "upgrade",
]

URL_ENV = "UFARSAP_REGISTRY_URL"


def default_url() -> str:
    """``$UFARSAP_REGISTRY_URL``, else SQLite at ``./strategies_db/registry.sqlite``.

    Only the URL: nothing is created here (reading commands must not leave an empty
    ``strategies_db/`` behind); writers create the folder when they open the registry.
    """
    url = os.environ.get(URL_ENV)
    if url:
        return url
    return f"sqlite:///{Path.cwd() / DEFAULT_FOLDER / 'registry.sqlite'}"


DEFAULT_FOLDER = "strategies_db"


def _connect(url: str, *, create: bool, read_only: bool = False) -> Engine:
    path = sqlite_path(url)
    if path is not None and not path.exists():
        if not create:
            # Connecting would create an empty file; say what is wrong without leaving one behind.
            raise no_registry(url)
        if path.parent.name == DEFAULT_FOLDER and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url, read_only=read_only)
    check_connection(engine, url)
    return engine


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (absolute), None for other databases and in-memory SQLite."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).absolute()


def no_registry(url: str) -> NoRegistry:
    return NoRegistry(
        f"no registry at {location(url)}: check --registry / UFARSAP_REGISTRY_URL, or create one with"
        f" `ufarsap-engine registry upgrade --registry {display_url(url)}` (any `ufarsap-engine run`"
        " creates it too)"
    )


def open_registry(url: str | None = None, *, create: bool = True, read_only: bool = False) -> Registry:
    """Open the registry at ``url`` (default: ``default_url()``), checking its schema version.

    A new empty database is initialised (unless ``create=False``); an older schema raises
    ``SchemaOutOfDate`` and a newer one ``SchemaTooNew`` - neither is changed. ``read_only``
    (for queries) never creates or migrates anything and does not even switch a SQLite file
    to WAL: a missing registry raises ``NoRegistry``, a database without the registry's
    schema ``SchemaOutOfDate``, and a read-only file can still be read.
    """
    url = url or default_url()
    create = create and not read_only
    engine = _connect(url, create=create, read_only=read_only)
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
