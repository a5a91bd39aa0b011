"""Indexes for the GUI's Jobs and Metrics pages, measured at 1,000,000 rows on MariaDB 10.11
(128 MB buffer pool):
- a status combined with a queue or a class (failed jobs of one class, queued jobs of one
  queue), newest activity first: without them the page walks one index and looks up each row
  to check the other column, 0.45 s (status+queue) and 2.7 s (status+class) when few rows match
  both; with them 2-5 ms;
- the Metrics page's read of the newest finished jobs of a window (class, queue, status, times):
  covered by one index it reads no rows, 20,000 jobs in 25 ms instead of 0.9-1.5 s.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINISHED_COLUMNS = ["last_event_at", "status", "job_class", "queue", "enqueued_at", "started_at"]


def upgrade() -> None:
    op.create_index(
        "ix_jobs_status_queue_last_event_at_jid",
        "jobs",
        ["status", "queue", "last_event_at", "jid"],
    )
    op.create_index(
        "ix_jobs_status_job_class_last_event_at_jid",
        "jobs",
        ["status", "job_class", "last_event_at", "jid"],
    )
    op.create_index("ix_jobs_finished_recent", "jobs", FINISHED_COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_recent", table_name="jobs")
    op.drop_index("ix_jobs_status_job_class_last_event_at_jid", table_name="jobs")
    op.drop_index("ix_jobs_status_queue_last_event_at_jid", table_name="jobs")
