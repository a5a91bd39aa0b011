"""The Busy page: live Sidekiq processes with quiet and stop (one, or all of them), and the jobs
running now, oldest start first, paged. Everything shown comes from one snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.deps import LimitDep, Offset, ResourcesDep, current_snapshot
from app.domain import BusyJob, ProcessInfo, Snapshot, next_offset
from app.sidekiq.browse import JobRecord, parse_job, redact
from app.sidekiq.commands import Control, Signal, signal_targets
from app.sidekiq.reader import read_snapshot
from app.web.auth import OperatorDep, ViewerDep, audit
from app.web.render import done_url, pick_notice, render

router = APIRouter()

MAX_IDENTITY_CHARS = 500
SIGNALS = {"quiet": Signal.QUIET, "stop": Signal.STOP}
NOTICES = {
    "quiet": "Asked {n} process(es) to quiet (TSTP): they stop fetching new jobs at their next "
    "heartbeat (5 s on Sidekiq 6, 10 s on 7 and later).",
    "stop": "Asked {n} process(es) to stop (TERM): they shut down at their next heartbeat; jobs "
    "still running after Sidekiq's timeout go back to their queues.",
}
# Sidekiq's Web UI thresholds for RSS (web/helpers.rb format_memory).
KB_UNDER_MB = 100_000
KB_UNDER_GB = 10_000_000


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """A process as the page shows it: `name` is Sidekiq's "hostname:pid"; `stale` when its
    last heartbeat is older than settings.PROCESS_STALE_SECONDS (crashed or stuck)."""

    process: ProcessInfo
    name: str
    stale: bool
    rss: str


@dataclass(frozen=True, slots=True)
class RunningRow:
    """A running job with its payload parsed (args, or the problem with a corrupt payload)."""

    job: BusyJob
    record: JobRecord
    process: str


def short_name(process: ProcessInfo) -> str:
    return process.identity if process.pid is None else f"{process.hostname}:{process.pid}"


def memory(kb: int | None) -> str:
    """RSS as Sidekiq's Busy page writes it: KB, MB, then GB."""
    if kb is None:
        return "\u2013"
    if kb < KB_UNDER_MB:
        return f"{kb:,} KB"
    if kb < KB_UNDER_GB:
        return f"{kb // 1024:,} MB"
    return f"{kb / 1_048_576:.1f} GB"


def process_rows(snapshot: Snapshot, stale_seconds: float) -> list[ProcessRow]:
    stale_before = snapshot.taken_at - timedelta(seconds=stale_seconds)
    return [
        ProcessRow(
            process=process,
            name=short_name(process),
            stale=process.beat is not None and process.beat < stale_before,
            rss=memory(process.rss_kb),
        )
        for process in snapshot.processes
    ]


@router.get("/busy")
async def busy_page(
    request: Request, _who: ViewerDep, found: ResourcesDep, limit: LimitDep, offset: Offset = 0
) -> HTMLResponse:
    snapshot = (await current_snapshot(found)).snapshot
    names = {process.identity: short_name(process) for process in snapshot.processes}
    # The reader sorts busy jobs by run_at: the longest-running come first, as in Sidekiq.
    page = snapshot.busy_jobs[offset : offset + limit]
    running = [
        RunningRow(
            job,
            redact(parse_job(job.payload.encode()), found.redactor),
            names.get(job.process, job.process),
        )
        for job in page
    ]
    total = len(snapshot.busy_jobs)
    return await render(
        request,
        "busy.html",
        active="busy",
        title="Busy",
        notice=pick_notice(request, NOTICES),
        snapshot=snapshot,
        processes=process_rows(snapshot, found.settings.PROCESS_STALE_SECONDS),
        signalable=sum(1 for process in snapshot.processes if not process.embedded),
        running=running,
        offset=offset,
        limit=limit,
        total=total,
        next_offset=next_offset(offset, len(page), total),
    )


@router.post("/busy")
async def signal_processes(
    request: Request,
    who: OperatorDep,
    found: ResourcesDep,
    signal: Annotated[Literal["quiet", "stop"], Form()],
    identity: Annotated[str | None, Form(min_length=1, max_length=MAX_IDENTITY_CHARS)] = None,
) -> RedirectResponse:
    """LPUSH TSTP or TERM onto `<identity>-signals`, as Sidekiq's Web UI does; each process
    reads it at its next heartbeat. The targets come from a fresh read, not the sampler's."""
    snapshot = await read_snapshot(found.redis, found.keys)
    targets = signal_targets(snapshot, [identity] if identity else [])
    count = await Control(found.redis, found.keys).signal(targets, SIGNALS[signal])
    audit(request, who, signal, identity or "all", count)
    return RedirectResponse(done_url("/sidekiq/busy", signal, count), status_code=303)
