"""Reading the ledger: filtered, keyset-paged lists (newest activity first), one job, durations.

Every list is ordered by (last_event_at, jid) descending, which an index serves directly for
each single filter (status, queue, class, time range); the page is fetched with LIMIT n+1.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, or_, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import (
    EventName,
    Job,
    JobFilter,
    JobStatus,
    Page,
    StuckRule,
    TimelineEntry,
    as_utc,
)
from app.errors import BadRequest, InvalidInput
from app.store.overdue import stuck_conditions
from app.store.tables import JobEventRow, JobRow, read_time, stored_time

BAD_CURSOR = "cursor: not a cursor this API returned"


def _job(row: JobRow) -> Job:
    return Job(
        jid=row.jid,
        status=JobStatus(row.status),
        job_class=row.job_class,
        queue=row.queue,
        arguments=row.arguments,
        arguments_truncated=bool(row.arguments_truncated),
        arguments_redacted=bool(row.arguments_redacted),
        enqueued_at=read_time(row.enqueued_at),
        scheduled_for=read_time(row.scheduled_for),
        started_at=read_time(row.started_at),
        completed_at=read_time(row.completed_at),
        failed_at=read_time(row.failed_at),
        first_seen_at=row.first_seen_at.replace(tzinfo=UTC),
        last_event_at=row.last_event_at.replace(tzinfo=UTC),
        attempts=row.attempts,
        error_class=row.error_class,
        error_message=row.error_message,
        process=row.process,
        requeued_as=row.requeued_as,
    )


def encode_cursor(job: Job) -> str:
    raw = f"{job.last_event_at.isoformat()}|{job.jid}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (last_event_at, jid) a page ended at; BadRequest when it was not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, jid = raw.split("|", 1)
        parsed = datetime.fromisoformat(moment)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(BAD_CURSOR) from exc
    try:
        return as_utc(parsed), jid
    except ValueError as exc:
        raise InvalidInput({"cursor": f"its time {exc}"}) from None


def _conditions(flt: JobFilter) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    if flt.statuses:
        found.append(JobRow.status.in_([s.value for s in flt.statuses]))
    if flt.queue is not None:
        found.append(JobRow.queue == flt.queue)
    if flt.job_class is not None:
        found.append(JobRow.job_class == flt.job_class)
    if flt.arguments:
        # autoescape: %, _ and the escape character itself match as plain text.
        found.append(JobRow.arguments.contains(flt.arguments, autoescape=True))
    if flt.since is not None:
        found.append(JobRow.last_event_at >= stored_time(flt.since))
    if flt.until is not None:
        found.append(JobRow.last_event_at < stored_time(flt.until))
    if flt.jid is not None:
        found.append(JobRow.jid == flt.jid)
    if flt.stuck is not None:
        found.extend(_stuck(flt.stuck))
    return found


def _stuck(rule: StuckRule) -> list[ColumnElement[bool]]:
    """The stuck conditions plus a plain bound on last_event_at, so the listing is a range of
    ix_jobs_status_recent rather than a walk past every recent start. The bound is implied: a
    started row's newest event is its latest start, so last_event_at <= started_at."""
    return [*stuck_conditions(rule), JobRow.last_event_at < stored_time(rule.latest_cutoff)]


def _after(cursor: str | None) -> list[ColumnElement[bool]]:
    if cursor is None:
        return []
    moment, jid = decode_cursor(cursor)
    at = stored_time(moment)
    # Written as a range on last_event_at plus a tie-break so the index range scan applies.
    return [
        JobRow.last_event_at <= at,
        or_(JobRow.last_event_at < at, and_(JobRow.last_event_at == at, JobRow.jid < jid)),
    ]


NEWEST_FIRST = (JobRow.last_event_at.desc(), JobRow.jid.desc())


class SearchStopped(Exception):
    """An argument search reached its time limit on the server (MySQL/MariaDB)."""


# ER_STATEMENT_TIMEOUT (MariaDB max_statement_time), ER_QUERY_TIMEOUT (MySQL max_execution_time)
STATEMENT_TIMEOUT_CODES = {1969, 3024}


@asynccontextmanager
async def _time_limited(
    session: AsyncSession, flt: JobFilter, seconds: float | None
) -> AsyncIterator[None]:
    """Cap the statements inside when `flt` searches arguments: no index can serve a substring,
    so a rare needle reads every candidate row. Raises SearchStopped at the limit. SQLite (the
    small embedded default) has no such limit."""
    if not flt.arguments or seconds is None:
        yield
        return
    # The dialect learns MariaDB from MySQL on its first connection, so connect first.
    dialect = (await session.connection()).dialect
    if dialect.name != "mysql":
        yield
        return
    mariadb = bool(getattr(dialect, "is_mariadb", False))
    name = "max_statement_time" if mariadb else "max_execution_time"
    value = f"{seconds:.3f}" if mariadb else str(int(seconds * 1000))
    await session.execute(text(f"SET SESSION {name} = {value}"))
    try:
        yield
    except DBAPIError as exc:
        code = getattr(exc.orig, "args", (None,))[0]
        if code in STATEMENT_TIMEOUT_CODES:
            raise SearchStopped(str(exc.orig)) from exc
        raise
    finally:
        await session.execute(text(f"SET SESSION {name} = 0"))


async def list_jobs(
    session: AsyncSession,
    flt: JobFilter,
    *,
    limit: int,
    cursor: str | None = None,
    search_seconds: float | None = None,
) -> Page:
    """One page of jobs matching `flt`, newest activity first; an argument search that runs
    past `search_seconds` answers an empty page marked `stopped`."""
    query = (
        select(JobRow)
        .where(*_conditions(flt), *_after(cursor))
        .order_by(*NEWEST_FIRST)
        .limit(limit + 1)
    )
    if flt.stuck is not None and flt.queue is None and flt.job_class is None:
        # MariaDB otherwise reads the status index from its newest entry (ref access), past
        # every recent start, rather than from the stuck bound: 2.3 s -> 2 ms at 1M rows.
        query = query.with_hint(JobRow, "FORCE INDEX (ix_jobs_status_recent)", "mysql")
    try:
        async with _time_limited(session, flt, search_seconds):
            rows = (await session.scalars(query)).all()
    except SearchStopped:
        return Page(items=[], next_cursor=None, stopped=True)
    jobs = [_job(row) for row in rows[:limit]]
    next_cursor = encode_cursor(jobs[-1]) if len(rows) > limit else None
    return Page(items=jobs, next_cursor=next_cursor)


async def get_job(session: AsyncSession, jid: str) -> Job | None:
    row = await session.get(JobRow, jid)
    return None if row is None else _job(row)


async def get_timeline(
    session: AsyncSession, jid: str, *, limit: int | None = None
) -> list[TimelineEntry]:
    """The job's events in event-time order, as received (the first `limit`, when given)."""
    query = (
        select(JobEventRow)
        .where(JobEventRow.jid == jid)
        .order_by(JobEventRow.at, JobEventRow.id)
        .limit(limit)
    )
    return [
        TimelineEntry(
            event=EventName(row.event),
            at=row.at.replace(tzinfo=UTC),
            received_at=row.received_at.replace(tzinfo=UTC),
            queue=row.queue,
            job_class=row.job_class,
            process=row.process,
            retry_count=row.retry_count,
            error_class=row.error_class,
            error_message=row.error_message,
        )
        for row in (await session.scalars(query)).all()
    ]


async def completion_times(
    session: AsyncSession, flt: JobFilter, *, limit: int, search_seconds: float | None = None
) -> list[tuple[datetime | None, datetime | None, datetime]]:
    """(enqueued_at, started_at, completed_at) of the `limit` newest completed jobs in `flt`:
    the sample percentiles are computed over, read from the covering status index. Raises
    SearchStopped when an argument search runs past `search_seconds`."""
    query = (
        select(JobRow.enqueued_at, JobRow.started_at, JobRow.completed_at)
        .where(*_conditions(flt.with_statuses(JobStatus.COMPLETE)))
        .order_by(*NEWEST_FIRST)
        .limit(limit)
    )
    async with _time_limited(session, flt, search_seconds):
        rows = (await session.execute(query)).all()
    return [
        (read_time(q), read_time(s), c.replace(tzinfo=UTC)) for q, s, c in rows if c is not None
    ]
