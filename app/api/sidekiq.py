"""Sidekiq's state for the GUI and CLI: stats, queues, processes, busy jobs, paged sets, history.

Stats, queues, processes and busy jobs come from the sampler's snapshot while it is younger than
one sample interval, else from a fresh read. Sets and queues are read one bounded page at a time.
Every job payload is answered with its secrets redacted (SUPERVISOR_REDACT_*).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from app.api.schemas import READER_ERRORS, error_response
from app.api.sidekiq_schemas import (
    BusyJobOut,
    BusyOut,
    Direction,
    HistoryOut,
    ProcessesOut,
    ProcessOut,
    QueueEntryOut,
    QueueOut,
    QueuePageOut,
    QueuePointOut,
    QueuesOut,
    SetEntryOut,
    SetPageOut,
    StatsOut,
    TotalsPointOut,
)
from app.deps import LimitDep, Offset, ResourcesDep, SnapshotDep, require_reader
from app.domain import OUT_OF_RANGE, as_utc, next_offset
from app.errors import InvalidInput
from app.sidekiq.browse import (
    DEAD,
    MAX_SUBSTR_CHARS,
    RETRIES,
    SCHEDULED,
    SetView,
    parse_job,
    read_queue_page,
    read_set,
    redact,
    redact_entries,
)
from app.store.samples import queue_points_between, totals_between

REDIS_DOWN = error_response(503, "Sidekiq's Redis did not answer: retry after Retry-After.")
router = APIRouter(
    prefix="/api/v1",
    tags=["sidekiq"],
    dependencies=[Depends(require_reader)],
    responses=READER_ERRORS,
)

HISTORY_WINDOW = timedelta(hours=24)
MAX_HISTORY_POINTS = 10_000
EMPTY_RANGE = "must be before `until`"


class PageParams:
    """offset/limit/direction, shared by the set and queue listings."""

    def __init__(
        self,
        limit: LimitDep,
        offset: Offset = 0,
        direction: Annotated[
            Direction | None, Query(description="asc: oldest/lowest first (default per list).")
        ] = None,
    ) -> None:
        self.limit = limit
        self.offset = offset
        self.direction = direction


PageDep = Annotated[PageParams, Depends()]
Substr = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_SUBSTR_CHARS,
        description="Plain, case-sensitive substring of the job JSON (a bounded ZSCAN).",
    ),
]


@router.get("/stats", summary="Sidekiq's summary bar", responses=REDIS_DOWN)
async def read_stats(current: SnapshotDep) -> StatsOut:
    return StatsOut.of(current.snapshot, from_sampler=current.from_sampler)


@router.get("/queues", summary="Queues with their size and latency", responses=REDIS_DOWN)
async def list_queues(current: SnapshotDep) -> QueuesOut:
    snap = current.snapshot
    items = [QueueOut.of(queue) for queue in snap.queues]
    return QueuesOut(taken_at=snap.taken_at, from_sampler=current.from_sampler, items=items)


@router.get("/processes", summary="Live Sidekiq processes", responses=REDIS_DOWN)
async def list_processes(current: SnapshotDep) -> ProcessesOut:
    snap = current.snapshot
    running = Counter(job.process for job in snap.busy_jobs)
    items = [ProcessOut.of(p, running=running[p.identity]) for p in snap.processes]
    return ProcessesOut(taken_at=snap.taken_at, from_sampler=current.from_sampler, items=items)


@router.get("/busy", summary="Jobs running now, oldest start first", responses=REDIS_DOWN)
async def list_busy(found: ResourcesDep, current: SnapshotDep) -> BusyOut:
    snap = current.snapshot
    items = [
        BusyJobOut.of(
            job, redact(parse_job(job.payload.encode()), found.redactor), taken_at=snap.taken_at
        )
        for job in snap.busy_jobs
    ]
    return BusyOut(taken_at=snap.taken_at, from_sampler=current.from_sampler, items=items)


@router.get("/retries", summary="Jobs waiting to be retried, soonest first", responses=REDIS_DOWN)
async def list_retries(found: ResourcesDep, page: PageDep, substr: Substr = None) -> SetPageOut:
    return await _set_page(found, RETRIES, page, substr)


@router.get("/scheduled", summary="Scheduled jobs, soonest first", responses=REDIS_DOWN)
async def list_scheduled(found: ResourcesDep, page: PageDep, substr: Substr = None) -> SetPageOut:
    return await _set_page(found, SCHEDULED, page, substr)


@router.get("/dead", summary="Dead jobs (the morgue), newest first", responses=REDIS_DOWN)
async def list_dead(found: ResourcesDep, page: PageDep, substr: Substr = None) -> SetPageOut:
    return await _set_page(found, DEAD, page, substr)


async def _set_page(
    found: ResourcesDep, view: SetView, page: PageParams, substr: str | None
) -> SetPageOut:
    newest_first = view.is_newest_first(page.direction)
    result = await read_set(
        found.redis,
        found.keys.key(view.source.value),
        substr=substr,
        offset=page.offset,
        limit=page.limit,
        newest_first=newest_first,
        redactor=found.redactor,
    )
    return SetPageOut(
        name=view.name,
        score_means=view.score_means,
        direction="desc" if newest_first else "asc",
        offset=page.offset,
        limit=page.limit,
        total=result.total,
        next_offset=next_offset(page.offset, len(result.entries), result.total),
        substr=substr,
        scan_complete=result.scan_complete,
        items=[SetEntryOut.of(entry) for entry in redact_entries(result.entries, found.redactor)],
    )


@router.get(
    "/queues/{name}/jobs", summary="A queue's jobs, newest first by default", responses=REDIS_DOWN
)
async def list_queue_jobs(
    found: ResourcesDep, name: Annotated[str, Path(max_length=255)], page: PageDep
) -> QueuePageOut:
    oldest_first = page.direction == "asc"
    key = found.keys.queue(name)
    result = await read_queue_page(
        found.redis, key, offset=page.offset, limit=page.limit, oldest_first=oldest_first
    )
    return QueuePageOut(
        queue=name,
        direction="asc" if oldest_first else "desc",
        offset=page.offset,
        limit=page.limit,
        total=result.total,
        next_offset=next_offset(page.offset, len(result.entries), result.total),
        items=[
            QueueEntryOut.of(replace(entry, job=redact(entry.job, found.redactor)))
            for entry in result.entries
        ],
    )


@router.get(
    "/history",
    summary="Sampled totals (or one queue's samples) over a time range, oldest first",
    responses=error_response(503, "The database did not answer: retry after Retry-After."),
)
async def read_history(
    found: ResourcesDep,
    since: Annotated[datetime | None, Query(description="Default: 24 h before `until`.")] = None,
    until: Annotated[datetime | None, Query(description="Default: now. Exclusive.")] = None,
    queue: Annotated[str | None, Query(max_length=255, description="One queue's points.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_POINTS)] = MAX_HISTORY_POINTS,
) -> HistoryOut:
    start, end = _window(since, until)
    totals, points = await _read_samples(found, start, end, queue=queue, limit=limit)
    return HistoryOut(
        since=start,
        until=end,
        queue=queue,
        limit=limit,
        truncated=len(totals) + len(points) >= limit,
        totals=totals,
        queue_points=points,
    )


async def _read_samples(
    found: ResourcesDep, since: datetime, until: datetime, *, queue: str | None, limit: int
) -> tuple[list[TotalsPointOut], list[QueuePointOut]]:
    """Totals when `queue` is None, else that queue's points (the other list stays empty)."""
    async with found.sessions() as session:
        if queue is None:
            rows = await totals_between(session, since, until, limit=limit)
            return [TotalsPointOut.of(row) for row in rows], []
        points = await queue_points_between(session, queue, since, until, limit=limit)
        return [], [QueuePointOut.of(point) for point in points]


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """The history's [since, until) in UTC: by default the day before now; 422 when a time is
    out of range or the window is empty."""
    try:
        end = as_utc(until) if until else datetime.now(UTC)
    except ValueError as exc:
        raise InvalidInput({"until": str(exc)}) from None
    try:
        start = as_utc(since) if since else end - HISTORY_WINDOW
    except (ValueError, OverflowError):
        raise InvalidInput({"since" if since else "until": OUT_OF_RANGE}) from None
    if start >= end:
        raise InvalidInput({"since": EMPTY_RANGE})
    return start, end
