"""Opening registries: URLs, migrations, schema version checks, unreachable databases."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
import ufarsap_registry
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from ufarsap_registry import (
    NotARegistry,
    RegistryUnavailable,
    SchemaOutOfDate,
    SchemaTooNew,
    default_url,
    migrate,
    open_registry,
    upgrade,
)
from ufarsap_registry.models import EVENTS, LIFECYCLES, ORIGINS, STATES, Base
from ufarsap_registry.records import Event, Lifecycle, Origin, State

from ufarsap_engine.errors import UserError

HEAD = "0002"


def _snapshot(url):
    """Tables, version stamp and row counts: what "changes nothing" is checked against."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = sorted(sa.inspect(conn).get_table_names())
            counts = {t: conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar() for t in tables}
            version = None
            if migrate.VERSION_TABLE in tables:
                version = conn.execute(sa.text(f"SELECT version_num FROM {migrate.VERSION_TABLE}")).all()
        return tables, counts, version
    finally:
        engine.dispose()


def _execute(url, sql, **params):
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql), params)
    finally:
        engine.dispose()


def test_literal_types_match_check_constraint_values():
    from typing import get_args

    assert get_args(Origin) == ORIGINS and get_args(State) == STATES
    assert get_args(Lifecycle) == LIFECYCLES and get_args(Event) == EVENTS


def test_new_database_is_migrated_to_head_with_own_version_table(registry_url):
    with open_registry(registry_url) as reg:
        assert reg.upgrade() == (HEAD, HEAD)
    tables, counts, version = _snapshot(registry_url)
    assert set(tables) == {"runs", "strategies", "strategy_plugins", "scores", "lineage_events",
                           migrate.VERSION_TABLE}
    assert "alembic_version" not in tables  # never collides with another tool's Alembic
    assert version == [(HEAD,)]
    with open_registry(registry_url, create=False) as reg:  # reopening changes nothing
        assert reg.list() == []


def test_migrations_create_exactly_the_models_schema(registry_url):
    open_registry(registry_url).close()
    engine = sa.create_engine(registry_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "version_table": migrate.VERSION_TABLE, "compare_type": True,
                "compare_server_default": True})
            assert compare_metadata(context, Base.metadata) == []
            indexes = {i["name"]: i for i in sa.inspect(conn).get_indexes("strategies")}
        assert indexes["uq_strategies_one_active_per_scope"]["unique"]
    finally:
        engine.dispose()


def test_create_false_refuses_an_empty_database(registry_url, tmp_path):
    with pytest.raises(SchemaOutOfDate, match="(no registry at|holds no ufarsap-engine registry).*registry upgrade --registry"):
        open_registry(registry_url, create=False)
    if registry_url.startswith("sqlite"):
        assert not (tmp_path / "registry.sqlite").exists()  # no empty file left behind
    else:
        assert _snapshot(registry_url)[0] == []
    assert upgrade(registry_url) == (None, HEAD)
    open_registry(registry_url, create=False).close()


def test_newer_schema_raises_too_new_and_changes_nothing(registry_url):
    with open_registry(registry_url) as reg:
        reg.add_strategy(plugins=["a.b"], params={}, origin="seed")
    _execute(registry_url, f"UPDATE {migrate.VERSION_TABLE} SET version_num = 'ffff0000future'")
    before = _snapshot(registry_url)
    with pytest.raises(SchemaTooNew, match=r"newer ufarsap-engine \(rev ffff0000future.*upgrade ufarsap-engine"):
        open_registry(registry_url)
    with pytest.raises(SchemaTooNew):
        upgrade(registry_url)
    assert _snapshot(registry_url) == before


@pytest.fixture
def newer_engine(tmp_path, monkeypatch):
    """Pretend to be the next engine version: the real migrations plus a 0003."""
    scripts = tmp_path / "migrations"
    shutil.copytree(Path(ufarsap_registry.__file__).parent / "migrations", scripts,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "0003_note.py").write_text(
        'revision = "0003"\ndown_revision = "0002"\nbranch_labels = None\ndepends_on = None\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        "def upgrade():\n    op.add_column('strategies', sa.Column('note', sa.Text, nullable=True))\n\n"
        "def downgrade():\n    op.drop_column('strategies', 'note')\n"
    )

    def use(newer: bool) -> None:
        monkeypatch.setattr(migrate, "SCRIPT_LOCATION", str(scripts) if newer else "ufarsap_registry:migrations")

    return use


def test_older_schema_raises_out_of_date_until_upgraded(registry_url, newer_engine):
    with open_registry(registry_url) as reg:
        sid = reg.add_strategy(plugins=["a.b"], params={"x": 1}, origin="seed")
    before = _snapshot(registry_url)
    newer_engine(True)
    with pytest.raises(SchemaOutOfDate) as info:
        open_registry(registry_url)
    shown = sa.make_url(registry_url).render_as_string(hide_password=True)
    assert str(info.value) == (
        f"registry schema is out of date (rev 0002, this engine needs 0003):"
        f" run `ufarsap-engine registry upgrade --registry {shown}`"
    )
    assert "\n" not in str(info.value)
    if "postgresql" in registry_url:
        assert ":ufarsap@" not in str(info.value) and "***" in str(info.value)
    assert _snapshot(registry_url) == before  # nothing changed
    assert upgrade(registry_url) == ("0002", "0003")
    assert upgrade(registry_url) == ("0003", "0003")
    with open_registry(registry_url) as reg:
        assert reg.get(sid).params == {"x": 1}  # data survived the migration
    newer_engine(False)  # back to this engine: the database is now too new for it
    with pytest.raises(SchemaTooNew):
        open_registry(registry_url)


def test_tables_without_version_stamp_are_not_a_registry(registry_url):
    _execute(registry_url, "CREATE TABLE strategies (id INTEGER PRIMARY KEY)")
    with pytest.raises(NotARegistry, match="not created by ufarsap-engine"):
        open_registry(registry_url)
    assert _snapshot(registry_url)[0] == ["strategies"]


def test_unrelated_tables_are_left_alone(registry_url):
    _execute(registry_url, "CREATE TABLE experiments (id INTEGER PRIMARY KEY)")
    open_registry(registry_url).close()
    assert "experiments" in _snapshot(registry_url)[0]


def test_processes_opening_a_new_database_together_create_it_once(registry_url):
    errors, barrier = [], threading.Barrier(4)

    def opener():
        try:
            barrier.wait()
            open_registry(registry_url).close()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _snapshot(registry_url)[2] == [(HEAD,)]


@pytest.mark.parametrize("url,reason", [
    ("postgresql+psycopg://nobody:s3cret@127.0.0.1:1/x", "127.0.0.1"),
    ("sqlite:////nonexistent/dir/x.db", "unable to open database file"),
    ("notadb://x", "unknown database type 'notadb'"),
    ("this is not a url", "not a database URL"),
    ("postgresql+nosuchdriver://u:s3cret@h/db", "unknown database type"),
])
def test_unreachable_urls_raise_one_line(url, reason):
    with pytest.raises(RegistryUnavailable) as info:
        open_registry(url)
    message = str(info.value)
    assert "\n" not in message and reason in message
    assert message.startswith("registry ") and "s3cret" not in message
    assert isinstance(info.value, UserError)
    with pytest.raises(RegistryUnavailable):
        upgrade(url)


def test_default_url(tmp_path, monkeypatch):
    monkeypatch.delenv("UFARSAP_REGISTRY_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_url() == f"sqlite:///{tmp_path}/strategies_db/registry.sqlite"
    assert not (tmp_path / "strategies_db").exists()  # naming it creates nothing
    with open_registry() as reg:  # a writer creates the folder and the registry
        assert reg.url == default_url()
    assert (tmp_path / "strategies_db" / "registry.sqlite").exists()
    monkeypatch.setenv("UFARSAP_REGISTRY_URL", "sqlite:///elsewhere.db")
    assert default_url() == "sqlite:///elsewhere.db"


def test_sqlite_connections_are_configured(tmp_path):
    with open_registry(f"sqlite:///{tmp_path / 'r.sqlite'}") as reg:
        with reg._engine.connect() as conn:
            pragmas = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar()
                       for p in ("journal_mode", "busy_timeout", "foreign_keys")}
    assert pragmas == {"journal_mode": "wal", "busy_timeout": 1000, "foreign_keys": 1}


def test_runs_can_end_interrupted_also_after_upgrading_from_0001(registry_url, monkeypatch):
    """0002 adds the 'interrupted' run status (SIGINT/SIGTERM): a 0001 registry keeps its runs."""
    from alembic import command

    engine = sa.create_engine(registry_url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrate.make_config(conn), "0001")
    finally:
        engine.dispose()
    _execute(registry_url, "INSERT INTO runs (id, name, scope, status, config, host, pid, started_at,"
             " heartbeat_at) VALUES ('r1', 'old', 'default', 'killed', '{}', 'h', 1,"
             " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    assert upgrade(registry_url) == ("0001", HEAD)
    with open_registry(registry_url) as reg:
        run = reg.start_run("new", {})
        sid = reg.add_strategy(plugins=["a.b"], params={}, origin="manual", run_id=run, state="running")
        reg.end_run(run, "interrupted")
        assert reg.get(sid).state == "failed" and reg.get(sid).reason == "run ended (interrupted)"
    with pytest.raises(sa.exc.IntegrityError):  # the database still checks the status
        _execute(registry_url, "UPDATE runs SET status = 'paused' WHERE id = 'r1'")
