"""The Jobs pages: the ledger's filtered list (keyset-paged, newest activity first) with duration
percentiles, one job's page with its timeline, and requeue of started or lost jobs behind a
confirmation that says how many will be pushed and how many skipped."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, get_args
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, field_validator
from redis.exceptions import RedisError

from app.config import Settings
from app.deps import Resources, resources
from app.domain import Job, JobFilter, JobStatus, Percentiles, Snapshot, StuckRule, as_utc
from app.errors import NotFound
from app.manager import REQUEUABLE, RequeueReport, percentiles
from app.sidekiq.browse import SetPage, search_set
from app.store.ledger_reads import SearchStopped, get_timeline
from app.web.auth import OperatorDep, ViewerDep, audit
from app.web.render import done_url, pick_notice, render, summary

router = APIRouter()

Status = Literal[
    "", "queued", "scheduled", "started", "stuck", "complete", "failed", "dead", "lost", "requeued"
]
STATUSES: tuple[str, ...] = get_args(Status)[1:]
# The list filters a requeue can act on: any status (started and lost ones), or one of these.
REQUEUE_FILTERS = ("", "started", "stuck", "lost")
# One requeue pushes at most this many jobs; the confirmation says when more match.
REQUEUE_LIMIT = 1_000
TIMELINE_LIMIT = 500
NOTICES = {"requeued": "Requeued {n} job{s} ({skipped} skipped)"}
NO_SUCH_JOB = "The ledger has no job {jid!r}."
BAD_TIME = "not a date and time (YYYY-MM-DDTHH:MM, UTC)"


class LedgerFilter(BaseModel):
    """The Jobs page's filter: its query string, or the requeue form's hidden fields. Blank
    means any; `since`/`until` bound the last activity, in UTC (datetime-local has no zone)."""

    status: Status = ""
    queue: str = Field("", max_length=255)
    job_class: str = Field("", max_length=255)
    arguments: str = Field("", max_length=1000)
    since: str = Field("", max_length=40)
    until: str = Field("", max_length=40)
    jid: str = Field("", max_length=255)

    @field_validator("since", "until")
    @classmethod
    def _moment(cls, value: str) -> str:
        """Normalized to what a datetime-local input shows (UTC, to the minute or second)."""
        if not value.strip():
            return ""
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(BAD_TIME) from exc
        moment = as_utc(parsed)  # its ValueError says the time is out of range
        return moment.replace(tzinfo=None).isoformat(
            timespec="minutes" if not moment.second else "seconds"
        )

    def params(self) -> dict[str, str]:
        """The fields that narrow the list, for links, hidden fields and the audit log."""
        return {name: value for name, value in self.model_dump().items() if value}

    @property
    def can_requeue(self) -> bool:
        return self.status in REQUEUE_FILTERS

    def job_filter(self, settings: Settings, now: datetime) -> JobFilter:
        by_status = self.status not in ("", "stuck")
        return JobFilter(
            arguments=self.arguments or None,
            statuses=(JobStatus(self.status),) if by_status else (),
            queue=self.queue or None,
            job_class=self.job_class or None,
            since=as_utc(datetime.fromisoformat(self.since)) if self.since else None,
            until=as_utc(datetime.fromisoformat(self.until)) if self.until else None,
            jid=self.jid or None,
            stuck=settings.stuck_rule(now) if self.status == "stuck" else None,
        )

    def completed_filter(self, settings: Settings, now: datetime) -> JobFilter:
        """The same filter but for its status: what the duration percentiles are taken over."""
        return self.model_copy(update={"status": "", "jid": ""}).job_filter(settings, now)


def is_stuck(job: Job, rule: StuckRule) -> bool:
    started = job.started_at
    return (
        job.status is JobStatus.STARTED
        and started is not None
        and (started < rule.cutoff_for(job.job_class))
    )


@dataclass(frozen=True, slots=True)
class DurationPanel:
    """Wait, run and total percentiles over the newest completed jobs of a filter."""

    wait: Percentiles
    run: Percentiles
    total: Percentiles
    sample_limit: int
    stopped: bool = False

    @classmethod
    def not_read(cls) -> DurationPanel:
        """The sample was not read: its argument search was stopped."""
        none = Percentiles(count=0)
        return cls(none, none, none, sample_limit=0, stopped=True)


async def _durations(found: Resources, flt: JobFilter) -> DurationPanel:
    manager = found.manager
    try:
        samples = await manager.completion_samples(flt)
    except SearchStopped:
        return DurationPanel.not_read()
    return DurationPanel(
        wait=percentiles(samples.wait),
        run=percentiles(samples.run),
        total=percentiles(samples.total),
        sample_limit=manager.sample_limit,
    )


def _notice(request: Request) -> str | None:
    """The page's own message after a requeue (counts are digits only)."""
    skipped = request.query_params.get("skipped", "")
    count = int(skipped) if skipped.isdigit() else 0
    return pick_notice(request, {k: v.replace("{skipped}", str(count)) for k, v in NOTICES.items()})


@router.get("/jobs")
async def jobs_page(
    request: Request,
    _who: ViewerDep,
    shown: Annotated[LedgerFilter, Query()],
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    durations: bool = False,
) -> HTMLResponse:
    """The list. An argument search has no index, so its percentiles wait to be asked for."""
    found = resources(request)
    now = datetime.now(UTC)
    settings = found.settings
    page = await found.manager.jobs(
        shown.job_filter(settings, now), limit=settings.PAGE_SIZE, cursor=cursor
    )
    panel = None
    if page.stopped:  # the sample would scan the same rows again
        panel = DurationPanel.not_read()
    elif durations or not shown.arguments:
        panel = await _durations(found, shown.completed_filter(settings, now))
    rule = settings.stuck_rule(now)
    return await render(
        request,
        "jobs.html",
        active="jobs",
        title="Jobs",
        shown=shown,
        page=page,
        panel=panel,
        stuck={job.jid for job in page.items if is_stuck(job, rule)},
        statuses=STATUSES,
        query=urlencode(shown.params()),
        cursor=cursor,
        notice=_notice(request),
    )


async def _requeue(
    found: Resources, shown: LedgerFilter, *, dry_run: bool, limit: int
) -> RequeueReport:
    flt = shown.job_filter(found.settings, datetime.now(UTC))
    return await found.manager.restart_uncompleted_jobs(flt, dry_run=dry_run, limit=limit)


@router.get("/jobs/requeue")
async def requeue_confirm(
    request: Request, _who: ViewerDep, shown: Annotated[LedgerFilter, Query()]
) -> HTMLResponse:
    """A dry run: what a requeue of this filter would push, and what it would skip, and why."""
    found = resources(request)
    report = await _requeue(found, shown, dry_run=True, limit=REQUEUE_LIMIT + 1)
    items = report.items[:REQUEUE_LIMIT]
    return await render(
        request,
        "requeue.html",
        active="jobs",
        title="Requeue jobs",
        shown=shown,
        ready=[item for item in items if item.skipped is None],
        skipped=[item for item in items if item.skipped is not None],
        more=len(report.items) > REQUEUE_LIMIT,
        limit=REQUEUE_LIMIT,
        back=_back(shown),
    )


def _back(shown: LedgerFilter) -> str:
    """Where a requeue returns to: the job's page, or the list with the same filter."""
    if shown.jid:
        return f"/sidekiq/jobs/{quote(shown.jid, safe='')}"
    query = urlencode(shown.params())
    return "/sidekiq/jobs" + (f"?{query}" if query else "")


@router.post("/jobs/requeue")
async def requeue(
    request: Request, who: OperatorDep, shown: Annotated[LedgerFilter, Form()]
) -> Response:
    """Pushes each job once (a Redis guard per original jid), never one running now."""
    found = resources(request)
    report = await _requeue(found, shown, dry_run=False, limit=REQUEUE_LIMIT)
    pushed, skipped = len(report.requeued), len(report.skipped)
    audit(request, who, "requeue", urlencode(shown.params()) or "all", pushed)
    url = done_url(_back(shown), "requeued", pushed) + f"&skipped={skipped}"
    return RedirectResponse(url, status_code=303)


@dataclass(frozen=True, slots=True)
class Whereabouts:
    """Where Sidekiq has the job now, from bounded reads: a process running it (the summary's
    snapshot), or a match in the retry or dead set (a ZSCAN of bounded length)."""

    running_on: str | None = None
    retry: SetPage | None = None
    dead: SetPage | None = None
    redis_down: bool = False


async def _whereabouts(found: Resources, job: Job, snapshot: Snapshot | None) -> Whereabouts:
    if snapshot is None:
        return Whereabouts(redis_down=True)
    stale = timedelta(seconds=found.settings.PROCESS_STALE_SECONDS)
    running_on = snapshot.running(stale).get(job.jid)
    if job.status not in (*REQUEUABLE, JobStatus.FAILED, JobStatus.DEAD):
        return Whereabouts(running_on=running_on)
    needle = f'"jid":"{job.jid}"'
    try:
        retry = await search_set(
            found.redis, found.keys.retry, needle, offset=0, limit=1, newest_first=False
        )
        dead = await search_set(
            found.redis, found.keys.dead, needle, offset=0, limit=1, newest_first=True
        )
    except (RedisError, OSError):
        return Whereabouts(running_on=running_on, redis_down=True)
    return Whereabouts(running_on=running_on, retry=retry, dead=dead)


@router.get("/jobs/{jid}")
async def job_page(
    request: Request, _who: ViewerDep, jid: Annotated[str, Path(max_length=255)]
) -> HTMLResponse:
    found = resources(request)
    job = await found.manager.job(jid)
    if job is None:
        raise NotFound(NO_SUCH_JOB.format(jid=jid))
    async with found.sessions() as session:
        timeline = await get_timeline(session, jid, limit=TIMELINE_LIMIT + 1)
    snapshot = await summary(request)
    rule = found.settings.stuck_rule(datetime.now(UTC))
    return await render(
        request,
        "job.html",
        active="jobs",
        title=f"Job {jid}",
        snapshot=snapshot,
        job=job,
        timeline=timeline[:TIMELINE_LIMIT],
        timeline_cut=len(timeline) > TIMELINE_LIMIT,
        stuck=is_stuck(job, rule),
        where=await _whereabouts(found, job, snapshot),
        can_requeue=job.status in REQUEUABLE,
        notice=_notice(request),
    )
