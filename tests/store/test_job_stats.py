"""The Metrics aggregate and the GUI's ledger filters (stuck, one jid), on MariaDB and SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain import EventName, JobFilter, StuckRule
from app.store.db import create_sessionmaker
from app.store.job_stats import aggregate, finished_jobs
from app.store.ledger_reads import get_timeline, list_jobs
from tests.web.ledger_seed import CLOCK, life, lost, seed

HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _fresh_clock() -> None:
    CLOCK.reset()


async def test_finished_jobs_are_the_newest_of_the_window(engine: AsyncEngine) -> None:
    await seed(
        engine,
        life("a", ago=500, wait=1, run=2),
        life("b", ago=400, wait=3, run=4, end=EventName.FAILED),
        life("c", ago=300, wait=1, run=1, end=EventName.DEAD),
        life("d", ago=200, wait=1),  # started: not finished
        life("e", ago=100),  # queued
        life("old", ago=7200, wait=1, run=1),
    )
    sessions = create_sessionmaker(engine)
    async with sessions() as session:
        window = await finished_jobs(session, since=CLOCK.now - HOUR, until=CLOCK.now, limit=10)
        newest = await finished_jobs(session, since=CLOCK.now - HOUR, until=CLOCK.now, limit=2)
    assert [job.status for job in window] == ["dead", "failed", "complete"]
    assert [job.status for job in newest] == ["dead", "failed"]
    job_class, queue, status, enqueued_at, started_at, ended_at = window[1]
    assert (job_class, queue, status) == ("HardJob", "default", "failed")
    assert started_at is not None
    assert enqueued_at is not None
    assert (ended_at - started_at, started_at - enqueued_at) == (
        timedelta(seconds=4),
        timedelta(seconds=3),
    )
    assert ended_at == (CLOCK.now - timedelta(seconds=393)).replace(tzinfo=None)


async def test_aggregate_counts_by_class_and_queue(engine: AsyncEngine) -> None:
    await seed(
        engine,
        life("a1", ago=500, wait=1, run=2, job_class="A"),
        life("a2", ago=400, wait=2, run=6, job_class="A", end=EventName.FAILED),
        life("a3", ago=300, wait=1, run=1, job_class="A", queue="other"),
        life("b1", ago=200, wait=1, run=1, job_class="B", end=EventName.DEAD),
    )
    async with create_sessionmaker(engine)() as session:
        rows = await finished_jobs(session, since=CLOCK.now - HOUR, until=CLOCK.now, limit=10)
    stats = aggregate(rows)
    summary = [
        (s.job_class, s.queue, s.finished, s.succeeded, s.failed, s.dead, s.failure_rate)
        for s in stats
    ]
    assert summary == [
        ("A", "default", 2, 1, 1, 0, 0.5),
        ("A", "other", 1, 1, 0, 0, 0.0),
        ("B", "default", 1, 0, 0, 1, 1.0),
    ]
    assert (sorted(stats[0].run_seconds), sorted(stats[0].wait_seconds)) == ([2.0, 6.0], [1.0, 2.0])


async def test_stuck_and_jid_filters(engine: AsyncEngine) -> None:
    await seed(
        engine,
        life("fast-old", ago=7200, wait=1, job_class="Fast"),
        life("slow-old", ago=7200, wait=1, job_class="Slow"),
        life("slow-older", ago=5 * 3600, wait=1, job_class="Slow"),
        life("fast-new", ago=60, wait=1, job_class="Fast"),
        lost("lost-old", ago=7200, job_class="Fast"),
    )
    rule = StuckRule(CLOCK.now, HOUR, {"Slow": 4 * HOUR})
    async with create_sessionmaker(engine)() as session:
        stuck = await list_jobs(session, JobFilter(stuck=rule), limit=10)
        one = await list_jobs(session, JobFilter(jid="slow-old"), limit=10)
        timeline = await get_timeline(session, "lost-old", limit=2)
    assert [job.jid for job in stuck.items] == ["fast-old", "slow-older"]
    assert [job.jid for job in one.items] == ["slow-old"]
    assert [entry.event for entry in timeline] == [EventName.QUEUED, EventName.STARTED]
    assert rule.cutoff_for("Slow") == CLOCK.now - 4 * HOUR
    assert rule.cutoff_for(None) == rule.latest_cutoff == CLOCK.now - HOUR
