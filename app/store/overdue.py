"""Ledger reads for the reconciler: jobs waiting on news that may never come (started and not
finished, queued and not started), and the counts behind the stuck and lost gauges.

Each read is an index range (ix_jobs_status_started_at_jid, ix_jobs_status_queue_enqueued_at,
ix_jobs_status_recent) with a LIMIT, or a GROUP BY over rows already known to be overdue.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import JobStatus, StuckRule
from app.store.ledger_writes import EPOCH, MICROSECOND
from app.store.tables import JobRow, read_time, stored_time

LabelCounts = dict[tuple[str | None, str | None], int]


@dataclass(frozen=True, slots=True)
class OpenRun:
    """A job whose newest news is `started` or `queued`. `status_at` is the time of the event
    that set the status: a derived event at that time and a higher rank refines it, while any
    later news of the job still wins."""

    jid: str
    status: JobStatus
    queue: str | None
    job_class: str | None
    status_at: datetime
    enqueued_at: datetime | None
    started_at: datetime | None


@dataclass(frozen=True, slots=True)
class RunCursor:
    """Where the paced pass over started runs stopped: the last (started_at, jid) read."""

    started_at: datetime
    jid: str


COLUMNS = (
    JobRow.jid,
    JobRow.status,
    JobRow.queue,
    JobRow.job_class,
    JobRow.status_key,
    JobRow.enqueued_at,
    JobRow.started_at,
)


def _run(row: tuple[object, ...]) -> OpenRun:
    jid, status, queue, job_class, status_key, enqueued_at, started_at = row
    assert isinstance(status_key, int)
    return OpenRun(
        jid=str(jid),
        status=JobStatus(str(status)),
        queue=queue if isinstance(queue, str) else None,
        job_class=job_class if isinstance(job_class, str) else None,
        status_at=EPOCH + (status_key // 8) * MICROSECOND,
        enqueued_at=read_time(enqueued_at) if isinstance(enqueued_at, datetime) else None,
        started_at=read_time(started_at) if isinstance(started_at, datetime) else None,
    )


@dataclass(frozen=True, slots=True)
class StartedPage:
    """One page of the pass over started runs: the rows not skipped, where the page ended,
    and whether it was full (so more may follow)."""

    runs: list[OpenRun]
    last: RunCursor | None
    full: bool


async def started_runs(
    session: AsyncSession,
    *,
    before: datetime,
    after: RunCursor | None,
    limit: int,
    skip: Collection[str] = (),
) -> StartedPage:
    """Up to `limit` started runs that began before `before`, oldest first, after `after`.

    The page's keys are read from the index alone, then only the rows not in `skip` (running
    now, usually most of them) are fetched by primary key.
    """
    started = JobRow.started_at
    conditions: list[ColumnElement[bool]] = [
        JobRow.status == JobStatus.STARTED.value,
        started < stored_time(before),
    ]
    if after is not None:
        at = stored_time(after.started_at)
        # The plain lower bound lets the index range start at the cursor; without it (and the
        # hint) MariaDB may walk every entry before it.
        conditions.append(started >= at)
        conditions.append(or_(started > at, and_(started == at, JobRow.jid > after.jid)))
    query = (
        select(started, JobRow.jid)
        .with_hint(JobRow, "FORCE INDEX (ix_jobs_status_started_at_jid)", "mysql")
        .where(*conditions)
        .order_by(started, JobRow.jid)
        .limit(limit)
    )
    keys = (await session.execute(query)).all()
    last = RunCursor(read_time(keys[-1][0]) or EPOCH, keys[-1][1]) if keys else None
    wanted = [jid for _, jid in keys if jid not in skip]
    found = await current_runs(session, wanted)
    # Still started: a row may have moved on between the two reads.
    runs = [found[jid] for jid in wanted if jid in found and found[jid].status is JobStatus.STARTED]
    return StartedPage(runs=runs, last=last, full=len(keys) == limit)


async def current_runs(session: AsyncSession, jids: Collection[str]) -> dict[str, OpenRun]:
    """The rows of `jids` as they are now (by primary key), whatever their status."""
    if not jids:
        return {}
    query = select(*COLUMNS).where(JobRow.jid.in_(list(jids)))
    return {run.jid: run for run in map(_run, map(tuple, (await session.execute(query)).all()))}


async def queued_runs(
    session: AsyncSession,
    *,
    cutoffs: Mapping[str, datetime],
    elsewhere_before: datetime,
    limit: int,
) -> list[OpenRun]:
    """Up to `limit` queued jobs their queue can no longer hold: enqueued before their queue's
    cutoff (`cutoffs`, one per queue Sidekiq knows), or before `elsewhere_before` for a queue
    Sidekiq does not know (or none at all)."""
    queue, enqueued = JobRow.queue, JobRow.enqueued_at
    per_queue = [
        and_(queue == name, enqueued < stored_time(cutoff)) for name, cutoff in cutoffs.items()
    ]
    unknown = or_(queue.is_(None), queue.not_in(list(cutoffs))) if cutoffs else true()
    elsewhere = and_(unknown, enqueued < stored_time(elsewhere_before))
    query = (
        select(*COLUMNS)
        .where(JobRow.status == JobStatus.QUEUED.value, or_(*per_queue, elsewhere))
        .limit(limit)
    )
    return [_run(tuple(row)) for row in (await session.execute(query)).all()]


async def stuck_counts(
    session: AsyncSession,
    *,
    now: datetime,
    after: timedelta,
    after_by_class: Mapping[str, timedelta],
) -> LabelCounts:
    """Started runs older than their class's threshold, counted by (queue, job_class), in one
    pass over the started entries of the covering index."""
    return await _grouped(session, stuck_conditions(StuckRule(now, after, after_by_class)))


async def any_stuck(session: AsyncSession, *, rule: StuckRule) -> bool:
    """Whether any started run is stuck. Reads only the runs that started before the smallest
    threshold (a range of ix_jobs_status_started_at_jid, empty while nothing runs that long)
    and stops at the first stuck one: cheap enough for every tick, unlike the count."""
    query = (
        select(JobRow.jid)
        .with_hint(JobRow, "FORCE INDEX (ix_jobs_status_started_at_jid)", "mysql")
        .where(*stuck_conditions(rule), JobRow.started_at < stored_time(rule.latest_cutoff))
        .limit(1)
    )
    return (await session.execute(query)).first() is not None


def stuck_conditions(rule: StuckRule) -> list[ColumnElement[bool]]:
    """What makes a ledger row stuck: started, and longer ago than its class's threshold."""
    now, after = rule.now, rule.after
    cutoff: ColumnElement[object] = literal(stored_time(now - after))
    if rule.after_by_class:
        cutoff = case(
            {name: stored_time(now - limit) for name, limit in rule.after_by_class.items()},
            value=JobRow.job_class,
            else_=stored_time(now - after),
        )
    return [JobRow.status == JobStatus.STARTED.value, JobRow.started_at < cutoff]


async def lost_counts(session: AsyncSession) -> LabelCounts:
    """Jobs whose status is lost (not requeued yet), by (queue, job_class)."""
    return await _grouped(session, [JobRow.status == JobStatus.LOST.value])


async def _grouped(session: AsyncSession, conditions: list[ColumnElement[bool]]) -> LabelCounts:
    query = (
        select(JobRow.queue, JobRow.job_class, func.count())
        .with_hint(JobRow, "FORCE INDEX (ix_jobs_status_queue_enqueued_at)", "mysql")
        .where(*conditions)
        .group_by(JobRow.queue, JobRow.job_class)
    )
    rows = (await session.execute(query)).all()
    return {(queue, job_class): count for queue, job_class, count in rows}
