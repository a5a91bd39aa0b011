"""The sampler: its latest snapshot (what the collector exports), history on the leader only,
failures survived."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain import EventName, JobEvent
from app.exporter.collector import SidekiqCollector
from app.exporter.jobs import JobMetrics
from app.exporter.process import SamplerMetrics
from app.sampler.reconcile import ReconcileConfig, Reconciler
from app.sampler.runner import LEADER_KEY, Sampler, SamplerConfig
from app.sidekiq.keys import Keys
from app.store.db import create_sessionmaker
from app.store.ledger_writes import write_batch
from app.store.tables import JobRow, QueueSampleRow, SidekiqSampleRow
from tests.conftest import REDIS_URL
from tests.sidekiq.layouts import V7, process, push

CONFIG = SamplerConfig(
    interval_seconds=10, retention_days=30, retention_chunk_rows=100, timeout_seconds=5
)
RECONCILE = ReconcileConfig(
    stuck_after=timedelta(hours=1),
    stuck_after_by_class={},
    # No grace: these ticks read the real clock, and leadership, not timing, is under test.
    lost_grace=timedelta(0),
    process_stale=timedelta(seconds=60),
    batch=100,
    scan_count=100,
    max_error_chars=1_000,
)


def make_sampler(
    redis: Redis,
    engine: AsyncEngine,
    identity: str,
    registry: CollectorRegistry,
    *,
    reconcile: bool = False,
) -> Sampler:
    """A sampler whose latest snapshot `registry` exports, as the app wires them."""
    sessions = create_sessionmaker(engine)
    reconciler = None
    if reconcile:
        metrics = JobMetrics(registry, max_workers=10, max_queues=10, max_error_classes=10)
        reconciler = Reconciler(
            redis=redis, keys=Keys(), sessions=sessions, metrics=metrics, config=RECONCILE
        )
    sampler = Sampler(
        redis=redis,
        keys=Keys(),
        sessions=sessions,
        metrics=SamplerMetrics(registry),
        config=CONFIG,
        reconciler=reconciler,
        identity=identity,
    )
    registry.register(SidekiqCollector(sampler, max_age_seconds=30))
    return sampler


async def count(engine: AsyncEngine, table: type[SidekiqSampleRow | QueueSampleRow]) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_only_the_leader_writes_history(redis: Redis, engine: AsyncEngine) -> None:
    keys = Keys()
    await push(redis, keys, V7, "default", 5.0, 1.0)
    await push(redis, keys, V7, "mail", 2.0)
    await process(redis, keys, V7, hostname="w1", concurrency=3, queues=["default"])
    first_registry, second_registry = CollectorRegistry(), CollectorRegistry()
    first = make_sampler(redis, engine, "replica-a", first_registry)
    second = make_sampler(redis, engine, "replica-b", second_registry)

    assert await first.tick() is not None
    assert await second.tick() is not None
    assert await first.tick() is not None

    assert await count(engine, SidekiqSampleRow) == 2  # replica-a twice, replica-b never
    assert await count(engine, QueueSampleRow) == 4
    assert first_registry.get_sample_value("supervisor_sampler_leader") == 1
    assert second_registry.get_sample_value("supervisor_sampler_leader") == 0
    # Both replicas serve fresh numbers from their own snapshot.
    assert second.latest is not None
    assert second.latest.enqueued == 3
    assert second_registry.get_sample_value("sidekiq_enqueued_jobs") == 3
    assert first.latest is not None

    await first.start()
    await first.stop()  # releasing the lock lets the other replica lead at once
    assert await redis.get(LEADER_KEY) is None
    assert await second.tick() is not None
    assert second_registry.get_sample_value("supervisor_sampler_leader") == 1


async def test_a_redis_outage_is_counted_and_survived(engine: AsyncEngine) -> None:
    registry = CollectorRegistry()
    dead = Redis.from_url("redis://127.0.0.1:1/0")
    sampler = make_sampler(dead, engine, "lonely", registry)
    assert await sampler.tick() is None
    assert await sampler.tick() is None
    await dead.aclose()
    assert registry.get_sample_value("supervisor_sampler_errors_total", {"stage": "redis"}) == 2
    assert registry.get_sample_value("supervisor_redis_up") == 0
    assert sampler.latest is None

    alive = Redis.from_url(REDIS_URL)
    sampler = make_sampler(alive, engine, "lonely", CollectorRegistry())
    assert await sampler.tick() is not None
    assert sampler.latest is not None
    await alive.aclose()


async def test_retention_deletes_old_rows_in_chunks(redis: Redis, engine: AsyncEngine) -> None:
    old = datetime.now(UTC) - timedelta(days=45)
    fresh = datetime.now(UTC)
    async with engine.connect() as conn:
        await write_batch(
            conn,
            [
                JobEvent(jid=f"old{n}", event=EventName.QUEUED, at=old, received_at=old)
                for n in range(150)
            ]
            + [JobEvent(jid="new", event=EventName.QUEUED, at=fresh, received_at=fresh)],
        )
    sampler = make_sampler(redis, engine, "janitor", CollectorRegistry())
    await sampler.tick()
    async with engine.connect() as conn:
        left = (await conn.execute(select(func.count()).select_from(JobRow))).scalar_one()
    assert left == 51  # one chunk of 100 gone, the fresh row kept
    await sampler.tick()
    async with engine.connect() as conn:
        jids = (await conn.execute(select(JobRow.jid))).scalars().all()
    assert jids == ["new"]


async def test_only_the_leader_reconciles_and_exports_the_lost_gauge(
    redis: Redis, engine: AsyncEngine
) -> None:
    """A started job no process runs (no process at all here) is found lost by the leader;
    the other replica neither decides nor exports, and stops exporting once it loses the lead."""
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    async with engine.connect() as conn:
        await write_batch(
            conn,
            [
                JobEvent("vanished", name, long_ago, long_ago, job_class="HardJob", queue="q")
                for name in (EventName.QUEUED, EventName.STARTED)
            ],
        )
    registries = CollectorRegistry(), CollectorRegistry()
    samplers = [
        make_sampler(redis, engine, identity, registry, reconcile=True)
        for identity, registry in zip(("replica-a", "replica-b"), registries, strict=True)
    ]
    lost = ("sidekiq_jobs_lost", {"queue": "q", "worker": "HardJob"})
    for sampler in samplers:
        assert await sampler.tick() is not None
    async with engine.connect() as conn:
        status = (await conn.execute(select(JobRow.status))).scalar_one()
    assert status == "lost"
    assert registries[0].get_sample_value(*lost) == 1
    assert registries[1].get_sample_value(*lost) is None

    await samplers[0].start()
    await samplers[0].stop()  # hands the lead over
    assert await samplers[1].tick() is not None
    await samplers[0].tick()  # no longer the leader
    assert registries[1].get_sample_value(*lost) == 1
    assert registries[0].get_sample_value(*lost) is None
