"""Sidekiq history for Grafana: sidekiq_samples (totals per tick), queue_samples (per queue).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL = ("mysql", "mariadb")
TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def key() -> sa.Column[Any]:
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    return sa.Column("id", big, autoincrement=True, nullable=False)


def timestamp() -> Any:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *MYSQL)


def upgrade() -> None:
    op.create_table(
        "sidekiq_samples",
        key(),
        sa.Column("sampled_at", timestamp(), nullable=False),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False)
            for name in ("processed", "failed", "enqueued", "scheduled", "retry", "dead")
        ),
        *(
            sa.Column(name, sa.Integer(), nullable=False)
            for name in ("processes", "workers", "busy")
        ),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_sidekiq_samples_sampled_at", "sidekiq_samples", ["sampled_at"])
    op.create_table(
        "queue_samples",
        key(),
        sa.Column("sampled_at", timestamp(), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("latency_seconds", sa.Double(), nullable=False),
        sa.Column("busy", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_queue_samples_queue_sampled_at", "queue_samples", ["queue", "sampled_at"])
    op.create_index("ix_queue_samples_sampled_at", "queue_samples", ["sampled_at"])


def downgrade() -> None:
    op.drop_table("queue_samples")
    op.drop_table("sidekiq_samples")
