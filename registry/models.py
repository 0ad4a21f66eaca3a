"""The registry schema as SQLAlchemy ORM classes.

The Alembic migrations in ``migrations/versions`` create exactly this schema (a test compares
them), so a change here needs a new migration. Allowed values live next to the CHECK
constraints that enforce them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ORIGINS = ("seed", "explore", "exploit", "crossover", "manual", "plugin")
STATES = ("candidate", "running", "complete", "failed")
LIFECYCLES = ("proposed", "active", "retired", "rejected")
RUN_STATUSES = ("running", "complete", "failed", "killed", "interrupted")
VALUE_KINDS = ("finite", "nan", "inf", "-inf")
EVENTS = ("created", "state_changed", "activated", "retired", "rejected")

#: Name of the partial unique index that keeps one active strategy per scope; the activation
#: retry logic recognises conflicts on it by name.
ONE_ACTIVE_INDEX = "uq_strategies_one_active_per_scope"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def in_list(column: str, values: tuple[str, ...]) -> str:
    """SQL text for a CHECK constraint ``column IN (...)`` (values are our own constants)."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as naive
    UTC and get ``tzinfo=UTC`` back on load.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("registry timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: JSON everywhere, JSONB on PostgreSQL (compact, indexable).
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Run(Base):
    """One engine process writing to the registry; its heartbeat tells live runs from dead."""

    __tablename__ = "runs"
    __table_args__ = (sa.CheckConstraint(in_list("status", RUN_STATUSES), name="status"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    scope: Mapped[str] = mapped_column(sa.String(100), index=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int] = mapped_column(sa.Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Strategy(Base):
    """A candidate configuration: which plugins run, with which parameters."""

    __tablename__ = "strategies"
    __table_args__ = (
        sa.CheckConstraint(in_list("origin", ORIGINS), name="origin"),
        sa.CheckConstraint(in_list("state", STATES), name="state"),
        sa.CheckConstraint(in_list("lifecycle", LIFECYCLES), name="lifecycle"),
        sa.CheckConstraint("generation >= 0", name="generation"),
        # At most one active strategy per scope, enforced by the database itself.
        sa.Index(
            ONE_ACTIVE_INDEX,
            "scope",
            unique=True,
            sqlite_where=sa.text("lifecycle = 'active'"),
            postgresql_where=sa.text("lifecycle = 'active'"),
        ),
        sa.Index(None, "scope", "lifecycle"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    run_id: Mapped[str | None] = mapped_column(sa.ForeignKey("runs.id"), index=True)
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("strategies.id"), index=True)
    generation: Mapped[int] = mapped_column(sa.Integer)
    origin: Mapped[str] = mapped_column(sa.String(16))
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    lifecycle: Mapped[str] = mapped_column(sa.String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    content_hash: Mapped[str] = mapped_column(sa.String(64), index=True)
    scope: Mapped[str] = mapped_column(sa.String(100))
    reason: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StrategyPlugin(Base):
    """Which plugins a strategy names; ``plugin_name`` is the entry-point name."""

    __tablename__ = "strategy_plugins"

    strategy_id: Mapped[int] = mapped_column(
        sa.ForeignKey("strategies.id", ondelete="CASCADE"), primary_key=True
    )
    plugin_name: Mapped[str] = mapped_column(sa.String(200), primary_key=True, index=True)
    enabled: Mapped[bool] = mapped_column(sa.Boolean, default=True, server_default=sa.true())


class Score(Base):
    """One metric value of a strategy at one step; non-finite values are explicit."""

    __tablename__ = "scores"
    __table_args__ = (
        sa.CheckConstraint(in_list("value_kind", VALUE_KINDS), name="value_kind"),
        sa.CheckConstraint(
            "(value_kind = 'finite' AND value IS NOT NULL) "
            "OR (value_kind <> 'finite' AND value IS NULL)",
            name="value_matches_kind",
        ),
        # Top-k by a metric scans one metric's rows, newest step per strategy.
        sa.Index(None, "metric", "strategy_id", "step"),
    )

    strategy_id: Mapped[int] = mapped_column(
        sa.ForeignKey("strategies.id", ondelete="CASCADE"), primary_key=True
    )
    metric: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    step: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    value: Mapped[float | None] = mapped_column(sa.Double)
    value_kind: Mapped[str] = mapped_column(sa.String(8))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LineageEventRow(Base):
    """An append-only history entry: creation, state changes, activations, retirements."""

    __tablename__ = "lineage_events"
    __table_args__ = (sa.CheckConstraint(in_list("event", EVENTS), name="event"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    strategy_id: Mapped[int] = mapped_column(
        sa.ForeignKey("strategies.id", ondelete="CASCADE"), index=True
    )
    event: Mapped[str] = mapped_column(sa.String(16))
    from_strategy_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("strategies.id", ondelete="SET NULL")
    )
    run_id: Mapped[str | None] = mapped_column(sa.ForeignKey("runs.id", ondelete="SET NULL"))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


TABLE_NAMES = tuple(Base.metadata.tables)
