"""An index for the GUI's Jobs page filtered by a class and a queue together, newest activity
first. Without it the page walks the queue's index and looks up each row to check its class:
1.0 s at 1,000,000 rows (MariaDB 10.11, 128 MB buffer pool) when the class seldom runs in that
queue; with it 0.1 ms.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_job_class_queue_last_event_at_jid",
        "jobs",
        ["job_class", "queue", "last_event_at", "jid"],
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_job_class_queue_last_event_at_jid", table_name="jobs")
