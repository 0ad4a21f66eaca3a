"""Run status 'interrupted': a run stopped by SIGINT/SIGTERM after saving a checkpoint.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Self-contained like 0001. SQLite cannot alter a CHECK constraint, so the table is rebuilt
(Alembic batch mode); PostgreSQL drops and recreates the constraint.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = ("running", "complete", "failed", "killed")
NEW = OLD + ("interrupted",)


def _in(values: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(v) for v in values)})"


def _set(values: tuple[str, ...]) -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("ck_runs_status", type_="check")
        batch.create_check_constraint("ck_runs_status", _in(values))


def upgrade() -> None:
    _set(NEW)


def downgrade() -> None:
    op.execute("UPDATE runs SET status = 'killed' WHERE status = 'interrupted'")
    _set(OLD)
