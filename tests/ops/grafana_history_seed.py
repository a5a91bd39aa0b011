"""What the history dashboard is checked against: three hours of samples a minute apart and ledger
jobs, written through the store's own functions, with the figures its panels must show."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.domain import EventName, JobEvent, ProcessInfo, QueueStats, Snapshot
from app.store.ledger_writes import write_batch
from app.store.samples import add_samples
from tests.ops.grafana_queries import TimeRange

END = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SPAN = TimeRange(END - timedelta(hours=3), END)
MINUTES = 180
PROCESSED_PER_MINUTE = 12
FAILED_PER_MINUTE = 1
QUEUES = ("default", "mailers")
STUCK_JIDS = ("stuck-oldest", "stuck-newer")  # started 2 h and 90 min before END
UNCOMPLETED = 3  # the two stuck runs and one that started 10 minutes before END
LOST_JID = "lost-1"
TABLES = ("jobs", "job_events", "sidekiq_samples", "queue_samples")


@dataclass(frozen=True, slots=True)
class Run:
    """A completed run: its class, and its enqueue, start and completion times."""

    job_class: str
    enqueued: datetime
    started: datetime
    completed: datetime

    @property
    def wait(self) -> float:
        return (self.started - self.enqueued).total_seconds()

    @property
    def run(self) -> float:
        return (self.completed - self.started).total_seconds()


def _runs(job_class: str, count: int, wait: float, run: float) -> list[Run]:
    """`count` runs of `job_class` 5 minutes apart: the k-th waits k*wait and runs k*run s."""
    runs = []
    for k in range(1, count + 1):
        enqueued = SPAN.start + timedelta(minutes=10 + 5 * k)
        started = enqueued + timedelta(seconds=k * wait)
        runs.append(Run(job_class, enqueued, started, started + timedelta(seconds=k * run)))
    return runs


COMPLETED = [*_runs("HardJob", 20, wait=0.5, run=1.0), *_runs("EasyJob", 10, wait=0.2, run=0.1)]
# Completed before the range: a missing time filter would make it HardJob's slowest run.
BEFORE_RANGE = Run(
    "HardJob",
    SPAN.start - timedelta(hours=1),
    SPAN.start - timedelta(minutes=50),
    SPAN.start - timedelta(minutes=30),
)


def nearest_rank(values: list[float], p: str) -> float:
    """The p-th percentile (p as a decimal string) by the nearest-rank method."""
    rank = int((Decimal(p) * len(values)).to_integral_value(rounding=ROUND_CEILING))
    return sorted(values)[rank - 1]


def _snapshot(minute: int, processed: int, failed: int) -> Snapshot:
    worker = ProcessInfo(
        identity="worker-1:1:abc",
        hostname="worker-1",
        pid=1,
        tag=None,
        queues=QUEUES,
        labels=(),
        concurrency=10,
        busy=minute % 4,
        quiet=False,
        rss_kb=None,
        beat=None,
        started_at=None,
        version="7.3.10",
    )
    return Snapshot(
        taken_at=SPAN.start + timedelta(minutes=minute, seconds=30),
        processed=processed,
        failed=failed,
        scheduled=3,
        retries=minute % 5,
        dead=1,
        processes_size=1,
        queues=tuple(QueueStats(name, 5 + minute % 3, 1.5 * n) for n, name in enumerate(QUEUES)),
        processes=(worker,),
        busy_jobs=(),
    )


def snapshots() -> list[Snapshot]:
    """One a minute across the range, and one on either side with counters far off the
    range's: a missing time filter shows as a jump in the throughput panel."""
    inside = [
        _snapshot(m, 10_000 + PROCESSED_PER_MINUTE * m, 500 + FAILED_PER_MINUTE * m)
        for m in range(MINUTES)
    ]
    return [_snapshot(-5, 0, 0), *inside, _snapshot(MINUTES + 5, 10**9, 10**6)]


def _event(
    name: EventName,
    jid: str,
    at: datetime,
    job_class: str,
    *,
    arguments: str | None = None,
    process: str | None = None,
    error: bool = False,
) -> JobEvent:
    return JobEvent(
        jid=jid,
        event=name,
        at=at,
        received_at=at,
        job_class=job_class,
        queue="default",
        arguments=arguments,
        process=process,
        error_class="Net::ReadTimeout" if error else None,
        error_message="timed out" if error else None,
    )


def _run_events(jid: str, run: Run) -> list[JobEvent]:
    return [
        _event(EventName.QUEUED, jid, run.enqueued, run.job_class, arguments="[1]"),
        _event(EventName.STARTED, jid, run.started, run.job_class, process="worker-1:1:abc"),
        _event(EventName.COMPLETE, jid, run.completed, run.job_class),
    ]


def _started(jid: str, job_class: str, minutes_before_end: int) -> list[JobEvent]:
    at = END - timedelta(minutes=minutes_before_end)
    return [
        _event(EventName.QUEUED, jid, at - timedelta(seconds=3), job_class, arguments="[2]"),
        _event(EventName.STARTED, jid, at, job_class, process="worker-1:1:abc"),
    ]


def ledger_events() -> list[JobEvent]:
    """Completed runs, three uncompleted ones (two of them stuck), a lost, a failed and a
    dead job."""
    events = [e for n, run in enumerate(COMPLETED) for e in _run_events(f"done-{n}", run)]
    events += _run_events("done-before", BEFORE_RANGE)
    events += _started(STUCK_JIDS[0], "SlowJob", 120) + _started(STUCK_JIDS[1], "SlowJob", 90)
    events += _started("running-1", "SlowJob", 10)
    lost_start = END - timedelta(minutes=50)
    events += _started(LOST_JID, "LostJob", 50)
    events.append(_event(EventName.LOST, LOST_JID, lost_start, "LostJob"))
    events += _started("flaky-1", "FlakyJob", 40) + _started("flaky-2", "FlakyJob", 35)
    failed_at = END - timedelta(minutes=30)
    events.append(_event(EventName.FAILED, "flaky-1", failed_at, "FlakyJob", error=True))
    events.append(_event(EventName.FAILED, "flaky-2", failed_at, "FlakyJob", error=True))
    events.append(_event(EventName.DEAD, "flaky-2", failed_at, "FlakyJob", error=True))
    return events


async def seed_history(engine: AsyncEngine) -> None:
    """Empty the tables, then write the samples and the ledger as the service would."""
    async with engine.begin() as conn:
        for table in TABLES:
            await conn.execute(text(f"DELETE FROM {table}"))
    async with AsyncSession(engine) as session:
        for snapshot in snapshots():
            await add_samples(session, snapshot)
        await session.commit()
    async with engine.connect() as conn:
        await write_batch(conn, ledger_events())
