"""The job ledger: one row per jid (jobs) and the append-only timeline (job_events).

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL = ("mysql", "mariadb")
TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def timestamp() -> Any:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *MYSQL)


def identifier() -> Any:
    binary = mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin")
    return sa.String(255).with_variant(binary, *MYSQL)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("jid", identifier(), nullable=False),
        sa.Column("job_class", sa.String(255), nullable=True),
        sa.Column("queue", sa.String(255), nullable=True),
        sa.Column("arguments", sa.Text().with_variant(mysql.MEDIUMTEXT(), *MYSQL), nullable=True),
        sa.Column("arguments_truncated", sa.Boolean(), nullable=False),
        sa.Column("info_key", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_key", sa.BigInteger(), nullable=False),
        sa.Column("enqueued_at", timestamp(), nullable=True),
        sa.Column("scheduled_for", timestamp(), nullable=True),
        sa.Column("started_at", timestamp(), nullable=True),
        sa.Column("completed_at", timestamp(), nullable=True),
        sa.Column("failed_at", timestamp(), nullable=True),
        sa.Column("first_seen_at", timestamp(), nullable=False),
        sa.Column("last_event_at", timestamp(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error_class", sa.String(255), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("process", sa.String(255), nullable=True),
        sa.Column("requeued_as", identifier(), nullable=True),
        sa.PrimaryKeyConstraint("jid"),
        **TABLE_OPTIONS,
    )
    for columns in (
        ["last_event_at", "jid"],
        ["status", "last_event_at", "jid"],
        ["queue", "last_event_at", "jid"],
        ["job_class", "last_event_at", "jid"],
    ):
        op.create_index(f"ix_jobs_{'_'.join(columns)}", "jobs", columns)

    op.create_table(
        "job_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("jid", identifier(), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("at", timestamp(), nullable=False),
        sa.Column("received_at", timestamp(), nullable=False),
        sa.Column("queue", sa.String(255), nullable=True),
        sa.Column("job_class", sa.String(255), nullable=True),
        sa.Column("process", sa.String(255), nullable=True),
        sa.Column("retry_count", sa.Integer(), nullable=True),
        sa.Column("error_class", sa.String(255), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_job_events_jid_at", "job_events", ["jid", "at"])
    op.create_index("ix_job_events_received_at", "job_events", ["received_at"])


def downgrade() -> None:
    op.drop_table("job_events")
    op.drop_table("jobs")
