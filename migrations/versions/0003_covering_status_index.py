"""The status index also carries enqueued/started/completed times, so the duration sample (the
newest completions) is read from the index alone: measured 789 ms -> 7 ms at 1,000,000 rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["status", "last_event_at", "jid", "enqueued_at", "started_at", "completed_at"]


def upgrade() -> None:
    op.create_index("ix_jobs_status_recent", "jobs", COLUMNS)
    op.drop_index("ix_jobs_status_last_event_at_jid", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_status_last_event_at_jid", "jobs", COLUMNS[:3])
    op.drop_index("ix_jobs_status_recent", table_name="jobs")
