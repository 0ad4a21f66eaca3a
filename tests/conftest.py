"""Shared pytest fixtures. Keep each area's fixtures in its own section."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# --------------------------------------------------------------------------------------------
# Strategy registry (ufarsap_registry): the same tests run on SQLite and on PostgreSQL.
# PostgreSQL comes from $UFARSAP_TEST_PG_URL (scripts/start-postgres.sh prints one); each test
# gets its own schema (selected with search_path in the URL), dropped afterwards.
# --------------------------------------------------------------------------------------------

PG_URL_ENV = "UFARSAP_TEST_PG_URL"
#: What scripts/start-postgres.sh creates; used when the variable is unset and it answers.
PG_DEFAULT_URL = "postgresql+psycopg://ufarsap:ufarsap@127.0.0.1:5432/ufarsap_test"


def _default_pg_url() -> str | None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_DEFAULT_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return PG_DEFAULT_URL
    except Exception:
        return None
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_admin_engine():
    """Engine on $UFARSAP_TEST_PG_URL (or the server scripts/start-postgres.sh starts); fails in
    CI and skips elsewhere when there is none."""
    url = os.environ.get(PG_URL_ENV) or _default_pg_url()
    if not url:
        message = (
            f"{PG_URL_ENV} is not set: start PostgreSQL with scripts/start-postgres.sh and export"
            f" {PG_URL_ENV}=<the URL it prints>"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the registry tests on PostgreSQL, but {message}", pytrace=False)
        pytest.skip(message)
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.DBAPIError as error:
        pytest.fail(f"cannot connect to {PG_URL_ENV}: {str(error.orig).splitlines()[0]}", pytrace=False)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_registry_url(pg_admin_engine) -> Iterator[str]:
    """A URL whose connections see only a fresh, empty schema of their own."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with pg_admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = pg_admin_engine.url.update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": schema}
    )
    yield url.render_as_string(hide_password=False)
    with pg_admin_engine.connect() as conn:
        # Connections a test left behind (e.g. a killed writer's) must not block the drop.
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE application_name = '{schema}' AND pid <> pg_backend_pid()"
        )
        conn.exec_driver_sql("SET lock_timeout = '10s'")
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request, tmp_path) -> str:
    """A URL of an empty database, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.sqlite'}"
    return request.getfixturevalue("pg_registry_url")


@pytest.fixture
def registry(registry_url):
    """An opened (and migrated) registry on each backend."""
    from ufarsap_registry import open_registry

    with open_registry(registry_url) as reg:
        yield reg
