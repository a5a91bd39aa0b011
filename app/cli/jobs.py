"""`sidekiq-supervisor jobs queued|uncompleted|completed|lost|all|durations`: readable tables."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from app.config import Settings
from app.domain import Job, JobFilter, JobStatus, Page, Percentiles
from app.manager import DurationReport, Durations, JobManager
from app.sidekiq.keys import Keys
from app.store.db import create_engine, create_sessionmaker

T = TypeVar("T")
STOPPED = (
    "[yellow]the argument search stopped at SUPERVISOR_SEARCH_TIMEOUT_SECONDS: narrow it with "
    "--queue, --class or --since[/yellow]"
)
cli = typer.Typer(help="List jobs from the ledger, newest activity first.", no_args_is_help=True)
out = Console()

FilterText = Annotated[
    str | None, typer.Argument(help="Plain text to find inside the job's arguments.")
]
Queue = Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue.")]
JobClass = Annotated[str | None, typer.Option("--class", "-c", help="Only this job class.")]
Since = Annotated[datetime | None, typer.Option(help="Last activity at or after (UTC).")]
Until = Annotated[datetime | None, typer.Option(help="Last activity before (UTC).")]
Limit = Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="Rows per page.")]
Cursor = Annotated[str | None, typer.Option(help="Continue after a previous page.")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")]


@asynccontextmanager
async def open_manager(settings: Settings) -> AsyncIterator[JobManager]:
    engine = create_engine(settings, name="sidekiq-supervisor-cli")
    redis = Redis.from_url(settings.REDIS_URL, client_name="sidekiq-supervisor-cli")
    try:
        yield JobManager(
            create_sessionmaker(engine, deadline_seconds=settings.DB_TIMEOUT_SECONDS),
            redis=redis,
            keys=Keys(settings.REDIS_NAMESPACE),
            sample_limit=settings.DURATION_SAMPLE_SIZE,
            search_seconds=settings.SEARCH_TIMEOUT_SECONDS,
            process_stale=timedelta(seconds=settings.PROCESS_STALE_SECONDS),
            retry_after_seconds=settings.RETRY_AFTER_SECONDS,
        )
    finally:
        await redis.aclose()
        await engine.dispose()


def _run(query: Callable[[JobManager], Awaitable[T]]) -> T:
    async def go() -> T:
        async with open_manager(Settings()) as manager:
            return await query(manager)

    return asyncio.run(go())


def _filter(
    text: str | None, queue: str | None, job_class: str | None, since: Any, until: Any
) -> JobFilter:
    return JobFilter(arguments=text, queue=queue, job_class=job_class, since=since, until=until)


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _short(text: str | None, width: int = 48) -> str:
    if text is None:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def print_page(page: Page, *, as_json: bool) -> None:
    if as_json:
        for job in page.items:
            out.print_json(json.dumps(asdict(job), default=str))
        return
    table = Table(show_lines=False, header_style="bold")
    for column in ("jid", "status", "class", "queue", "att", "enqueued", "started", "done", "args"):
        table.add_column(column, overflow="fold" if column == "args" else "ellipsis")
    for job in page.items:
        table.add_row(
            job.jid, job.status.value, job.job_class or "", job.queue or "", str(job.attempts),
            _when(job.enqueued_at), _when(job.started_at), _when(job.completed_at),
            _short(job.arguments),
        )  # fmt: skip
    out.print(table)
    _footer(page.next_cursor, len(page.items), stopped=page.stopped)


def print_durations(found: Durations | DurationReport, *, as_json: bool) -> None:
    """Completed jobs with their durations, then the percentile lines."""
    if isinstance(found, Durations):
        items, cursor, stopped = found.page.items, found.page.next_cursor, found.page.stopped
        summaries = [
            ("queued→completed ", found.queued_to_completed),
            ("started→completed", found.started_to_completed),
        ]
    else:
        items, cursor, stopped = found.items, found.next_cursor, found.stopped
        label = (
            "queued→completed " if found.measure == "queued_to_completed" else "started→completed"
        )
        summaries = [(label, found.percentiles)]
    if as_json:
        for job in items:
            out.print_json(json.dumps(_duration_row(job), default=str))
        return
    table = Table(header_style="bold")
    for column in ("jid", "class", "queue", "wait", "run", "total", "completed"):
        table.add_column(column, justify="right" if column in {"wait", "run", "total"} else "left")
    for job in items:
        table.add_row(
            job.jid, job.job_class or "", job.queue or "", _seconds(job.wait_seconds),
            _seconds(job.run_seconds), _seconds(job.total_seconds), _when(job.completed_at),
        )  # fmt: skip
    out.print(table)
    out.print(f"over the newest {found.sample_limit:,} completions matching the filter:")
    for label, value in summaries:
        out.print(f"  {label}  {_summary(value)}")
    _footer(cursor, len(items), stopped=stopped)


def _duration_row(job: Job) -> dict[str, Any]:
    return {
        "jid": job.jid, "job_class": job.job_class, "queue": job.queue,
        "wait_seconds": job.wait_seconds, "run_seconds": job.run_seconds,
        "total_seconds": job.total_seconds, "completed_at": job.completed_at,
    }  # fmt: skip


def _summary(p: Percentiles) -> str:
    if not p.count:
        return "no completed jobs"
    parts = [("p50", p.p50), ("p90", p.p90), ("p95", p.p95), ("p99", p.p99), ("max", p.max)]
    return f"n={p.count:,}  " + "  ".join(f"{name} {_seconds(value)}" for name, value in parts)


def _footer(cursor: str | None, count: int, *, stopped: bool = False) -> None:
    if stopped:
        out.print(STOPPED)
        return
    more = f"; next page: --cursor {cursor}" if cursor else ""
    out.print(f"[dim]{count} job(s){more}[/dim]")


def _listing(status: JobStatus | None, doc: str) -> Callable[..., None]:
    def command(
        text: FilterText = None, queue: Queue = None, job_class: JobClass = None,
        since: Since = None, until: Until = None, limit: Limit = 50, cursor: Cursor = None,
        as_json: AsJson = False,
    ) -> None:  # fmt: skip
        flt = _filter(text, queue, job_class, since, until)
        if status is not None:
            flt = flt.with_statuses(status)
        page = _run(lambda manager: manager.jobs(flt, limit=limit, cursor=cursor))
        print_page(page, as_json=as_json)

    command.__doc__ = doc
    return command


cli.command("queued")(_listing(JobStatus.QUEUED, "Jobs whose most recent status is queued."))
cli.command("uncompleted")(
    _listing(JobStatus.STARTED, "Jobs that started and never reported complete.")
)
cli.command("completed")(_listing(JobStatus.COMPLETE, "Jobs whose most recent status is complete."))
cli.command("lost")(
    _listing(
        JobStatus.LOST,
        "Jobs found lost: not running, not finished, not in retry, dead or schedule "
        "(requeue them with `sidekiq-supervisor requeue`).",
    )
)
cli.command("all")(_listing(None, "Every job in the ledger."))


@cli.command("durations")
def durations(
    text: FilterText = None, queue: Queue = None, job_class: JobClass = None,
    since: Since = None, until: Until = None, limit: Limit = 50, cursor: Cursor = None,
    as_json: AsJson = False,
) -> None:  # fmt: skip
    """Completed jobs with wait/run/total times, and percentiles."""
    flt = _filter(text, queue, job_class, since, until)
    found = _run(lambda manager: manager.durations(flt, limit=limit, cursor=cursor))
    print_durations(found, as_json=as_json)
