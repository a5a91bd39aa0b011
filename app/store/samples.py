"""Sidekiq history: one sidekiq_samples row per tick and a queue_samples row per queue."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Float, cast, func, insert, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import Snapshot
from app.store.tables import QueueSampleRow, SidekiqSampleRow, stored_time


@dataclass(frozen=True, slots=True)
class TotalsPoint:
    sampled_at: datetime
    processed: int
    failed: int
    enqueued: int
    scheduled: int
    retry: int
    dead: int
    processes: int
    workers: int
    busy: int


@dataclass(frozen=True, slots=True)
class QueuePoint:
    sampled_at: datetime
    queue: str
    size: int
    latency_seconds: float
    busy: int


async def add_samples(session: AsyncSession, snapshot: Snapshot) -> None:
    """The snapshot's totals and per-queue rows; `busy` per queue counts jobs running from it."""
    at = stored_time(snapshot.taken_at)
    await session.execute(
        insert(SidekiqSampleRow).values(
            sampled_at=at,
            processed=snapshot.processed,
            failed=snapshot.failed,
            enqueued=snapshot.enqueued,
            scheduled=snapshot.scheduled,
            retry=snapshot.retries,
            dead=snapshot.dead,
            processes=snapshot.processes_size,
            workers=snapshot.workers,
            busy=snapshot.busy,
        )
    )
    running = Counter(job.queue for job in snapshot.busy_jobs)
    rows = [
        {
            "sampled_at": at,
            "queue": queue.name,
            "size": queue.size,
            "latency_seconds": queue.latency_seconds,
            "busy": running[queue.name],
        }
        for queue in snapshot.queues
    ]
    if rows:
        await session.execute(insert(QueueSampleRow), rows)


async def totals_between(
    session: AsyncSession, since: datetime, until: datetime, *, limit: int
) -> list[TotalsPoint]:
    """Totals samples in [since, until), oldest first, at most `limit` of them."""
    query = (
        select(SidekiqSampleRow)
        .where(SidekiqSampleRow.sampled_at >= stored_time(since))
        .where(SidekiqSampleRow.sampled_at < stored_time(until))
        .order_by(SidekiqSampleRow.sampled_at)
        .limit(limit)
    )
    return [
        TotalsPoint(
            sampled_at=row.sampled_at.replace(tzinfo=UTC),
            processed=row.processed,
            failed=row.failed,
            enqueued=row.enqueued,
            scheduled=row.scheduled,
            retry=row.retry,
            dead=row.dead,
            processes=row.processes,
            workers=row.workers,
            busy=row.busy,
        )
        for row in (await session.scalars(query)).all()
    ]


async def queue_points_between(
    session: AsyncSession, queue: str, since: datetime, until: datetime, *, limit: int
) -> list[QueuePoint]:
    query = (
        select(QueueSampleRow)
        .where(QueueSampleRow.queue == queue)
        .where(QueueSampleRow.sampled_at >= stored_time(since))
        .where(QueueSampleRow.sampled_at < stored_time(until))
        .order_by(QueueSampleRow.sampled_at)
        .limit(limit)
    )
    return [
        QueuePoint(
            sampled_at=row.sampled_at.replace(tzinfo=UTC),
            queue=row.queue,
            size=row.size,
            latency_seconds=row.latency_seconds,
            busy=row.busy,
        )
        for row in (await session.scalars(query)).all()
    ]


@dataclass(frozen=True, slots=True)
class TotalsBucket:
    """Samples gathered into one time bucket: the counters' last values, the gauges' means."""

    start: datetime
    processed: int
    failed: int
    enqueued: float
    busy: float
    retry: int
    dead: int
    scheduled: int


def _seconds_since(session: AsyncSession, since: datetime) -> ColumnElement[float]:
    """Seconds from `since` to each sample, in the database (no zone arithmetic involved)."""
    column = SidekiqSampleRow.sampled_at
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(column) - func.julianday(stored_time(since))) * 86_400.0
    return cast(func.timestampdiff(literal_column("SECOND"), stored_time(since), column), Float)


async def totals_by_bucket(
    session: AsyncSession, since: datetime, until: datetime, *, bucket_seconds: int
) -> list[TotalsBucket]:
    """Totals in [since, until) in buckets of `bucket_seconds`, oldest first: one row per
    bucket whatever the sample interval, so a month of history stays a few hundred points."""
    bucket = func.floor(_seconds_since(session, since) / bucket_seconds).label("bucket")
    row = SidekiqSampleRow
    query = (
        select(
            bucket,
            func.max(row.processed),
            func.max(row.failed),
            func.avg(row.enqueued),
            func.avg(row.busy),
            func.max(row.retry),
            func.max(row.dead),
            func.max(row.scheduled),
        )
        .where(row.sampled_at >= stored_time(since), row.sampled_at < stored_time(until))
        .group_by(bucket)
        .order_by(bucket)
    )
    return [
        TotalsBucket(
            start=since + timedelta(seconds=int(number) * bucket_seconds),
            processed=int(processed),
            failed=int(failed),
            enqueued=float(enqueued),
            busy=float(busy),
            retry=int(retry),
            dead=int(dead),
            scheduled=int(scheduled),
        )
        for number, processed, failed, enqueued, busy, retry, dead, scheduled in (
            await session.execute(query)
        ).all()
    ]
