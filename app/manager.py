"""JobManager: the console API, named as in the original supervisor (queued_jobs, ...).

Every method takes an optional filter: a string (matched as plain text inside the job's
arguments, as the original did) or a JobFilter; lists come back one page at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain import Job, JobFilter, JobStatus, Page, Percentiles, TimelineEntry
from app.store import jobs as ledger

FilterArg = str | JobFilter | None


@dataclass(frozen=True, slots=True)
class DurationReport:
    """A page of completed jobs plus percentiles of one duration over the newest completions."""

    measure: str
    items: list[Job]
    next_cursor: str | None
    percentiles: Percentiles
    sample_limit: int


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
        page_size: int = 50,
        sample_limit: int = 10_000,
    ) -> None:
        self._sessions = sessions
        self.page_size = page_size
        self.sample_limit = sample_limit

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
        listing = await self._list(completed, limit=limit, cursor=cursor)
        total, run = await self._samples(completed)
        return Durations(listing, percentiles(total), percentiles(run), self.sample_limit)

    async def job(self, jid: str) -> Job | None:
        async with self._sessions() as session:
            return await ledger.get_job(session, jid)

    async def timeline(self, jid: str) -> list[TimelineEntry]:
        async with self._sessions() as session:
            return await ledger.get_timeline(session, jid)

    async def _list(self, flt: JobFilter, *, limit: int | None, cursor: str | None) -> Page:
        async with self._sessions() as session:
            return await ledger.list_jobs(
                session, flt, limit=limit or self.page_size, cursor=cursor
            )

    async def _report(
        self, measure: str, flt: JobFilter, *, limit: int | None, cursor: str | None
    ) -> DurationReport:
        completed = flt.with_statuses(JobStatus.COMPLETE)
        listing = await self._list(completed, limit=limit, cursor=cursor)
        total, run = await self._samples(completed)
        values = total if measure == "queued_to_completed" else run
        return DurationReport(
            measure, listing.items, listing.next_cursor, percentiles(values), self.sample_limit
        )

    async def _samples(self, completed: JobFilter) -> tuple[list[float], list[float]]:
        async with self._sessions() as session:
            rows = await ledger.completion_times(session, completed, limit=self.sample_limit)
        total = [(done - queued).total_seconds() for queued, _, done in rows if queued]
        run = [(done - started).total_seconds() for _, started, done in rows if started]
        return total, run
