"""The Metrics page's aggregate: the newest jobs that finished in a window (bounded), counted
per class and queue with their run and wait times, as Sidekiq 7's Metrics page shows them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import JobStatus
from app.store.tables import JobRow, stored_time

FINISHED = (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.DEAD)
# Every column read is in this index, newest activity first: the read stops after `limit`
# finished entries and never touches the rows (which would cost a random page read each).
# Without the hint MySQL may sort every finished row of the window by the status index.
FINISHED_INDEX = "FORCE INDEX (ix_jobs_finished_recent)"


# A finished job as read: class, queue, status, enqueued_at, started_at and ended_at (its
# last_event_at), times naive UTC as stored. Rows, not objects: the page reads up to
# METRICS_WINDOW_MAX_JOBS of them and building an object each cost more than the query.
FinishedRow = Row[str | None, str | None, str, datetime | None, datetime | None, datetime]


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    """From `start` to `end`; None when either is missing or they are out of order."""
    if start is None or end is None or start > end:
        return None
    return (end - start).total_seconds()


@dataclass(slots=True)
class ClassStats:
    """One (class, queue) pair's jobs: counts, and the run and wait times seen."""

    job_class: str | None
    queue: str | None
    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    run_seconds: list[float] = field(default_factory=list)
    wait_seconds: list[float] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.dead

    @property
    def failures(self) -> int:
        """Failed and dead: every job whose latest run raised."""
        return self.failed + self.dead

    @property
    def failure_rate(self) -> float:
        return self.failures / self.finished if self.finished else 0.0


async def finished_jobs(
    session: AsyncSession, *, since: datetime, until: datetime, limit: int
) -> Sequence[FinishedRow]:
    """Up to `limit` jobs that finished in [since, until), newest first (by last_event_at, the
    time of the event that ended them)."""
    query = (
        select(
            JobRow.job_class,
            JobRow.queue,
            JobRow.status,
            JobRow.enqueued_at,
            JobRow.started_at,
            JobRow.last_event_at,
        )
        .with_hint(JobRow, FINISHED_INDEX, "mysql")
        .where(
            JobRow.last_event_at >= stored_time(since),
            JobRow.last_event_at < stored_time(until),
            JobRow.status.in_([status.value for status in FINISHED]),
        )
        # No tie-break on jid (not in the index's order): which of equal times the cap keeps
        # does not matter to an aggregate.
        .order_by(JobRow.last_event_at.desc())
        .limit(limit)
    )
    return (await session.execute(query)).all()


def aggregate(rows: Iterable[FinishedRow]) -> list[ClassStats]:
    """Per (class, queue): counts by outcome, run times (latest start to success or failure)
    and wait times (first enqueue to latest start), busiest first."""
    groups: dict[tuple[str | None, str | None], ClassStats] = {}
    for job_class, queue, status, enqueued_at, started_at, ended_at in rows:
        stats = groups.get((job_class, queue))
        if stats is None:
            stats = groups[(job_class, queue)] = ClassStats(job_class, queue)
        if status == JobStatus.COMPLETE:
            stats.succeeded += 1
        elif status == JobStatus.DEAD:
            stats.dead += 1
        else:
            stats.failed += 1
        if (run := _seconds(started_at, ended_at)) is not None:
            stats.run_seconds.append(run)
        if (wait := _seconds(enqueued_at, started_at)) is not None:
            stats.wait_seconds.append(wait)
    return sorted(groups.values(), key=lambda s: (-s.finished, s.job_class or "", s.queue or ""))
