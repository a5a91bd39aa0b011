"""What the reconcile benchmark runs against: the ledger's rows (1,000,000 by default, 150,000 of
them open), the scenarios that lay the open rows out, the snapshot Sidekiq would show, and
Sidekiq's retry, dead and schedule sets.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.domain import RANK, BusyJob, EventName, ProcessInfo, QueueStats, Snapshot
from app.sidekiq.keys import Keys
from benchmarks import fake_ledger
from benchmarks.reconcile_ticks import Probe
from benchmarks.throwaway import Database, connect

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
# A round that needs `schedule` (50,000 entries) takes ~50 ticks: 60 see one close.
TICKS = int(os.environ.get("BENCH_TICKS", "60"))
# Scenarios 3 and 4 tick alike: no round opens, only their gauges count 100,000 rows.
GAUGE_TICKS = int(os.environ.get("BENCH_STUCK_TICKS", "20"))
STARTED, QUEUED = 100_000, 50_000
RETRIES, DEAD, SCHEDULED = 20_000, 10_000, 50_000
CONCURRENCY, HOSTS = 25, 100
QUEUE_LATENCY_SECONDS = 600.0  # every queue's oldest job; younger queued rows are not overdue
SEED = 20_261_124

SHAPE = fake_ledger.make_shape()
WEIGHTS = [SHAPE.class_share[name] for name in SHAPE.classes]
# Scenario 3's per-class thresholds, on the three busiest classes (a third of the rows).
BY_CLASS_SECONDS = dict(zip(SHAPE.classes[:3], (1800.0, 2 * 3600.0, 4 * 3600.0), strict=True))
INSERT = f"INSERT INTO jobs ({', '.join(fake_ledger.COLUMNS)}) VALUES "
UPSERT_TAIL = " ON DUPLICATE KEY UPDATE " + ", ".join(
    f"{column} = VALUES({column})" for column in fake_ledger.COLUMNS[1:]
)


# The ledger ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenJob:
    """One open ledger row (started, queued, or lost) as a scenario lays it out."""

    jid: str
    status: EventName
    job_class: str
    queue: str
    last_us: int
    running: bool = False


@dataclass(frozen=True, slots=True)
class Ledger:
    """The jids of the open rows (their times change per scenario) and of the rest."""

    started: list[str]
    queued: list[str]
    closed: list[str]


def make_ledger(rows: int) -> Ledger:
    rng = random.Random(SEED)
    jids = [f"{jid:024x}" for jid in sorted(rng.getrandbits(96) for _ in range(rows))]
    picked = rng.sample(range(rows), STARTED + QUEUED)
    taken = set(picked)
    closed = [jid for n, jid in enumerate(jids) if n not in taken]
    return Ledger([jids[n] for n in picked[:STARTED]], [jids[n] for n in picked[STARTED:]], closed)


def sql_values(
    rng: random.Random, jid: str, status: EventName, job_class: str, last_us: int
) -> str:
    """One row in fake_ledger.COLUMNS order, as fake_ledger renders it but with a given status
    (its own status mix is fixed). status_key is the newest event's event_key, info_key that of
    the newest one that carried arguments: a lost row is a started one whose status the
    reconciler's `lost` event (at the start, ranked LOST) took over."""
    started = EventName.STARTED if status is EventName.LOST else status
    times = fake_ledger.times(rng, started, last_us)
    info_key, status_key = str(last_us * 8 + RANK[started]), str(last_us * 8 + RANK[status])
    failed = status is EventName.FAILED
    error_class, error_message = rng.choice(fake_ledger.ERRORS) if failed else (None, None)
    process = None if times.started is None else f"worker-{rng.randint(1, 12)}:{rng.randint(1, 9)}"
    attempts = 0 if times.started is None else rng.randint(1, 3) if times.failed else 1
    when, quote = fake_ledger.when, fake_ledger.quote
    values = [
        quote(jid), quote(job_class), quote(SHAPE.class_queue[job_class]),
        quote(fake_ledger.arguments(rng)), "0", info_key, quote(status), status_key,
        when(times.enqueued), "NULL", when(times.started), when(times.completed),
        when(times.failed), when(times.enqueued), when(last_us), str(attempts),
        quote(error_class), quote(error_message), quote(process), "NULL",
    ]  # fmt: skip
    return "(" + ",".join(values) + ")"


def closed_chunks(jids: list[str], now_us: int) -> Iterator[str]:
    """Completed (97%) and failed rows over the last 30 days, in primary key order."""
    rng = random.Random(SEED + 1)
    span_us = fake_ledger.DAYS * 86_400_000_000
    for first in range(0, len(jids), fake_ledger.CHUNK_ROWS):
        rows = []
        for jid in jids[first : first + fake_ledger.CHUNK_ROWS]:
            status = EventName.FAILED if rng.random() < 0.03 else EventName.COMPLETE
            job_class = rng.choices(SHAPE.classes, WEIGHTS)[0]
            rows.append(sql_values(rng, jid, status, job_class, now_us - rng.randrange(span_us)))
        yield INSERT + ",".join(rows)


def open_chunks(jobs: list[OpenJob]) -> Iterator[str]:
    """The open rows as upserts: every column rewritten, whatever a previous scenario left."""
    rng = random.Random(SEED + 2)
    ordered = sorted(jobs, key=lambda job: job.jid)
    for first in range(0, len(ordered), fake_ledger.CHUNK_ROWS):
        chunk = ordered[first : first + fake_ledger.CHUNK_ROWS]
        rows = [sql_values(rng, j.jid, j.status, j.job_class, j.last_us) for j in chunk]
        yield INSERT + ",".join(rows) + UPSERT_TAIL


async def load_closed(db: Database, ledger: Ledger, now_us: int) -> float:
    """fake_ledger's bulk load: indexes dropped, rows in key order, indexes rebuilt."""
    started = time.perf_counter()
    async with connect(db.server, db.name) as conn, conn.cursor() as cursor:
        indexes = await fake_ledger.secondary_indexes(cursor)
        await cursor.execute(f"ALTER TABLE jobs {', '.join(f'DROP INDEX `{n}`' for n in indexes)}")
        await fake_ledger.insert(cursor, closed_chunks(ledger.closed, now_us))
        adds = ", ".join(f"ADD INDEX `{n}` ({', '.join(c)})" for n, c in indexes.items())
        await cursor.execute(f"ALTER TABLE jobs {adds}")
    return time.perf_counter() - started


async def lay_out(db: Database, jobs: list[OpenJob]) -> float:
    """Rewrite the open rows for a scenario; drop what the previous one's rounds wrote."""
    started = time.perf_counter()
    async with connect(db.server, db.name) as conn, conn.cursor() as cursor:
        await cursor.execute("TRUNCATE TABLE job_events")
        await fake_ledger.insert(cursor, open_chunks(jobs))
        await cursor.execute("ANALYZE TABLE jobs")
        await cursor.fetchall()
    return time.perf_counter() - started


# Scenarios ----------------------------------------------------------------------------------

Age = Callable[[random.Random, int], tuple[float, bool]]  # index -> (seconds ago, running)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    started: Age
    queued: Age
    ticks: int
    busy_elsewhere: int = 0  # running jobs the ledger does not hold
    # Settings beyond the defaults (STUCK_AFTER_BY_CLASS, say).
    settings: Mapping[str, Any] = field(default_factory=dict)
    # What the started rows are: `lost` once the reconciler has decided them (not requeued).
    started_as: EventName = EventName.STARTED


def young_queued(rng: random.Random, _n: int) -> tuple[float, bool]:
    return rng.uniform(0, QUEUE_LATENCY_SECONDS - 10), False


def steady_queued(rng: random.Random, n: int) -> tuple[float, bool]:
    # 10 queued a day ago: 5 of them are in `schedule` (n % 10,000 == 0), 5 are gone.
    return (rng.uniform(3600, 86_400), False) if n % 10_000 < 2 else young_queued(rng, n)


def steady_started(rng: random.Random, n: int) -> tuple[float, bool]:
    if n % 5_000 < 3:  # 60 candidates: 20 in `retry`, 20 in `dead`, 20 gone
        return rng.uniform(300, 1800), False
    if n % 5 < 3:
        return rng.uniform(5, 1800), True
    return rng.uniform(0, 55), False  # younger than the 60 s grace


def hours_ago(rng: random.Random, _n: int) -> tuple[float, bool]:
    return rng.uniform(3700, 6 * 3600), True


SCENARIOS = [
    Scenario(
        "1 steady",
        "60% running (5 s-30 min), 40% younger than the grace, 60 candidates; 10 old queued",
        steady_started,
        steady_queued,
        TICKS,
    ),
    Scenario(
        "2 worst",
        "all 100,000 started 5-50 min ago, none running (60,000 other jobs run)",
        lambda rng, _n: (rng.uniform(300, 3000), False),
        young_queued,
        TICKS,
        busy_elsewhere=60_000,
    ),
    Scenario(
        "3 stuck",
        "all 100,000 started 1-6 h ago (over the 1 h stuck threshold), all running",
        hours_ago,
        young_queued,
        GAUGE_TICKS,
    ),
    Scenario(
        "3 stuck, per class",
        "scenario 3's rows; STUCK_AFTER_BY_CLASS: "
        + ", ".join(f"{name} {s / 3600:g} h" for name, s in BY_CLASS_SECONDS.items()),
        hours_ago,
        young_queued,
        GAUGE_TICKS,
        settings={"STUCK_AFTER_BY_CLASS": BY_CLASS_SECONDS},
    ),
    Scenario(
        "4 lost",
        "scenario 3's 100,000 started rows all `lost` (decided, not requeued)",
        hours_ago,
        young_queued,
        GAUGE_TICKS,
        started_as=EventName.LOST,
    ),
]


def open_jobs(scenario: Scenario, ledger: Ledger, now_us: int) -> list[OpenJob]:
    rng = random.Random(SEED + 3)
    jobs = []
    for status, jids, age in (
        (scenario.started_as, ledger.started, scenario.started),
        (EventName.QUEUED, ledger.queued, scenario.queued),
    ):
        for n, jid in enumerate(jids):
            seconds, running = age(rng, n)
            job_class = rng.choices(SHAPE.classes, WEIGHTS)[0]
            queue = SHAPE.class_queue[job_class]
            running = running and status is EventName.STARTED
            jobs.append(
                OpenJob(jid, status, job_class, queue, now_us - int(seconds * 1e6), running)
            )
    return jobs


def make_snapshot(now: datetime, jobs: list[OpenJob], busy_elsewhere: int) -> Snapshot:
    """Live processes (heartbeat now) running the scenario's running jobs, CONCURRENCY each."""
    rng = random.Random(SEED + 4)
    busy = [(j.jid, j.queue, j.job_class) for j in jobs if j.running]
    busy += [
        (f"{rng.getrandbits(96):024x}", "default", SHAPE.classes[0]) for _ in range(busy_elsewhere)
    ]
    processes, busy_jobs = [], []
    for n, first in enumerate(range(0, len(busy), CONCURRENCY)):
        identity = f"worker-{n % HOSTS:03d}:{n}:{n:012x}"
        chunk = busy[first : first + CONCURRENCY]
        processes.append(
            ProcessInfo(
                identity=identity, hostname=f"worker-{n % HOSTS:03d}", pid=n, tag=None,
                queues=tuple(fake_ledger.QUEUES), labels=(), concurrency=CONCURRENCY,
                busy=len(chunk), quiet=False, rss_kb=None, beat=now,
                started_at=now - timedelta(hours=8), version="7.3.10",
            )
        )  # fmt: skip
        busy_jobs += [
            BusyJob(identity, f"t{k}", queue, jid, job_class, now, "{}")
            for k, (jid, queue, job_class) in enumerate(chunk)
        ]
    sizes = Counter(j.queue for j in jobs if j.status is EventName.QUEUED)
    queues = tuple(QueueStats(q, sizes[q], QUEUE_LATENCY_SECONDS) for q in fake_ledger.QUEUES)
    return Snapshot(
        taken_at=now, processed=0, failed=0, scheduled=SCHEDULED, retries=RETRIES, dead=DEAD,
        processes_size=len(processes), queues=queues, processes=tuple(processes),
        busy_jobs=tuple(busy_jobs),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Bench:
    """What every scenario runs against: the scratch database with the ledger loaded, Redis
    with Sidekiq's sets filled, the engine the reconciler reads through and its probe."""

    db: Database
    redis: Redis
    engine: AsyncEngine
    probe: Probe
    settings: Settings
    ledger: Ledger
    now: datetime

    @property
    def now_us(self) -> int:
        return (self.now - fake_ledger.EPOCH) // timedelta(microseconds=1)


# Sidekiq's sets ------------------------------------------------------------------------------


def entry(rng: random.Random, jid: str, now: float, *, failed: bool) -> bytes:
    """A payload as Sidekiq 7 stores it in retry/dead (failed) or schedule."""
    job_class = rng.choices(SHAPE.classes, WEIGHTS)[0]
    job: dict[str, Any] = {
        "class": job_class, "args": [rng.randint(1, 999_999), "two", {"id": rng.randint(1, 99)}],
        "retry": True, "queue": SHAPE.class_queue[job_class], "jid": jid,
        "created_at": now - 900, "enqueued_at": now - 600,
    }  # fmt: skip
    if failed:
        error_class, error_message = rng.choice(fake_ledger.ERRORS)
        job |= {
            "retry_count": rng.randint(0, 24), "failed_at": now - 590,
            "retried_at": now - 300, "error_class": error_class, "error_message": error_message,
        }  # fmt: skip
    return orjson.dumps(job)


async def fill_sets(redis: Redis, keys: Keys, ledger: Ledger, now: float) -> None:
    """retry holds started[n] for n % 50 == 0, dead for n % 100 == 1, schedule queued[n] for
    n % 10,000 == 0; the rest are other jobs."""
    rng = random.Random(SEED + 5)

    def jids(size: int, own: list[str], step: int, offset: int) -> Iterator[str]:
        mine = own[offset::step]
        yield from mine
        for _ in range(size - len(mine)):
            yield f"{rng.getrandbits(96):024x}"

    layout = [
        (keys.retry, jids(RETRIES, ledger.started, 50, 0), True, 600.0),
        (keys.dead, jids(DEAD, ledger.started, 100, 1), True, -86_400.0),
        (keys.schedule, jids(SCHEDULED, ledger.queued, 10_000, 0), False, 3600.0),
    ]
    for key, members, failed, offset in layout:
        entries = {
            entry(rng, jid, now, failed=failed): now + rng.uniform(0, offset) for jid in members
        }
        items = list(entries.items())
        for first in range(0, len(items), 1000):
            await redis.zadd(key, dict(items[first : first + 1000]))
