"""Runs can end "interrupted" (SIGINT/SIGTERM after a checkpoint: resumable, not failed).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = ("running", "complete", "failed", "killed")
NEW = (*OLD, "interrupted")


def _in(values: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(v) for v in values)})"


def _replace_check(values: tuple[str, ...]) -> None:
    # Batch mode: SQLite cannot alter a constraint in place, so the table is copied.
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("ck_runs_status", type_="check")
        batch.create_check_constraint("ck_runs_status", _in(values))


def upgrade() -> None:
    _replace_check(NEW)


def downgrade() -> None:
    op.execute("UPDATE runs SET status = 'killed' WHERE status = 'interrupted'")
    _replace_check(OLD)
