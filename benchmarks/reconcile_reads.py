"""The reconciler's reads alone, each timed DIRECT_RUNS times (the median is a warm read) and
examined: the open reads and both gauges on 100,000 lost rows and on 100,000 started 1-6 h ago,
as migrated and with a what-if index layout (tried on the scratch database only).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import RANK, EventName, JobStatus
from app.store.db import create_sessionmaker
from app.store.overdue import (
    LabelCounts,
    RunCursor,
    lost_counts,
    queued_runs,
    started_runs,
    stuck_counts,
)
from app.store.tables import JobRow, stored_time
from benchmarks import fake_ledger
from benchmarks.reconcile_ticks import examine, ms, plan_line
from benchmarks.reconcile_world import BY_CLASS_SECONDS, QUEUE_LATENCY_SECONDS, STARTED, Bench
from benchmarks.throwaway import Database, connect, query

DIRECT_RUNS = 3
# A lost event sits at the run's start with rank LOST: status_key moves by the rank difference.
SHIFT = RANK[EventName.LOST] - RANK[EventName.STARTED]
TO_LOST = (
    f"UPDATE jobs SET status = 'lost', status_key = status_key + {SHIFT} WHERE status = 'started'"
)
TO_STARTED = (
    f"UPDATE jobs SET status = 'started', status_key = status_key - {SHIFT} WHERE status = 'lost'"
)
# Not in the app, tried on the scratch database: the stuck gauge's columns after the start time,
# so its range is the stuck entries alone (the covering index it forces now holds every started
# row in one `ref`, stuck or not), and that index without started_at, which only the stuck gauge
# read from it (the lost gauge still does). jid cannot join the started-run index instead: with
# queue and job_class it passes InnoDB's 3,072-byte key limit.
WHATIF_INDEX = "ix_whatif_started"
WHAT_IF = (
    "ALTER TABLE jobs DROP INDEX ix_jobs_status_queue_enqueued_at, "
    "ADD INDEX ix_jobs_status_queue_enqueued_at (status, queue, enqueued_at, job_class), "
    f"ADD INDEX {WHATIF_INDEX} (status, started_at, queue, job_class)"
)
INDEX_SIZES = (
    "SELECT index_name, stat_value * @@innodb_page_size FROM mysql.innodb_index_stats "
    "WHERE database_name = DATABASE() AND table_name = 'jobs' AND stat_name = 'size'"
)
Read = Callable[[AsyncSession], Awaitable[LabelCounts | list[Any]]]


class StuckCount(Protocol):
    def __call__(
        self,
        session: AsyncSession,
        *,
        now: datetime,
        after: timedelta,
        after_by_class: Mapping[str, timedelta],
    ) -> Awaitable[LabelCounts]: ...


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
    rows = sum(found.values()) if isinstance(found, Mapping) else len(found)
    print(f"  {label}: {len(examined)} statement(s), median {ms(statistics.median(seconds))} ms, "
          f"max {ms(max(seconds))} ms, {rows:,} rows")  # fmt: skip
    for plan, n in examined:
        print(plan_line("      ", plan, n))
    return {"seconds": seconds, "rows": rows, "plans": [asdict(p) for p, _ in examined]}


async def execute(db: Database, sql: str) -> None:
    async with connect(db.server, db.name) as conn, conn.cursor() as cursor:
        await cursor.execute(sql)


async def index_mib(db: Database) -> dict[str, float]:
    """Each index's size (a rebuilt one is denser than one the open rows' upserts grew)."""
    await query(db, "ANALYZE TABLE jobs")  # the sizes are its persistent statistics
    return {str(name): float(size) / 2**20 for name, size in await query(db, INDEX_SIZES)}


async def stuck_counts_whatif(
    session: AsyncSession,
    *,
    now: datetime,
    after: timedelta,
    after_by_class: Mapping[str, timedelta],
) -> LabelCounts:
    """stuck_counts with a plain bound at the shortest threshold (a range the index can start
    from: no younger row is stuck) beside the per-class CASE, through WHATIF_INDEX."""
    shortest = min([after, *after_by_class.values()])
    cutoff: ColumnElement[object] = literal(stored_time(now - after))
    if after_by_class:
        cutoff = case(
            {name: stored_time(now - limit) for name, limit in after_by_class.items()},
            value=JobRow.job_class,
            else_=stored_time(now - after),
        )
    statement = (
        select(JobRow.queue, JobRow.job_class, func.count())
        .with_hint(JobRow, f"FORCE INDEX ({WHATIF_INDEX})", "mysql")
        .where(
            JobRow.status == JobStatus.STARTED.value,
            JobRow.started_at < stored_time(now - shortest),
            JobRow.started_at < cutoff,
        )
        .group_by(JobRow.queue, JobRow.job_class)
    )
    return {(q, c): n for q, c, n in (await session.execute(statement)).all()}


async def halfway(bench: Bench) -> RunCursor:
    """Where the paced pass stands after 50,000 of the 100,000 started rows."""
    rows = await query(
        bench.db,
        "SELECT started_at, jid FROM jobs WHERE status = 'started' ORDER BY started_at, jid "
        f"LIMIT 1 OFFSET {STARTED // 2 - 1}",
    )
    return RunCursor(rows[0][0].replace(tzinfo=UTC), str(rows[0][1]))


async def started_page(
    session: AsyncSession, *, before: datetime, after: RunCursor | None, limit: int
) -> list[Any]:
    """The runs of one page of the pass over started runs (none skipped as running)."""
    page = await started_runs(session, before=before, after=after, limit=limit)
    return list(page.runs)


def open_reads(bench: Bench, cursor: RunCursor) -> dict[str, Read]:
    """The reads that open a round, as the app sends them."""
    now, settings = bench.now, bench.settings
    before, batch = now - timedelta(seconds=settings.LOST_GRACE_SECONDS), settings.RECONCILE_BATCH
    grace = timedelta(seconds=settings.LOST_GRACE_SECONDS + QUEUE_LATENCY_SECONDS)
    cutoffs = dict.fromkeys(fake_ledger.QUEUES, now - grace)
    return {
        "open: queued_runs": lambda s: queued_runs(
            s, cutoffs=cutoffs, elsewhere_before=before, limit=batch
        ),
        "open: started_runs, first page": lambda s: started_page(
            s, before=before, after=None, limit=batch
        ),
        "open: started_runs, after 50,000 rows": lambda s: started_page(
            s, before=before, after=cursor, limit=batch
        ),
    }


def stuck_reads(bench: Bench, count: StuckCount) -> dict[str, Read]:
    """The stuck gauge on rows started 1-6 h ago: all stuck (1 h), a fifth (5 h), none (7 h,
    as in scenario 1), and with the per-class thresholds."""
    now, hour = bench.now, timedelta(hours=1)
    by_class = {name: timedelta(seconds=s) for name, s in BY_CLASS_SECONDS.items()}
    return {
        "stuck gauge, 1 h": lambda s: count(s, now=now, after=hour, after_by_class={}),
        "stuck gauge, 5 h (a fifth stuck)": lambda s: count(
            s, now=now, after=5 * hour, after_by_class={}
        ),
        "stuck gauge, 7 h (none stuck)": lambda s: count(
            s, now=now, after=7 * hour, after_by_class={}
        ),
        "stuck gauge, 1 h + 3 per-class": lambda s: count(
            s, now=now, after=hour, after_by_class=by_class
        ),
    }


async def reads_alone(bench: Bench) -> dict[str, Any]:
    """On scenario 4's rows (100,000 lost) and on them turned back into scenario 3's (started
    1-6 h ago): the open reads and both gauges, as migrated, then with WHAT_IF's indexes (the
    scratch database keeps them)."""
    found: dict[str, Any] = {}
    for variant, lost, stuck in (
        ("as migrated", lost_counts, stuck_counts),
        ("what-if", lost_counts, stuck_counts_whatif),
    ):
        if variant == "what-if":
            found[variant] = await alter(bench)
            await execute(bench.db, TO_LOST)
        print(f"\nreads alone, 100,000 lost rows ({variant}):")
        found[f"{variant}: lost gauge"] = await direct(bench, "lost gauge", lost)
        await execute(bench.db, TO_STARTED)
        print(f"\nreads alone, 100,000 started rows 1-6 h ago ({variant}):")
        cursor = await halfway(bench)
        for label, read in {**open_reads(bench, cursor), **stuck_reads(bench, stuck)}.items():
            found[f"{variant}: {label}"] = await direct(bench, label, read)
    return found


async def alter(bench: Bench) -> dict[str, Any]:
    """Apply WHAT_IF: the seconds it took and each index's size before and after."""
    started, was = time.perf_counter(), await index_mib(bench.db)
    await execute(bench.db, WHAT_IF)
    seconds, now = time.perf_counter() - started, await index_mib(bench.db)
    print(f"\n{WHAT_IF}\n  ({seconds:.1f} s) index MiB before -> after:")
    for name in sorted(was.keys() | now.keys()):
        print(f"    {name}: {was.get(name, 0):.0f} -> {now.get(name, 0):.0f}")
    return {"seconds": seconds, "index_mib_before": was, "index_mib_after": now}
