"""Reconcile benchmark: the stuck/lost reconciler's cost per tick with 100,000 uncompleted
(`started`) jobs among 1,000,000 ledger rows, plus 50,000 queued, and Sidekiq's sets holding
20,000 retries, 10,000 dead and 50,000 scheduled jobs (some of them ledger jids).

    make bench-reconcile     # BENCH_ROWS (1,000,000), BENCH_TICKS (60), BENCH_STUCK_TICKS (20),
                             # BENCH_MYSQL_URL, BENCH_RECONCILE_REDIS_URL (redis://...:6379/11)

Scenarios (reconcile_world.py): (1) steady: the started jobs are running or younger than the
grace period, 60 are candidates; (2) worst: all 100,000 are old and nobody runs them; (3) stuck:
all 100,000 have run longer than the stuck threshold, with the default threshold and again with
three per-class thresholds; (4) lost: those 100,000 rows are `lost`. Each tick runs the real
Reconciler on a fixed snapshot; its store and Redis calls are timed from outside and each SELECT
it sent is EXPLAINed and ANALYZEd (reconcile_ticks.py): r_rows (rows the plan read) and
`examined` (r_rows plus the index entries index condition pushdown rejected). Then the reads
alone, as migrated and with a what-if index layout on the scratch database (reconcile_reads.py).
The Redis database is flushed at the start and at the end. Writes benchmarks/results/reconcile.json.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.exporter.jobs import JobMetrics
from app.sampler.reconcile import ReconcileConfig, Reconciler
from app.sidekiq.keys import Keys
from app.store.db import create_engine, create_sessionmaker
from benchmarks import fake_ledger
from benchmarks.console import Recorder
from benchmarks.reconcile_reads import reads_alone
from benchmarks.reconcile_ticks import Probe, ms, print_phases, print_plans, print_rounds, run_ticks
from benchmarks.reconcile_world import (
    DEAD,
    QUEUED,
    RETRIES,
    ROWS,
    SCENARIOS,
    SCHEDULED,
    STARTED,
    Bench,
    Ledger,
    Scenario,
    fill_sets,
    lay_out,
    load_closed,
    make_ledger,
    make_snapshot,
    open_jobs,
)
from benchmarks.throwaway import RESULTS, ROOT, Database, query, scratch_database

REDIS_URL = os.environ.get("BENCH_RECONCILE_REDIS_URL", "redis://127.0.0.1:6379/11")


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


async def run_scenario(bench: Bench, scenario: Scenario) -> dict[str, Any]:
    jobs = open_jobs(scenario, bench.ledger, bench.now_us)
    laid = await lay_out(bench.db, jobs)
    snapshot = make_snapshot(bench.now, jobs, scenario.busy_elsewhere)
    del jobs  # the app holds the snapshot, not the benchmark's lists: keep its GC work alike
    settings = bench.settings.model_copy(update=dict(scenario.settings))
    config = make_config(settings)
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
        reconciler = make_reconciler(bench.redis, bench.engine, settings)
        ticks, plans = await run_ticks(
            scenario.ticks, reconciler, snapshot, bench.probe, bench.engine
        )
    phases = print_phases(ticks)
    rounds = print_rounds(ticks, config, settings.SAMPLE_INTERVAL_SECONDS, STARTED)
    print_plans(plans)
    return {
        "description": scenario.description,
        "settings": dict(scenario.settings),
        "running_seconds": running_s,
        "tick_seconds": [t.seconds for t in ticks],
        "phases": phases,
        "rounds": rounds,
        "plans": {name: {**asdict(p), "examined": n} for name, (p, n) in plans.items()},
    }


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
    pool = (await query(db, "SELECT @@innodb_buffer_pool_size"))[0][0]
    # When the table outgrows it, a read's primary-key look-ups miss it: their cost depends on it.
    print(f"InnoDB buffer pool {int(pool) / 2**20:,.0f} MiB")
    return ledger, now


async def run(db: Database) -> dict[str, Any]:
    redis = Redis.from_url(REDIS_URL)
    settings = Settings(_env_file=None, DATABASE_URL=db.url)
    engine = create_engine(settings, name="sidekiq-supervisor-bench")
    try:
        ledger, now = await prepare(db, redis)
        bench = Bench(db, redis, engine, Probe(Recorder(engine)), settings, ledger, now)
        # Scenario 4 comes last: the reads alone turn its lost rows back into scenario 3's.
        results = {s.name: await run_scenario(bench, s) for s in SCENARIOS}
        results["reads alone"] = await reads_alone(bench)
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
