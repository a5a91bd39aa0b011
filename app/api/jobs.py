"""The ledger's read API: filtered, keyset-paged job lists, one job with its timeline, durations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.api.schemas import (
    READER_ERRORS,
    DurationsOut,
    JobDetailOut,
    JobOut,
    JobPageOut,
    PercentilesOut,
    TimelineEntryOut,
    error_response,
)
from app.deps import LimitDep, ManagerDep, require_reader
from app.domain import JobFilter, JobStatus, as_utc
from app.errors import InvalidInput, NotFound

router = APIRouter(
    prefix="/api/v1",
    tags=["jobs"],
    dependencies=[Depends(require_reader)],
    responses=READER_ERRORS,
)
BAD_CURSOR = error_response(400, "`cursor` is not a next_cursor this API returned.")

NO_SUCH_JOB = "no job {jid!r} in the ledger"


class FilterParams:
    """The query parameters every list shares."""

    def __init__(
        self,
        status: Annotated[list[JobStatus] | None, Query(description="Repeat for several.")] = None,
        queue: str | None = None,
        job_class: str | None = None,
        arguments: Annotated[
            str | None, Query(description="Plain-text substring of the arguments (%, _ literal).")
        ] = None,
        since: Annotated[datetime | None, Query(description="Last activity at or after.")] = None,
        until: Annotated[datetime | None, Query(description="Last activity before.")] = None,
    ) -> None:
        self.filter = JobFilter(
            arguments=arguments,
            statuses=tuple(status or ()),
            queue=queue,
            job_class=job_class,
            since=_utc("since", since),
            until=_utc("until", until),
        )


def _utc(name: str, moment: datetime | None) -> datetime | None:
    """A query time as UTC; 422 naming `name` when it is out of range."""
    try:
        return None if moment is None else as_utc(moment)
    except ValueError as exc:
        raise InvalidInput({name: str(exc)}) from None


FilterDep = Annotated[FilterParams, Depends()]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]


@router.get(
    "/jobs",
    summary="List jobs, newest activity first",
    response_model=JobPageOut,
    responses=BAD_CURSOR,
)
async def list_jobs(
    manager: ManagerDep, params: FilterDep, limit: LimitDep, cursor: Cursor = None
) -> JobPageOut:
    page = await manager.jobs(params.filter, limit=limit, cursor=cursor)
    return JobPageOut(
        items=[JobOut.of(job) for job in page.items],
        next_cursor=page.next_cursor,
        search_stopped=page.stopped,
    )


@router.get(
    "/jobs/durations",
    summary="Completed jobs with wait/run/total durations and percentiles",
    response_model=DurationsOut,
    responses=BAD_CURSOR,
)
async def job_durations(
    manager: ManagerDep, params: FilterDep, limit: LimitDep, cursor: Cursor = None
) -> DurationsOut:
    found = await manager.durations(params.filter, limit=limit, cursor=cursor)
    return DurationsOut(
        items=[JobOut.of(job) for job in found.page.items],
        next_cursor=found.page.next_cursor,
        search_stopped=found.page.stopped,
        queued_to_completed=PercentilesOut.of(found.queued_to_completed),
        started_to_completed=PercentilesOut.of(found.started_to_completed),
        sample_limit=found.sample_limit,
    )


@router.get(
    "/jobs/{job_id}",
    summary="One job and its timeline",
    response_model=JobDetailOut,
    responses=error_response(404, "No job by that jid in the ledger."),
)
async def job_detail(manager: ManagerDep, job_id: str) -> JobDetailOut:
    job = await manager.job(job_id)
    if job is None or job.jid != job_id:  # MySQL's PAD SPACE matches "a " to "a"
        raise NotFound(NO_SUCH_JOB.format(jid=job_id))
    timeline = [TimelineEntryOut.of(entry) for entry in await manager.timeline(job_id)]
    return JobDetailOut(**JobOut.of(job).model_dump(), timeline=timeline)
