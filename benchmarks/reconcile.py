"""Reconcile benchmark: the stuck/lost reconciler's cost per tick with 100,000 uncompleted
(`started`) jobs among 1,000,000 ledger rows, plus 50,000 queued, and Sidekiq's sets holding
20,000 retries, 10,000 dead and 50,000 scheduled jobs (some of them ledger jids).

    make bench-reconcile     # BENCH_ROWS (1,000,000), BENCH_TICKS (60), BENCH_STUCK_TICKS (20),
                             # BENCH_MYSQL_URL, BENCH_RECONCILE_REDIS_URL (redis://...:6379/11)

Scenarios: (1) steady: the started jobs are running or younger than the grace period, 60 are
candidates; (2) worst: all 100,000 are old and nobody runs them; (3) stuck: all 100,000 have run
longer than the stuck threshold. Each tick runs the real Reconciler with the default settings on
a fixed snapshot; its store and Redis calls are timed from outside (patched where
app.sampler.reconcile looks them up) and each SELECT it sent is EXPLAINed and ANALYZEd: r_rows
(rows the plan read) and `examined` (the session's Handler_read_* plus the index entries index
condition pushdown rejected). Then the gauges' reads alone, with per-class thresholds and with
100,000 lost rows, as migrated and with one more index (a what-if on the scratch database only).
The Redis database is flushed at the start and at the end. Writes benchmarks/results/reconcile.json.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import orjson
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

import app.sampler.reconcile as under_test
from app.config import Settings
from app.domain import RANK, BusyJob, EventName, JobStatus, ProcessInfo, QueueStats, Snapshot
from app.metrics.jobs import JobMetrics
from app.sampler.reconcile import ReconcileConfig, Reconciler, Verdicts
from app.sidekiq.keys import Keys
from app.store import overdue
from app.store.db import create_engine, create_sessionmaker
from app.store.overdue import RunCursor, lost_counts, queued_runs, started_runs, stuck_counts
from app.store.tables import JobRow, stored_time
from benchmarks import fake_ledger
from benchmarks.console import Plan, Recorder
from benchmarks.throwaway import RESULTS, ROOT, Database, connect, query, scratch_database

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
# A round that needs `schedule` (50,000 entries) takes ~50 ticks: 60 see one close.
TICKS = int(os.environ.get("BENCH_TICKS", "60"))
# Scenario 3's ticks take seconds each (its stuck gauge), and all look alike.
STUCK_TICKS = int(os.environ.get("BENCH_STUCK_TICKS", "20"))
REDIS_URL = os.environ.get("BENCH_RECONCILE_REDIS_URL", "redis://127.0.0.1:6379/11")
STARTED, QUEUED = 100_000, 50_000
RETRIES, DEAD, SCHEDULED = 20_000, 10_000, 50_000
CONCURRENCY, HOSTS = 25, 100
QUEUE_LATENCY_SECONDS = 600.0  # every queue's oldest job; younger queued rows are not overdue
DIRECT_RUNS = 3
SEED = 20_261_124
# Which function each phase's time is spent in (patched where reconcile.py looks them up).
PHASE_OF = {
    "started_runs": "open",
    "queued_runs": "open",
    "scan_step": "scan",
    "write_batch": "close",
    "stuck_counts": "gauges",
    "lost_counts": "gauges",
}
PHASES = ("open", "scan", "close", "gauges")
GAUGES = ("stuck_counts", "lost_counts")


# The ledger ----------------------------------------------------------------------------------

SHAPE = fake_ledger.make_shape()
WEIGHTS = [SHAPE.class_share[name] for name in SHAPE.classes]
INSERT = f"INSERT INTO jobs ({', '.join(fake_ledger.COLUMNS)}) VALUES "
UPSERT_TAIL = " ON DUPLICATE KEY UPDATE " + ", ".join(
    f"{column} = VALUES({column})" for column in fake_ledger.COLUMNS[1:]
)


@dataclass(frozen=True, slots=True)
class OpenJob:
    """One started or queued ledger row as a scenario lays it out."""

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
    (its own status mix is fixed); status_key is the newest event's event_key."""
    times = fake_ledger._times(rng, status, last_us)
    key = str(last_us * 8 + RANK[status])
    failed = status is EventName.FAILED
    error_class, error_message = rng.choice(fake_ledger.ERRORS) if failed else (None, None)
    process = None if times.started is None else f"worker-{rng.randint(1, 12)}:{rng.randint(1, 9)}"
    attempts = 0 if times.started is None else rng.randint(1, 3) if times.failed else 1
    when, quote = fake_ledger._when, fake_ledger._quote
    values = [
        quote(jid), quote(job_class), quote(SHAPE.class_queue[job_class]),
        quote(fake_ledger._arguments(rng)), "0", key, quote(status), key,
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
        indexes = await fake_ledger._secondary_indexes(cursor)
        await cursor.execute(f"ALTER TABLE jobs {', '.join(f'DROP INDEX `{n}`' for n in indexes)}")
        await fake_ledger._insert(cursor, closed_chunks(ledger.closed, now_us))
        adds = ", ".join(f"ADD INDEX `{n}` ({', '.join(c)})" for n, c in indexes.items())
        await cursor.execute(f"ALTER TABLE jobs {adds}")
    return time.perf_counter() - started


async def lay_out(db: Database, jobs: list[OpenJob]) -> float:
    """Rewrite the open rows for a scenario; drop what the previous one's rounds wrote."""
    started = time.perf_counter()
    async with connect(db.server, db.name) as conn, conn.cursor() as cursor:
        await cursor.execute("TRUNCATE TABLE job_events")
        await fake_ledger._insert(cursor, open_chunks(jobs))
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
        lambda rng, _n: (rng.uniform(3700, 6 * 3600), True),
        young_queued,
        STUCK_TICKS,
    ),
]


def open_jobs(scenario: Scenario, ledger: Ledger, now_us: int) -> list[OpenJob]:
    rng = random.Random(SEED + 3)
    jobs = []
    for status, jids, age in (
        (EventName.STARTED, ledger.started, scenario.started),
        (EventName.QUEUED, ledger.queued, scenario.queued),
    ):
        for n, jid in enumerate(jids):
            seconds, running = age(rng, n)
            job_class = rng.choices(SHAPE.classes, WEIGHTS)[0]
            queue = SHAPE.class_queue[job_class]
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


# Timing and reading plans ----------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    """One store or Redis call the reconciler made. `returned`: rows, entries, events, or the
    rows a GROUP BY counted; `rows_read` and `examined`: summed over its statements."""

    function: str
    seconds: float
    returned: int
    statements: list[tuple[str, Any]] = field(default_factory=list)
    rows_read: float = 0.0
    examined: int = 0


@dataclass(slots=True)
class Tick:
    seconds: float = 0.0
    calls: list[Call] = field(default_factory=list)
    verdicts: Verdicts | None = None

    def phase(self, name: str) -> list[Call]:
        return [c for c in self.calls if PHASE_OF[c.function] == name]

    def phase_seconds(self, name: str) -> float:
        if name == "other":  # Python: the running set, building the round, events, metrics
            return self.seconds - sum(c.seconds for c in self.calls)
        return sum(c.seconds for c in self.phase(name))


def returned(name: str, args: tuple[Any, ...], result: Any) -> int:
    if name == "scan_step":
        return len(result[1])
    if name == "write_batch":
        return len(args[1])
    if isinstance(result, dict):
        return sum(result.values())
    return len(result)


class Probe:
    """Wraps the functions reconcile.py calls, timing them and taking the SQL they sent."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.tick = Tick()

    def wrap(self, name: str, function: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            self.recorder.take()
            started = time.perf_counter()
            result = await function(*args, **kwargs)
            seconds = time.perf_counter() - started
            call = Call(name, seconds, returned(name, args, result), self.recorder.take())
            self.tick.calls.append(call)
            return result

        return timed

    def install(self, stack: ExitStack) -> None:
        for name in PHASE_OF:
            original = getattr(under_test, name)
            stack.enter_context(mock.patch.object(under_test, name, self.wrap(name, original)))


# Index condition pushdown rejects index entries inside the engine: r_rows never sees them.
SHOW_ICP = (
    "SHOW SESSION STATUS WHERE Variable_name IN ('Handler_icp_attempts', 'Handler_icp_match')"
)


async def icp_rejects(conn: AsyncConnection) -> int:
    rows: Sequence[Any] = (await conn.exec_driver_sql(SHOW_ICP)).all()  # (name, value)
    counts = {str(row[0]): int(row[1]) for row in rows}
    return counts["Handler_icp_attempts"] - counts["Handler_icp_match"]


async def examine(engine: AsyncEngine, statement: str, params: Any) -> tuple[Plan, int]:
    """EXPLAIN, then ANALYZE (which runs the query): the plan with r_rows, and the index entries
    or rows examined: r_rows plus the entries index condition pushdown rejected on the way."""
    async with engine.connect() as conn:
        plan = (await conn.exec_driver_sql("EXPLAIN " + statement, params)).mappings().one()
        before = await icp_rejects(conn)
        found = (await conn.exec_driver_sql("ANALYZE " + statement, params)).mappings().one()
        rejected = await icp_rejects(conn) - before
    read = None if found["r_rows"] is None else float(found["r_rows"])
    return Plan(
        statement=statement,
        access=str(plan["type"]),
        key=plan["key"],
        rows_estimate=plan["rows"],
        rows_read=read,
        extra=str(plan["Extra"] or ""),
    ), round(read or 0) + rejected


async def run_ticks(
    scenario: Scenario, reconciler: Reconciler, snapshot: Snapshot, probe: Probe,
    engine: AsyncEngine,
) -> tuple[list[Tick], dict[str, tuple[Plan, int]]]:  # fmt: skip
    """The scenario's ticks on one snapshot; after each (untimed) its statements are examined,
    a gauge's only when it counted a number of rows not seen yet (it reads the same again)."""
    ticks: list[Tick] = []
    plans: dict[str, tuple[Plan, int]] = {}
    seen: dict[tuple[str, int], Call] = {}
    for _ in range(scenario.ticks):
        probe.tick = Tick()
        started = time.perf_counter()
        probe.tick.verdicts = await reconciler.tick(snapshot)
        probe.tick.seconds = time.perf_counter() - started
        ticks.append(probe.tick)
        for call in probe.tick.calls:
            known = seen.get((call.function, call.returned))
            if call.function in GAUGES and known is not None:
                call.rows_read, call.examined = known.rows_read, known.examined
                continue
            seen[call.function, call.returned] = call
            for sql, params in call.statements:
                plan, examined = await examine(engine, sql, params)
                call.rows_read += plan.rows_read or 0.0
                call.examined += examined
                # Kept: the plan that examined the most, per function.
                if call.function not in plans or examined > plans[call.function][1]:
                    plans[call.function] = (plan, examined)
    return ticks, plans


# Report ----------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def spread(values: Sequence[float]) -> str:
    return "-" if not values else f"{statistics.median(values):,.0f} / {max(values):,.0f}"


def phase_figures(name: str, ticks: list[Tick]) -> dict[str, Any]:
    """A phase's time in each tick it ran in, what its calls returned, what they read."""
    ran = ticks if name == "other" else [t for t in ticks if t.phase(name)]
    return {
        "ticks": len(ran),
        "seconds": [t.phase_seconds(name) for t in ran],
        "returned": [sum(c.returned for c in t.phase(name)) for t in ran],
        "rows_read": [sum(c.rows_read for c in t.phase(name)) for t in ran],
        "examined": [sum(c.examined for c in t.phase(name)) for t in ran],
    }


def split(tick: Tick) -> str:
    return ", ".join(f"{name} {ms(tick.phase_seconds(name))}" for name in (*PHASES, "other"))


def print_phases(ticks: list[Tick]) -> dict[str, Any]:
    later = ticks[1:]
    slowest = max(range(len(later)), key=lambda n: later[n].seconds)
    print(f"  first tick {ms(ticks[0].seconds)} ms ({split(ticks[0])})")
    print(f"  ticks 2-{len(ticks)}: median {ms(statistics.median(t.seconds for t in later))} ms, "
          f"max {ms(later[slowest].seconds)} ms at tick {slowest + 2} "
          f"({split(later[slowest])})")  # fmt: skip
    print(f"  {'phase':7} {'ticks':>5} {'ms median':>9} {'ms max':>8}   per tick (median / max): "
          f"{'returned':>15} {'r_rows':>15} {'examined':>15}")  # fmt: skip
    phases = {name: phase_figures(name, ticks) for name in (*PHASES, "other")}
    for name, f in phases.items():
        cells = [f"  {name:7} {f['ticks']:>5}"]
        if f["ticks"]:
            cells += [f"{ms(statistics.median(f['seconds'])):>9}", f"{ms(max(f['seconds'])):>8}"]
            counts = [] if name == "other" else [f["returned"]]
            counts += [f["rows_read"], f["examined"]] if name in ("open", "gauges") else []
            cells += [" " * 27] + [f"{spread(values):>15}" for values in counts]
        print(" ".join(cells))
    return phases


def print_rounds(ticks: list[Tick], config: ReconcileConfig, interval: float) -> dict[str, Any]:
    """When rounds opened and closed, what they decided, and the pace that gives."""
    opened = [n for n, t in enumerate(ticks, 1) if t.phase("open") and t.phase("scan")]
    closed = [n for n, t in enumerate(ticks, 1) if t.verdicts is not None]
    empty = sum(1 for t in ticks if t.phase("open") and not t.phase("scan"))
    lengths = [c - o + 1 for o, c in zip(opened, closed, strict=False)]
    decided = Counter[str]()
    for verdicts in (t.verdicts for t in ticks if t.verdicts is not None):
        for kind in ("failed", "dead", "scheduled", "lost"):
            decided[kind] += len(getattr(verdicts, kind))
    print(f"  rounds opened at ticks {opened}, closed at {closed}: {lengths} ticks a round; "
          f"{empty} opens found no candidate; decided {dict(decided)}")  # fmt: skip
    if lengths:
        ticks_needed = STARTED // config.batch * max(lengths)
        print(f"  a backlog of {STARTED:,} candidates at {config.batch:,} a round of "
              f"{max(lengths)} ticks: {ticks_needed:,} ticks = "
              f"{ticks_needed * interval / 3600:.1f} h at {interval:g} s a tick")  # fmt: skip
    return {"opened": opened, "closed": closed, "empty_opens": empty, "decided": dict(decided)}


def plan_line(label: str, plan: Plan, examined: int) -> str:
    return (f"{label}type={plan.access} key={plan.key} rows~{plan.rows_estimate} "
            f"r_rows={plan.rows_read:.0f} examined={examined:,} extra={plan.extra!r}")  # fmt: skip


def print_plans(plans: dict[str, tuple[Plan, int]]) -> None:
    print("  EXPLAIN / ANALYZE, per function (its call that examined the most):")
    for name, (plan, examined) in plans.items():
        sql = " ".join(plan.statement.split())
        where = sql[sql.index(" WHERE ") :] if " WHERE " in sql else sql
        print(f"{plan_line(f'    {name}: ', plan, examined)}\n      ...{where[:160]}")


# Scenarios, run --------------------------------------------------------------------------------


def make_config(settings: Settings) -> ReconcileConfig:
    """As the lifespan would build it from the settings (defaults: batch and scan 1,000)."""
    return ReconcileConfig(
        stuck_after=timedelta(seconds=settings.STUCK_AFTER_SECONDS),
        stuck_after_by_class={
            name: timedelta(seconds=s) for name, s in settings.STUCK_AFTER_BY_CLASS.items()
        },
        lost_grace=timedelta(seconds=settings.LOST_GRACE_SECONDS),
        process_stale=timedelta(seconds=settings.PROCESS_STALE_SECONDS),
        batch=settings.RECONCILE_BATCH,
        scan_count=settings.RECONCILE_SCAN_COUNT,
        max_error_chars=settings.MAX_ERROR_MESSAGE_CHARS,
    )


def make_reconciler(redis: Redis, engine: AsyncEngine, settings: Settings) -> Reconciler:
    metrics = JobMetrics(
        CollectorRegistry(),
        max_workers=settings.MAX_WORKER_LABELS,
        max_queues=settings.MAX_QUEUE_LABELS,
        max_error_classes=settings.MAX_ERROR_CLASS_LABELS,
    )
    sessions = create_sessionmaker(engine)
    config = make_config(settings)
    return Reconciler(redis=redis, keys=Keys(), sessions=sessions, metrics=metrics, config=config)


@dataclass(frozen=True, slots=True)
class Bench:
    """What every scenario runs against."""

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


async def run_scenario(bench: Bench, scenario: Scenario) -> dict[str, Any]:
    jobs = open_jobs(scenario, bench.ledger, bench.now_us)
    laid = await lay_out(bench.db, jobs)
    snapshot = make_snapshot(bench.now, jobs, scenario.busy_elsewhere)
    del jobs  # the app holds the snapshot, not the benchmark's lists: keep its GC work alike
    config = make_config(bench.settings)
    started = time.perf_counter()
    running = snapshot.running(config.process_stale)
    running_s = time.perf_counter() - started
    print(f"\nscenario {scenario.name}: {scenario.description}")
    print(
        f"  open rows rewritten in {laid:.1f} s; {len(snapshot.processes):,} live processes, "
        f"{len(running):,} running (snapshot.running() {ms(running_s)} ms: in 'other')"
    )
    with ExitStack() as stack:
        bench.probe.install(stack)
        reconciler = make_reconciler(bench.redis, bench.engine, bench.settings)
        ticks, plans = await run_ticks(scenario, reconciler, snapshot, bench.probe, bench.engine)
    phases = print_phases(ticks)
    rounds = print_rounds(ticks, config, bench.settings.SAMPLE_INTERVAL_SECONDS)
    print_plans(plans)
    return {
        "description": scenario.description,
        "running_seconds": running_s,
        "tick_seconds": [t.seconds for t in ticks],
        "phases": phases,
        "rounds": rounds,
        "plans": {name: {**asdict(p), "examined": n} for name, (p, n) in plans.items()},
    }


# The gauges' reads alone, and a what-if index ---------------------------------------------------

# A lost event sits at the run's start with rank LOST: status_key moves by the rank difference.
SHIFT = RANK[EventName.LOST] - RANK[EventName.STARTED]
TO_LOST = (
    f"UPDATE jobs SET status = 'lost', status_key = status_key + {SHIFT} WHERE status = 'started'"
)
TO_STARTED = (
    f"UPDATE jobs SET status = 'started', status_key = status_key - {SHIFT} WHERE status = 'lost'"
)
# Not in the app, tried on the scratch database: the gauges' columns in an index, so they read
# no table rows: after the reconciler's range (A), in GROUP BY order (B), or appended to the
# index the queued read already uses (C).
WHAT_IF = {
    "what-if index A": "ALTER TABLE jobs "
    "ADD INDEX ix_whatif_a (status, started_at, queue, job_class)",
    "what-if index B": "ALTER TABLE jobs DROP INDEX ix_whatif_a, "
    "ADD INDEX ix_whatif_b (status, queue, job_class, started_at)",
    # No index more: the queued read's index, widened.
    "what-if index C": "ALTER TABLE jobs DROP INDEX ix_whatif_b, "
    "DROP INDEX ix_jobs_status_queue_enqueued_at, "
    "ADD INDEX ix_whatif_c (status, queue, enqueued_at, job_class, started_at)",
}
Read = Callable[[Any], Awaitable[Any]]


async def direct(bench: Bench, label: str, read: Read) -> dict[str, Any]:
    """A store read alone, timed DIRECT_RUNS times, its SQL examined."""
    sessions = create_sessionmaker(bench.engine)
    seconds = []
    for _ in range(DIRECT_RUNS):
        bench.probe.recorder.take()
        started = time.perf_counter()
        async with sessions() as session:
            found = await read(session)
        seconds.append(time.perf_counter() - started)
    examined = [await examine(bench.engine, *s) for s in bench.probe.recorder.take()]
    rows = sum(found.values()) if isinstance(found, dict) else len(found)
    print(f"  {label}: {len(examined)} statement(s), median {ms(statistics.median(seconds))} ms, "
          f"max {ms(max(seconds))} ms, {rows:,} rows")  # fmt: skip
    for plan, n in examined:
        print(plan_line("      ", plan, n))
    return {"seconds": seconds, "rows": rows, "plans": [asdict(p) for p, _ in examined]}


async def execute(db: Database, sql: str) -> None:
    async with connect(db.server, db.name) as conn, conn.cursor() as cursor:
        await cursor.execute(sql)


async def index_mib(db: Database) -> float:
    rows = await query(
        db,
        "SELECT index_length FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_name = 'jobs'",
    )
    return float(rows[0][0]) / 2**20


async def started_runs_bounded(
    session: AsyncSession, *, before: datetime, after: RunCursor, limit: int
) -> list[Any]:
    """Not in the app: started_runs with a plain lower bound on started_at beside the cursor's
    OR, and the index forced: without both, MariaDB reads by `ref` on status from the start of
    the index and drops the entries before the cursor one by one (index condition pushdown)."""
    started, at = JobRow.started_at, stored_time(after.started_at)
    query = (
        select(*overdue.COLUMNS)
        .with_hint(JobRow, "FORCE INDEX (ix_jobs_status_started_at_jid)")
        .where(
            JobRow.status == JobStatus.STARTED.value,
            started < stored_time(before),
            started >= at,
            or_(started > at, and_(started == at, JobRow.jid > after.jid)),
        )
        .order_by(started, JobRow.jid)
        .limit(limit)
    )
    return list((await session.execute(query)).all())


async def halfway(bench: Bench) -> RunCursor:
    """Where the paced pass stands after 50,000 of the 100,000 started rows."""
    rows = await query(
        bench.db,
        "SELECT started_at, jid FROM jobs WHERE status = 'started' ORDER BY started_at, jid "
        f"LIMIT 1 OFFSET {STARTED // 2 - 1}",
    )
    return RunCursor(rows[0][0].replace(tzinfo=UTC), str(rows[0][1]))


async def gauges_alone(bench: Bench) -> dict[str, Any]:
    """With scenario 3's rows (100,000 started hours ago): the open read, first and middle page;
    the stuck gauge, with the default and with three per-class thresholds (a statement each);
    the lost gauge with those rows `lost`. As migrated, then with each WHAT_IF index."""
    now, settings = bench.now, bench.settings
    by_class = {name: timedelta(hours=2) for name in SHAPE.classes[:3]}
    stuck = timedelta(seconds=settings.STUCK_AFTER_SECONDS)
    before, batch = now - timedelta(seconds=settings.LOST_GRACE_SECONDS), settings.RECONCILE_BATCH
    cursor = await halfway(bench)
    grace = timedelta(seconds=settings.LOST_GRACE_SECONDS + QUEUE_LATENCY_SECONDS)
    cutoffs = dict.fromkeys(fake_ledger.QUEUES, now - grace)
    reads: dict[str, Read] = {
        "open: queued_runs": lambda s: queued_runs(
            s, cutoffs=cutoffs, elsewhere_before=before, limit=batch
        ),
        "open: started_runs, first page": lambda s: started_runs(
            s, before=before, after=None, limit=batch
        ),
        "open: started_runs, after 50,000 rows": lambda s: started_runs(
            s, before=before, after=cursor, limit=batch
        ),
        "stuck gauge": lambda s: stuck_counts(s, now=now, after=stuck, after_by_class={}),
        "stuck gauge, 3 per-class thresholds": lambda s: stuck_counts(
            s, now=now, after=stuck, after_by_class=by_class
        ),
    }
    found: dict[str, Any] = {}
    for variant, alter in (("as migrated", None), *WHAT_IF.items()):
        if alter is not None:
            started, was = time.perf_counter(), await index_mib(bench.db)
            await execute(bench.db, alter)
            print(f"\n{alter}\n  ({time.perf_counter() - started:.1f} s; the table's indexes "
                  f"{was:.0f} -> {await index_mib(bench.db):.0f} MiB)")  # fmt: skip
        print(f"\nreads alone, 100,000 started rows stuck, then lost ({variant}):")
        for label, read in reads.items():
            found[f"{variant}: {label}"] = await direct(bench, label, read)
        if alter is None:
            label = "what-if SQL: after 50,000 rows, lower bound + FORCE INDEX"
            found[label] = await direct(
                bench,
                label,
                lambda s: started_runs_bounded(s, before=before, after=cursor, limit=batch),
            )
        await execute(bench.db, TO_LOST)
        found[f"{variant}: lost gauge"] = await direct(bench, "lost gauge", lost_counts)
        await execute(bench.db, TO_STARTED)
    return found


# Main ------------------------------------------------------------------------------------------


async def prepare(db: Database, redis: Redis) -> tuple[Ledger, datetime]:
    now = datetime.now(UTC).replace(microsecond=0)
    ledger = make_ledger(ROWS)
    gc.freeze()  # the benchmark's million jids are no part of the reconciler's heap
    load = await load_closed(db, ledger, (now - fake_ledger.EPOCH) // timedelta(microseconds=1))
    print(f"loaded {len(ledger.closed):,} completed/failed rows in {load:.1f} s")
    await redis.flushdb()
    await fill_sets(redis, Keys(), ledger, now.timestamp())
    sizes = [await redis.zcard(key) for key in ("retry", "dead", "schedule")]
    print(f"Redis: retry {sizes[0]:,}, dead {sizes[1]:,}, schedule {sizes[2]:,} entries")
    return ledger, now


async def run(db: Database) -> dict[str, Any]:
    redis = Redis.from_url(REDIS_URL)
    settings = Settings(_env_file=None, DATABASE_URL=db.url)
    engine = create_engine(settings, name="sidekiq-supervisor-bench")
    try:
        ledger, now = await prepare(db, redis)
        bench = Bench(db, redis, engine, Probe(Recorder(engine)), settings, ledger, now)
        results = {s.name: await run_scenario(bench, s) for s in SCENARIOS}
        results["gauges alone"] = await gauges_alone(bench)
    finally:
        await engine.dispose()
        await redis.flushdb()
        await redis.aclose()
    return {
        "rows": ROWS,
        "open_rows": {"started": STARTED, "queued": QUEUED},
        "sets": {"retry": RETRIES, "dead": DEAD, "schedule": SCHEDULED},
        "config": asdict(make_config(settings)),
        "results": results,
    }


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"reconcile: {ROWS:,} ledger rows ({STARTED:,} started, {QUEUED:,} queued), "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    try:
        with scratch_database() as db:
            result = asyncio.run(run(db))
    except RuntimeError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    (RESULTS / "reconcile.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {(RESULTS / 'reconcile.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
