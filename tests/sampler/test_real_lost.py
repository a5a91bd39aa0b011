"""A real Sidekiq 6.4.1 killed with kill -9 mid-job: the reconciler finds the job lost once the
process's heartbeat is stale, and requeue makes the next real Sidekiq run it again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain import EventName, JobEvent, JobFilter, JobStatus
from app.exporter.jobs import JobMetrics
from app.manager import JobManager
from app.sampler.reconcile import ReconcileConfig, Reconciler
from app.sidekiq.keys import Keys
from app.sidekiq.reader import read_snapshot
from app.store.db import create_engine, create_sessionmaker
from app.store.ledger_writes import write_batch
from tests.conftest import make_settings
from tests.sidekiq.real_sidekiq import (
    HEARTBEAT_SECONDS,
    POLL_SECONDS,
    STARTED,
    RealSidekiq,
    job,
    start_sidekiq,
    successor,
)

pytestmark = pytest.mark.slow

# Sidekiq 6 beats every 5 s: a live process's beat is never this old, a killed one's soon is.
STALE = timedelta(seconds=HEARTBEAT_SECONDS + 2)
CONFIG = ReconcileConfig(
    stuck_after=timedelta(hours=1),
    stuck_after_by_class={},
    lost_grace=timedelta(seconds=1),
    process_stale=STALE,
    batch=100,
    scan_count=100,
    max_error_chars=1_000,
)
DETECTION_DEADLINE_SECONDS = STALE.total_seconds() + 2 * HEARTBEAT_SECONDS


@pytest.fixture
async def engine(mysql_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(make_settings(mysql_url))
    async with engine.begin() as conn:
        for table in ("jobs", "job_events"):
            await conn.exec_driver_sql(f"DELETE FROM {table}")
    yield engine
    await engine.dispose()


async def record_running(engine: AsyncEngine, jid: str) -> None:
    """What the server middleware posts when the job starts, dated past the grace period."""
    at = datetime.now(UTC) - 2 * CONFIG.lost_grace
    events = [
        JobEvent(jid, name, at, at, job_class="HoldJob", queue="default", arguments="[30]")
        for name in (EventName.QUEUED, EventName.STARTED)
    ]
    async with engine.connect() as conn:
        await write_batch(conn, events)


async def lost_after_kill(reconciler: Reconciler, sidekiq: RealSidekiq, jid: str) -> float:
    """Ticks until the reconciler calls `jid` lost; the seconds it took after the kill."""
    killed = time.monotonic()
    await sidekiq.kill9()
    while time.monotonic() - killed < DETECTION_DEADLINE_SECONDS:
        verdicts = await reconciler.tick(await read_snapshot(sidekiq.redis, Keys()))
        if verdicts is not None and jid in verdicts.lost:
            return time.monotonic() - killed
        await asyncio.sleep(POLL_SECONDS * 4)
    pytest.fail(f"{jid} not found lost within {DETECTION_DEADLINE_SECONDS:g}s of kill -9")


async def test_a_job_killed_with_its_process_is_lost_then_requeued_and_run(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    sessions = create_sessionmaker(engine)
    metrics = JobMetrics(CollectorRegistry(), max_workers=10, max_queues=10, max_error_classes=10)
    async with start_sidekiq(tmp_path) as sidekiq:
        reconciler = Reconciler(
            redis=sidekiq.redis, keys=Keys(), sessions=sessions, metrics=metrics, config=CONFIG
        )
        manager = JobManager(sessions, redis=sidekiq.redis, process_stale=STALE)
        [jid] = await sidekiq.hold(default=1)
        await record_running(engine, jid)
        await sidekiq.wait_for_heartbeat(lambda beat: beat.busy == 1, "the held job to show busy")
        # Running, and past the grace period: still not lost while its process beats.
        assert await reconciler.tick(await read_snapshot(sidekiq.redis, Keys())) is None

        await lost_after_kill(reconciler, sidekiq, jid)
        lost = await manager.job(jid)
        assert lost is not None
        assert lost.status is JobStatus.LOST

        report = await manager.restart_uncompleted_jobs(JobFilter(job_class="HoldJob"))
        [item] = report.requeued
        assert item.job.jid == jid
        assert item.new_jid is not None
        async with successor(sidekiq, tmp_path) as next_sidekiq:
            await next_sidekiq.wait_until(
                lambda: _started(next_sidekiq, str(item.new_jid)), "the requeued job to run"
            )
            await next_sidekiq.release(item.new_jid)
        original = await manager.job(jid)
        assert original is not None
        assert (original.status, original.requeued_as) == (JobStatus.REQUEUED, item.new_jid)


async def _started(sidekiq: RealSidekiq, jid: str) -> bool:
    return jid.encode() in await sidekiq.redis.lrange(STARTED, 0, -1)


async def test_a_job_that_raised_under_the_original_middleware_is_found_failed(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    """The original middleware posts queued and started, then nothing when the job raises: the
    reconciler reads the failure from the entry real Sidekiq wrote to `retry`."""
    sessions = create_sessionmaker(engine)
    registry = CollectorRegistry()
    metrics = JobMetrics(registry, max_workers=10, max_queues=10, max_error_classes=10)
    async with start_sidekiq(tmp_path) as sidekiq:
        reconciler = Reconciler(
            redis=sidekiq.redis, keys=Keys(), sessions=sessions, metrics=metrics, config=CONFIG
        )
        [jid] = await sidekiq.push(job("ExplodeJob", "default", "kaput"))
        await sidekiq.wait_until(
            lambda: _in_retry(sidekiq, jid), "the raising job to land in retry"
        )
        at = datetime.now(UTC) - 2 * CONFIG.lost_grace
        events = [
            JobEvent(
                jid, name, at, at, job_class="ExplodeJob", queue="default", arguments='["kaput"]'
            )
            for name in (EventName.QUEUED, EventName.STARTED)
        ]
        async with engine.connect() as conn:
            await write_batch(conn, events)

        verdicts = await reconciler.tick(await read_snapshot(sidekiq.redis, Keys()))
        assert verdicts is not None
        assert verdicts.failed == [jid]
        found = await JobManager(sessions).job(jid)
        assert found is not None
        assert (found.status, found.error_class, found.error_message) == (
            JobStatus.FAILED,
            "Boom",
            "kaput",
        )
        assert found.attempts == 1
        labels = {"queue": "default", "worker": "ExplodeJob", "error_class": "Boom"}
        assert registry.get_sample_value("sidekiq_jobs_failed_total", labels) == 1


async def _in_retry(sidekiq: RealSidekiq, jid: str) -> bool:
    return jid in await sidekiq.jids_in("retry")
