"""JobManager: the console API, named as in the original supervisor (queued_jobs, ...).

Every method takes an optional filter: a string (matched as plain text inside the job's
arguments, as the original did) or a JobFilter; lists come back one page at a time.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import orjson
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain import (
    EventName,
    Job,
    JobEvent,
    JobFilter,
    JobStatus,
    Page,
    Percentiles,
    Snapshot,
    TimelineEntry,
)
from app.errors import Unavailable
from app.sidekiq.commands import Control, sidekiq_time, uses_milliseconds
from app.sidekiq.keys import Keys
from app.sidekiq.reader import read_snapshot
from app.store import ledger_reads as ledger
from app.store.db import session_connection
from app.store.ledger_writes import LedgerUnavailable, write_events

FilterArg = str | JobFilter | None
# What "uncompleted" means for requeue: started and never finished, or found lost.
REQUEUABLE = (JobStatus.STARTED, JobStatus.LOST)
# An earlier call pushed it: its guard names the new jid, which this call records (again).
REQUEUED_AS = "already requeued as {new_jid} (by another call or replica)"
NOT_RECORDED = (
    "{count} requeued job(s) are in Sidekiq but the ledger could not record them ({reason}); "
    "try again: the retry records them and pushes none of them twice"
)
NO_REDIS = "this JobManager has no Redis connection; build it with redis= to requeue"
SKIP_RUNNING = "running now on {process}"
SKIP_TRUNCATED = "its stored arguments were truncated, so the job cannot be rebuilt"
SKIP_REDACTED = "its stored arguments had secrets redacted, so the job cannot be rebuilt"
SKIP_INCOMPLETE = "the ledger has no class, queue or arguments for it"
SKIP_TWICE = "already requeued (by another call or replica)"


@dataclass(frozen=True, slots=True)
class Requeue:
    """One ledger job and what requeue did or would do with it."""

    job: Job
    new_jid: str | None = None
    skipped: str | None = None
    # When the new job was pushed: the time its ledger events carry.
    pushed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RequeueReport:
    dry_run: bool
    items: list[Requeue]

    @property
    def requeued(self) -> list[Requeue]:
        return [item for item in self.items if item.new_jid is not None and item.skipped is None]

    @property
    def skipped(self) -> list[Requeue]:
        return [item for item in self.items if item.skipped is not None]


@dataclass(frozen=True, slots=True)
class DurationReport:
    """A page of completed jobs plus percentiles of one duration over the newest completions."""

    measure: str
    items: list[Job]
    next_cursor: str | None
    percentiles: Percentiles
    sample_limit: int
    stopped: bool = False


@dataclass(frozen=True, slots=True)
class CompletionSamples:
    """Seconds the newest completed jobs of a filter waited (enqueue to start), ran (start to
    completion) and took in all (enqueue to completion); a job missing a time is left out."""

    wait: list[float]
    run: list[float]
    total: list[float]


@dataclass(frozen=True, slots=True)
class Durations:
    """Both duration distributions at once (what GET /api/v1/jobs/durations answers)."""

    page: Page
    queued_to_completed: Percentiles
    started_to_completed: Percentiles
    sample_limit: int


def as_filter(value: FilterArg) -> JobFilter:
    if value is None:
        return JobFilter()
    if isinstance(value, str):
        return JobFilter(arguments=value)
    return value


def percentiles(values: Sequence[float]) -> Percentiles:
    """Nearest-rank percentiles (each one an observed value)."""
    if not values:
        return Percentiles(count=0)
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return Percentiles(
        count=len(ordered), p50=rank(50), p90=rank(90), p95=rank(95), p99=rank(99), max=ordered[-1]
    )


class JobManager:
    """Ask the ledger what Sidekiq did: still queued, started and never finished, durations."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        redis: Redis | None = None,
        keys: Keys | None = None,
        page_size: int = 50,
        sample_limit: int = 2_000,
        search_seconds: float | None = 1.5,
        process_stale: timedelta = timedelta(seconds=60),
        retry_after_seconds: int = 5,
    ) -> None:
        self._sessions = sessions
        self._redis = redis
        self._keys = keys or Keys()
        self.page_size = page_size
        self.sample_limit = sample_limit
        self.search_seconds = search_seconds
        self.process_stale = process_stale
        self.retry_after_seconds = retry_after_seconds

    async def queued_jobs(
        self, flt: FilterArg = None, *, limit: int | None = None, cursor: str | None = None
    ) -> Page:
        """Jobs whose most recent status is `queued`."""
        return await self._list(
            as_filter(flt).with_statuses(JobStatus.QUEUED), limit=limit, cursor=cursor
        )

    async def uncompleted_jobs(
        self, flt: FilterArg = None, *, limit: int | None = None, cursor: str | None = None
    ) -> Page:
        """Jobs whose most recent status is `started`: they began and never reported done."""
        return await self._list(
            as_filter(flt).with_statuses(JobStatus.STARTED), limit=limit, cursor=cursor
        )

    async def completed_jobs(
        self, flt: FilterArg = None, *, limit: int | None = None, cursor: str | None = None
    ) -> Page:
        """Jobs whose most recent status is `complete`."""
        return await self._list(
            as_filter(flt).with_statuses(JobStatus.COMPLETE), limit=limit, cursor=cursor
        )

    async def lost_jobs(
        self, flt: FilterArg = None, *, limit: int | None = None, cursor: str | None = None
    ) -> Page:
        """Jobs the reconciler found lost: started and no longer running anywhere (or queued
        and no longer in their queue), with no trace in retry, dead or schedule."""
        return await self._list(
            as_filter(flt).with_statuses(JobStatus.LOST), limit=limit, cursor=cursor
        )

    async def jobs(
        self, flt: FilterArg = None, *, limit: int | None = None, cursor: str | None = None
    ) -> Page:
        """Every job matching the filter (and its statuses, if it names any)."""
        return await self._list(as_filter(flt), limit=limit, cursor=cursor)

    async def queued_to_completion_duration(
        self, flt: FilterArg = None, *, limit: int | None = None, cursor: str | None = None
    ) -> DurationReport:
        """Completed jobs and how long each took from queued to completed."""
        return await self._report("queued_to_completed", as_filter(flt), limit=limit, cursor=cursor)

    async def completed_jobs_duration(
        self, flt: FilterArg = None, *, limit: int | None = None, cursor: str | None = None
    ) -> DurationReport:
        """Completed jobs and how long each took from started to completed."""
        return await self._report(
            "started_to_completed", as_filter(flt), limit=limit, cursor=cursor
        )

    async def durations(
        self, flt: FilterArg = None, *, limit: int | None = None, cursor: str | None = None
    ) -> Durations:
        """Completed jobs with both distributions (queued→completed, started→completed)."""
        completed = as_filter(flt).with_statuses(JobStatus.COMPLETE)
        listing, total, run = await self._listing_and_samples(completed, limit, cursor)
        return Durations(listing, percentiles(total), percentiles(run), self.sample_limit)

    async def restart_uncompleted_jobs(
        self, flt: FilterArg = None, *, dry_run: bool = False, limit: int = 1_000
    ) -> RequeueReport:
        """Push uncompleted (started or lost) jobs back into their Sidekiq queue, as new jobs.

        Never one running now (in the busy-work hash of a process whose heartbeat is younger
        than `process_stale`), never one twice (a Redis guard per original jid); times in the
        units the fleet's Sidekiq writes. The ledger keeps the original row,
        marked `requeued` with `requeued_as` naming the new jid, which is recorded as queued.

        The guard names the new jid, so a job an earlier call pushed is recorded again (the
        ledger's merge makes that harmless) and reported as already requeued as that jid: a
        call whose record failed (Unavailable, 503) is repaired by retrying it. A dry run
        writes nothing, to Redis or the ledger.
        """
        if self._redis is None:
            raise RuntimeError(NO_REDIS)
        candidates = await self._candidates(as_filter(flt), limit)
        snapshot = await read_snapshot(self._redis, self._keys)
        running = snapshot.running(self.process_stale)
        planned = [_plan(job, running) for job in candidates]
        if dry_run:
            return RequeueReport(True, planned)
        control = Control(self._redis, self._keys)
        done = [await self._push(item, control, snapshot) for item in planned]
        await self._record(done)
        return RequeueReport(False, done)

    async def _candidates(self, flt: JobFilter, limit: int) -> list[Job]:
        """Started, then lost jobs in `flt` (only those of its statuses, when it names any)."""
        found: list[Job] = []
        for status in REQUEUABLE:
            if flt.statuses and status not in flt.statuses:
                continue
            cursor: str | None = None
            while len(found) < limit:
                page = await self._list(
                    flt.with_statuses(status), limit=min(500, limit - len(found)), cursor=cursor
                )
                found.extend(page.items)
                cursor = page.next_cursor
                if cursor is None:
                    break
        return found[:limit]

    async def _push(self, item: Requeue, control: Control, snapshot: Snapshot) -> Requeue:
        """Push the job as a new one, or learn from its guard which call did already."""
        if item.skipped is not None:
            return item
        job = item.job
        new_jid, at = secrets.token_hex(12), datetime.now(UTC)
        mark = _guard_mark(new_jid, at)
        guard = await control.push_once(
            f"requeued:{job.jid}", str(job.queue), _payload(job, new_jid, at, snapshot), mark=mark
        )
        if guard == mark:
            return Requeue(job, new_jid, pushed_at=at)
        earlier = _read_guard_mark(guard)
        if earlier is None:  # a guard from before guards named the new jid
            return Requeue(job, skipped=SKIP_TWICE)
        new_jid, at = earlier
        return Requeue(job, new_jid, skipped=REQUEUED_AS.format(new_jid=new_jid), pushed_at=at)

    async def _record(self, items: list[Requeue]) -> None:
        """`requeued` on each original row and `queued` for its new jid, dated when it was
        pushed (so the new job's own events win, whatever order they arrive in). Raises
        Unavailable when the ledger cannot take them now: the jobs are in Sidekiq already,
        and a retry records them without pushing them again."""
        received = datetime.now(UTC)
        events = [event for item in items for event in _requeue_events(item, received)]
        if not events:
            return
        try:
            await write_events(functools.partial(session_connection, self._sessions), events)
        except LedgerUnavailable as exc:
            detail = NOT_RECORDED.format(count=len(events) // 2, reason=exc)
            raise Unavailable(detail, retry_after_seconds=self.retry_after_seconds) from exc

    async def job(self, jid: str) -> Job | None:
        async with self._sessions() as session:
            return await ledger.get_job(session, jid)

    async def timeline(self, jid: str) -> list[TimelineEntry]:
        async with self._sessions() as session:
            return await ledger.get_timeline(session, jid)

    async def _list(self, flt: JobFilter, *, limit: int | None, cursor: str | None) -> Page:
        async with self._sessions() as session:
            return await ledger.list_jobs(
                session,
                flt,
                limit=limit or self.page_size,
                cursor=cursor,
                search_seconds=self.search_seconds,
            )

    async def _report(
        self, measure: str, flt: JobFilter, *, limit: int | None, cursor: str | None
    ) -> DurationReport:
        completed = flt.with_statuses(JobStatus.COMPLETE)
        listing, total, run = await self._listing_and_samples(completed, limit, cursor)
        values = total if measure == "queued_to_completed" else run
        return DurationReport(
            measure,
            listing.items,
            listing.next_cursor,
            percentiles(values),
            self.sample_limit,
            stopped=listing.stopped,
        )

    async def _listing_and_samples(
        self, completed: JobFilter, limit: int | None, cursor: str | None
    ) -> tuple[Page, list[float], list[float]]:
        """The page and the duration samples; once an argument search is stopped, the
        sample is not tried (it would scan the same rows) and comes back empty."""
        listing = await self._list(completed, limit=limit, cursor=cursor)
        if listing.stopped:
            return listing, [], []
        try:
            samples = await self.completion_samples(completed)
        except ledger.SearchStopped:
            return replace(listing, stopped=True), [], []
        return listing, samples.total, samples.run

    async def completion_samples(self, flt: JobFilter) -> CompletionSamples:
        """Over the newest `sample_limit` completions in `flt` (what percentiles are taken
        over); raises SearchStopped when an argument search runs out of time."""
        async with self._sessions() as session:
            rows = await ledger.completion_times(
                session, flt, limit=self.sample_limit, search_seconds=self.search_seconds
            )
        return CompletionSamples(
            wait=[(s - q).total_seconds() for q, s, _ in rows if q and s],
            run=[(done - s).total_seconds() for _, s, done in rows if s],
            total=[(done - q).total_seconds() for q, _, done in rows if q],
        )


def _plan(job: Job, running: dict[str, str]) -> Requeue:
    """What requeue would do with `job`: a Requeue with `skipped` set when it must not."""
    if job.jid in running:
        return Requeue(job, skipped=SKIP_RUNNING.format(process=running[job.jid]))
    if job.arguments_truncated:
        return Requeue(job, skipped=SKIP_TRUNCATED)
    if job.arguments_redacted:
        return Requeue(job, skipped=SKIP_REDACTED)
    if not (job.job_class and job.queue and job.arguments):
        return Requeue(job, skipped=SKIP_INCOMPLETE)
    return Requeue(job)


def _payload(job: Job, new_jid: str, at: datetime, snapshot: Snapshot) -> bytes:
    """The job as a new Sidekiq job, its times in the units the fleet writes."""
    now = sidekiq_time(at, uses_milliseconds(snapshot))
    payload = {
        "class": job.job_class,
        "args": orjson.loads(job.arguments or "[]"),
        "queue": job.queue,
        "retry": True,
        "jid": new_jid,
        "created_at": now,
        "enqueued_at": now,
        "requeued_from": job.jid,
    }
    return orjson.dumps(payload)


def _guard_mark(new_jid: str, at: datetime) -> bytes:
    """What a requeue guard holds: the new jid and when it was pushed."""
    return orjson.dumps({"jid": new_jid, "pushed_at": at.isoformat()})


def _read_guard_mark(mark: bytes) -> tuple[str, datetime] | None:
    """The new jid and push time in a guard; None for a guard that names none (older ones)."""
    try:
        found = orjson.loads(mark)
        jid, pushed_at = found["jid"], datetime.fromisoformat(found["pushed_at"])
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
        return None
    return (jid, pushed_at) if isinstance(jid, str) and pushed_at.tzinfo else None


def _requeue_events(item: Requeue, received: datetime) -> list[JobEvent]:
    """`requeued` on the original row and `queued` for the new jid, for an item pushed by
    this call or an earlier one; none for an item that was not pushed."""
    if item.new_jid is None or item.pushed_at is None:
        return []
    job, at = item.job, item.pushed_at
    return [
        JobEvent(job.jid, EventName.REQUEUED, at, received, requeued_as=item.new_jid),
        JobEvent(
            item.new_jid,
            EventName.QUEUED,
            at,
            received,
            job_class=job.job_class,
            queue=job.queue,
            arguments=job.arguments,
        ),
    ]
