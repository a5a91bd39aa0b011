"""jobs.arguments_redacted: the stored arguments had secrets replaced (SUPERVISOR_REDACT_KEYS or
SUPERVISOR_REDACT_PATTERNS), so requeue must not rebuild the job from them. Existing rows were
stored before redaction existed: false. MariaDB 10.3+ adds the column instantly (metadata only),
whatever the table's size.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("arguments_redacted", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("jobs", "arguments_redacted")
