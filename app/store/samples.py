"""Sidekiq history: one sidekiq_samples row per tick and a queue_samples row per queue."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import Snapshot
from app.store.tables import QueueSampleRow, SidekiqSampleRow, Timestamp, stored_time


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


TOTALS_COLUMNS = (
    "sampled_at, processed, failed, enqueued, scheduled, retry, dead, processes, workers, busy"
)
# One slice's first sample, wrapped as a derived table: SQLite refuses LIMIT inside a UNION's
# members. Written as text: building and compiling the same statement in SQLAlchemy's
# expression language took 150 ms of Python for 240 slices.
FIRST_IN_SLICE = (
    f"SELECT * FROM (SELECT {TOTALS_COLUMNS} FROM sidekiq_samples "
    "WHERE sampled_at >= :start_{n} AND sampled_at < :end_{n} ORDER BY sampled_at LIMIT 1) AS s{n}"
)


async def totals_by_bucket(
    session: AsyncSession, since: datetime, until: datetime, *, buckets: int
) -> list[TotalsPoint]:
    """The first totals sample of each of `buckets` equal slices of [since, until), oldest
    first (empty slices give nothing): a month of 10-second samples becomes a few hundred
    points in one statement of `buckets` index seeks, where grouping every row took 160 ms.
    Counters stay exact at each point, so rates between points are too."""
    step = (until - since) / buckets
    parts = [FIRST_IN_SLICE.format(n=n) for n in range(buckets)]
    statement = text(" UNION ALL ".join(parts) + " ORDER BY sampled_at").bindparams(
        *(
            bindparam(f"start_{n}", stored_time(since + step * n), Timestamp)
            for n in range(buckets)
        ),
        *(
            bindparam(f"end_{n}", stored_time(since + step * (n + 1)), Timestamp)
            for n in range(buckets)
        ),
    )
    typed = statement.columns(sampled_at=Timestamp)
    rows = (await session.execute(typed)).mappings().all()
    return [_totals_point(row) for row in rows]


def _totals_point(row: Any) -> TotalsPoint:
    return TotalsPoint(
        sampled_at=row["sampled_at"].replace(tzinfo=UTC),
        processed=row["processed"],
        failed=row["failed"],
        enqueued=row["enqueued"],
        scheduled=row["scheduled"],
        retry=row["retry"],
        dead=row["dead"],
        processes=row["processes"],
        workers=row["workers"],
        busy=row["busy"],
    )
