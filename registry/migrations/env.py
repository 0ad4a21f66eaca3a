"""Alembic environment for the registry.

Normally run from ``ufarsap_registry.migrate`` with a live connection in
``config.attributes["connection"]`` (inside the caller's transaction). Without one, it connects
to ``sqlalchemy.url``; in offline mode (``--sql``) it prints the SQL instead.
"""

from alembic import context
from ufarsap_registry.connection import make_engine
from ufarsap_registry.migrate import VERSION_TABLE
from ufarsap_registry.models import Base

config = context.config


def _configure(**kwargs):
    context.configure(
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        **kwargs,
    )


def run_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as conn:
            _configure(connection=conn, render_as_batch=conn.dialect.name == "sqlite")
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
