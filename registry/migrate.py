"""Schema versions: which revision a database is at, and moving it to head.

Migrations run programmatically from the package folder (no alembic.ini on the user's side)
and stamp their own version table, ``ufarsap_alembic_version``, so the registry can share a
database with other Alembic-managed tools. Upgrades hold a lock (PostgreSQL advisory lock,
SQLite ``BEGIN IMMEDIATE``) so that processes opening a new database together create it once.

For developers, a new migration: ``alembic.command.revision(make_config(url), "message",
autogenerate=True, rev_id="0002")`` then edit the generated file.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine

from .connection import display_url, location, write_engine
from .errors import NotARegistry, SchemaOutOfDate, SchemaTooNew
from .models import TABLE_NAMES

VERSION_TABLE = "ufarsap_alembic_version"
#: Where the migration scripts live (a package resource; tests point it elsewhere).
SCRIPT_LOCATION = "ufarsap_registry:migrations"
#: Key for ``pg_advisory_xact_lock``: "ufarsap" in ASCII.
PG_MIGRATION_LOCK = 0x75666172736170


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None  # revision stamped in the database, None if none
    head: str
    has_tables: bool  # any registry table exists
    known: bool  # current is a revision this engine knows

    @property
    def empty(self) -> bool:
        return self.current is None and not self.has_tables

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def make_config(connection: Connection | None = None, url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(make_config()).get_current_head()
    assert head is not None, "the registry has no migrations"
    return head


def status(conn: Connection) -> SchemaStatus:
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    current = context.get_current_revision()
    tables = set(sa.inspect(conn).get_table_names())
    script = ScriptDirectory.from_config(make_config())
    known = True
    if current is not None:
        try:
            known = script.get_revision(current) is not None
        except CommandError:
            known = False
    return SchemaStatus(
        current=current,
        head=head_revision(),
        has_tables=bool(tables.intersection(TABLE_NAMES)),
        known=known,
    )


def check(status_: SchemaStatus, url: str, *, create: bool) -> bool:
    """Raise if the schema cannot be used as is; return True if it must be created."""
    shown = display_url(url)
    upgrade_hint = f"run `ufarsap-engine registry upgrade --registry {shown}`"
    if status_.up_to_date:
        return False
    if status_.current is None and status_.has_tables:
        raise NotARegistry(
            f"database {shown} has tables named like the registry's ({', '.join(TABLE_NAMES)})"
            f" but no {VERSION_TABLE} table: it was not created by ufarsap-engine; use another"
            " database or schema"
        )
    if status_.empty:
        if create:
            return True
        raise missing_schema(url)
    if not status_.known:
        raise SchemaTooNew(
            f"registry was written by a newer ufarsap-engine (rev {status_.current}, this engine"
            f" knows up to {status_.head}): upgrade ufarsap-engine"
        )
    raise SchemaOutOfDate(
        f"registry schema is out of date (rev {status_.current}, this engine needs"
        f" {status_.head}): {upgrade_hint}"
    )


def missing_schema(url: str) -> SchemaOutOfDate:
    shown = display_url(url)
    return SchemaOutOfDate(
        f"{location(url)} holds no ufarsap-engine registry (no registry schema; this engine needs"
        f" rev {head_revision()}): check --registry / UFARSAP_REGISTRY_URL, or create one with"
        f" `ufarsap-engine registry upgrade --registry {shown}`"
    )


def upgrade_to_head(engine: Engine, url: str) -> tuple[str | None, str]:
    """Migrate to head under a lock; returns (revision before, revision after)."""
    from sqlalchemy import exc

    from .busy import BusyWait
    from .connection import SQLITE_BUSY_SLICE_MS
    from .transactions import is_sqlite_locked

    busy = BusyWait(engine, SQLITE_BUSY_SLICE_MS / 1000)
    while True:
        try:
            return _upgrade_locked(engine, url)
        except exc.OperationalError as error:
            if not is_sqlite_locked(error):
                raise
            busy.locked()


def _upgrade_locked(engine: Engine, url: str) -> tuple[str | None, str]:
    with write_engine(engine).connect() as conn:
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PG_MIGRATION_LOCK)))
            before = status(conn)  # read under the lock: another process may have just migrated
            if not before.known:
                check(before, url, create=True)  # raises SchemaTooNew
            if before.current is None and before.has_tables:
                check(before, url, create=True)  # raises NotARegistry
            if not before.up_to_date:
                command.upgrade(make_config(conn), "head")
        return before.current, head_revision()
