"""Initial registry schema: runs, strategies, strategy_plugins, scores, lineage_events.

Revision ID: 0001
Revises:
Create Date: 2024-11-29

Self-contained on purpose (no imports from ``ufarsap_registry.models``): a migration must keep
creating the schema of its own revision after the models move on.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def _in(column: str, *values: str) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("heartbeat_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.CheckConstraint(
            _in("status", "running", "complete", "failed", "killed"), name="ck_runs_status"
        ),
    )
    op.create_index("ix_runs_scope", "runs", ["scope"])

    op.create_table(
        "strategies",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("parent_id", sa.Integer, nullable=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("lifecycle", sa.String(16), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(100), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("completed_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_strategies"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_strategies_run_id_runs"),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["strategies.id"], name="fk_strategies_parent_id_strategies"
        ),
        sa.CheckConstraint(
            _in("origin", "seed", "explore", "exploit", "crossover", "manual", "plugin"),
            name="ck_strategies_origin",
        ),
        sa.CheckConstraint(
            _in("state", "candidate", "running", "complete", "failed"), name="ck_strategies_state"
        ),
        sa.CheckConstraint(
            _in("lifecycle", "proposed", "active", "retired", "rejected"),
            name="ck_strategies_lifecycle",
        ),
        sa.CheckConstraint("generation >= 0", name="ck_strategies_generation"),
    )
    op.create_index("ix_strategies_run_id", "strategies", ["run_id"])
    op.create_index("ix_strategies_parent_id", "strategies", ["parent_id"])
    op.create_index("ix_strategies_state", "strategies", ["state"])
    op.create_index("ix_strategies_content_hash", "strategies", ["content_hash"])
    op.create_index("ix_strategies_scope_lifecycle", "strategies", ["scope", "lifecycle"])
    # Exactly one active strategy per scope, enforced by the database.
    op.create_index(
        "uq_strategies_one_active_per_scope",
        "strategies",
        ["scope"],
        unique=True,
        sqlite_where=sa.text("lifecycle = 'active'"),
        postgresql_where=sa.text("lifecycle = 'active'"),
    )

    op.create_table(
        "strategy_plugins",
        sa.Column("strategy_id", sa.Integer, nullable=False),
        sa.Column("plugin_name", sa.String(200), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.PrimaryKeyConstraint("strategy_id", "plugin_name", name="pk_strategy_plugins"),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name="fk_strategy_plugins_strategy_id_strategies",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_strategy_plugins_plugin_name", "strategy_plugins", ["plugin_name"])

    op.create_table(
        "scores",
        sa.Column("strategy_id", sa.Integer, nullable=False),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("value", sa.Double, nullable=True),
        sa.Column("value_kind", sa.String(8), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("strategy_id", "metric", "step", name="pk_scores"),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name="fk_scores_strategy_id_strategies",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            _in("value_kind", "finite", "nan", "inf", "-inf"), name="ck_scores_value_kind"
        ),
        sa.CheckConstraint(
            "(value_kind = 'finite' AND value IS NOT NULL) "
            "OR (value_kind <> 'finite' AND value IS NULL)",
            name="ck_scores_value_matches_kind",
        ),
    )
    op.create_index("ix_scores_metric_strategy_id_step", "scores", ["metric", "strategy_id", "step"])

    op.create_table(
        "lineage_events",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("strategy_id", sa.Integer, nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("from_strategy_id", sa.Integer, nullable=True),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lineage_events"),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name="fk_lineage_events_strategy_id_strategies",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["from_strategy_id"],
            ["strategies.id"],
            name="fk_lineage_events_from_strategy_id_strategies",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_lineage_events_run_id_runs", ondelete="SET NULL"
        ),
        sa.CheckConstraint(
            _in("event", "created", "state_changed", "activated", "retired", "rejected"),
            name="ck_lineage_events_event",
        ),
    )
    op.create_index("ix_lineage_events_strategy_id", "lineage_events", ["strategy_id"])


def downgrade() -> None:
    for table in ("lineage_events", "scores", "strategy_plugins", "strategies", "runs"):
        op.drop_table(table)
