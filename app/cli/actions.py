"""`sidekiq-supervisor requeue` (dry run unless --yes) and `sidekiq-supervisor drain`."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from redis.asyncio import Redis
from rich.table import Table

from app.cli.jobs import JobClass, Queue, open_manager, out
from app.config import Settings
from app.domain import JobFilter
from app.manager import RequeueReport
from app.sidekiq.commands import DrainStatus, drain_host
from app.sidekiq.keys import Keys

# Nothing to drain is not a failure (a pod whose Sidekiq never started, or already stopped), but
# "0 drained" would hide a mistyped host name.
NO_PROCESS = "no Sidekiq process on host {host}: nothing to drain"

FilterText = Annotated[str | None, typer.Argument(help="Plain text inside the job's arguments.")]


def requeue(
    text: FilterText = None,
    queue: Queue = None,
    job_class: JobClass = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Most jobs to requeue.")] = 1000,
    yes: Annotated[bool, typer.Option("--yes", help="Push them (default: dry run).")] = False,
) -> None:
    """Push uncompleted (started or lost) jobs back into Sidekiq: a dry run unless --yes."""
    flt = JobFilter(arguments=text, queue=queue, job_class=job_class)

    async def go() -> RequeueReport:
        async with open_manager(Settings()) as manager:
            return await manager.restart_uncompleted_jobs(flt, dry_run=not yes, limit=limit)

    report = asyncio.run(go())
    table = Table(header_style="bold")
    for column in ("jid", "class", "queue", "started", "outcome"):
        table.add_column(column)
    for item in report.items:
        job = item.job
        outcome = item.skipped or (f"→ {item.new_jid}" if item.new_jid else "would requeue")
        started = job.started_at.isoformat(" ", "seconds") if job.started_at else ""
        table.add_row(job.jid, job.job_class or "", job.queue or "", started, outcome)
    out.print(table)
    ready = len(report.items) - len(report.skipped)
    if report.dry_run:
        out.print(f"dry run: {ready} would be requeued, {len(report.skipped)} skipped; add --yes")
    else:
        out.print(f"requeued {len(report.requeued)}, skipped {len(report.skipped)}")


def drain(
    host: Annotated[str, typer.Option(help="The Sidekiq host (pod) name to drain.")],
    timeout: Annotated[float, typer.Option(min=0, help="Give up after this many seconds.")] = 60,
    wait_for_queues: Annotated[
        bool, typer.Option(help="Also wait until the queues it serves are empty.")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between checks.")] = 2.0,
) -> None:
    """Quiet every Sidekiq process on HOST and wait until it runs no job; exit 0 when drained
    (or when no live process is on HOST), 1 at the timeout (the same as the preStop endpoint)."""
    settings = Settings()
    status = asyncio.run(_drain(settings, host, timeout, wait_for_queues, interval))
    if status.processes == 0:
        out.print(NO_PROCESS.format(host=host))
        raise typer.Exit(0)
    queued = "" if status.queued_jobs is None else f", {status.queued_jobs} queued"
    out.print(
        f"{status.host}: {status.processes} process(es), {status.quieting} quieting, "
        f"{status.running} running{queued}: {'drained' if status.drained else 'NOT drained'}"
    )
    raise typer.Exit(0 if status.drained else 1)


async def _drain(
    settings: Settings, host: str, give_up_after: float, wait_for_queues: bool, interval: float
) -> DrainStatus:
    redis = Redis.from_url(settings.REDIS_URL, client_name="sidekiq-supervisor-drain")
    keys = Keys(settings.REDIS_NAMESPACE)
    deadline = time.monotonic() + give_up_after
    try:
        while True:
            status = await drain_host(redis, keys, host, wait_for_queues=wait_for_queues)
            if status.drained or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(interval)
    finally:
        await redis.aclose()
