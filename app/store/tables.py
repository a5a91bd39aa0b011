"""The ledger's tables. The schema only changes through migrations/; a test checks they agree."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.domain import as_utc

# Microsecond precision on MySQL/MariaDB (plain DATETIME drops the fraction).
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# Job ids are case-sensitive identifiers, not words: compare them byte for byte.
Identifier = String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
# TEXT stops at 65,535 bytes on MySQL; arguments may use the whole soft limit and more.
LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def stored_time(moment: datetime) -> datetime:
    """A time as the tables hold it: naive UTC (MySQL DATETIME has no zone). A naive input is
    taken to be UTC already."""
    return as_utc(moment).replace(tzinfo=None)


def read_time(moment: datetime | None) -> datetime | None:
    """A stored time back as aware UTC."""
    return None if moment is None else moment.replace(tzinfo=UTC)


TABLE_OPTIONS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}
NAMING = {"ix": "ix_%(table_name)s_%(column_0_N_name)s"}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class JobRow(Base):
    """One row per jid: the job's settled state, whatever order its events arrived in."""

    __tablename__ = "jobs"

    jid: Mapped[str] = mapped_column(Identifier, primary_key=True)
    job_class: Mapped[str | None] = mapped_column(String(255))
    queue: Mapped[str | None] = mapped_column(String(255))
    arguments: Mapped[str | None] = mapped_column(LongText)
    arguments_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    # Secrets were replaced before the arguments were stored (migration 0007).
    arguments_redacted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # (event time in µs) * 8 + lifecycle rank of the newest event that carried class/queue/args.
    info_key: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    # Same encoding for the newest event overall: it decides `status`.
    status_key: Mapped[int] = mapped_column(BigInteger)
    enqueued_at: Mapped[datetime | None] = mapped_column(Timestamp)
    scheduled_for: Mapped[datetime | None] = mapped_column(Timestamp)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    completed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    failed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    first_seen_at: Mapped[datetime] = mapped_column(Timestamp)
    last_event_at: Mapped[datetime] = mapped_column(Timestamp)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_class: Mapped[str | None] = mapped_column(String(255))
    error_message: Mapped[str | None] = mapped_column(Text)
    process: Mapped[str | None] = mapped_column(String(255))
    requeued_as: Mapped[str | None] = mapped_column(Identifier)

    __table_args__ = (
        Index(None, "last_event_at", "jid"),
        # Covers the duration sample (newest completions' times) without row lookups.
        Index(
            "ix_jobs_status_recent",
            "status",
            "last_event_at",
            "jid",
            "enqueued_at",
            "started_at",
            "completed_at",
        ),
        # The reconciler's reads: runs by start time; queued jobs by queue and enqueue time,
        # with class and start carried along so the stuck and lost counts read only the index.
        Index(None, "status", "started_at", "jid"),
        Index(
            "ix_jobs_status_queue_enqueued_at",
            "status",
            "queue",
            "enqueued_at",
            "job_class",
            "started_at",
        ),
        Index(None, "queue", "last_event_at", "jid"),
        Index(None, "job_class", "last_event_at", "jid"),
        # A class and a queue together (migration 0006).
        Index(None, "job_class", "queue", "last_event_at", "jid"),
        # The GUI's status filter combined with a queue or a class (migration 0005).
        Index(None, "status", "queue", "last_event_at", "jid"),
        Index(None, "status", "job_class", "last_event_at", "jid"),
        # Covers the Metrics page's read of the newest finished jobs without row lookups.
        Index(
            "ix_jobs_finished_recent",
            "last_event_at",
            "status",
            "job_class",
            "queue",
            "enqueued_at",
            "started_at",
        ),
        TABLE_OPTIONS,
    )


class JobEventRow(Base):
    """The append-only timeline: every accepted event as received."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    jid: Mapped[str] = mapped_column(Identifier)
    event: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(Timestamp)
    received_at: Mapped[datetime] = mapped_column(Timestamp)
    queue: Mapped[str | None] = mapped_column(String(255))
    job_class: Mapped[str | None] = mapped_column(String(255))
    process: Mapped[str | None] = mapped_column(String(255))
    retry_count: Mapped[int | None] = mapped_column(Integer)
    error_class: Mapped[str | None] = mapped_column(String(255))
    error_message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index(None, "jid", "at"),
        Index(None, "received_at"),
        TABLE_OPTIONS,
    )


class SidekiqSampleRow(Base):
    """One row per sampler tick (leader only): Sidekiq's totals, for Grafana's SQL panels."""

    __tablename__ = "sidekiq_samples"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    sampled_at: Mapped[datetime] = mapped_column(Timestamp)
    processed: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    enqueued: Mapped[int] = mapped_column(BigInteger)
    scheduled: Mapped[int] = mapped_column(BigInteger)
    retry: Mapped[int] = mapped_column(BigInteger)
    dead: Mapped[int] = mapped_column(BigInteger)
    processes: Mapped[int] = mapped_column(Integer)
    workers: Mapped[int] = mapped_column(Integer)
    busy: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index(None, "sampled_at"), TABLE_OPTIONS)


class QueueSampleRow(Base):
    """One row per queue per sampler tick: length, latency and jobs running from it."""

    __tablename__ = "queue_samples"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    sampled_at: Mapped[datetime] = mapped_column(Timestamp)
    queue: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    latency_seconds: Mapped[float] = mapped_column(Double)
    busy: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index(None, "queue", "sampled_at"),
        Index(None, "sampled_at"),
        TABLE_OPTIONS,
    )
