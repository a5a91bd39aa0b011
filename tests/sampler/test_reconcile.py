"""Stuck and lost jobs: the reconciler against the real ledger (MariaDB and SQLite) and real
Redis sets, with snapshots built as the reader would return them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain import (
    BusyJob,
    EventName,
    JobEvent,
    JobFilter,
    JobStatus,
    ProcessInfo,
    QueueStats,
    Snapshot,
    StuckRule,
)
from app.exporter.jobs import JobMetrics
from app.manager import JobManager
from app.redact import Redactor
from app.sampler.reconcile import ReconcileConfig, Reconciler, Verdicts
from app.sidekiq.keys import Keys
from app.store.db import create_sessionmaker
from app.store.ledger_writes import write_batch

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)
CONFIG = ReconcileConfig(
    stuck_after=timedelta(hours=1),
    stuck_after_by_class={"ReportJob": timedelta(hours=4)},
    lost_grace=GRACE,
    process_stale=timedelta(seconds=60),
    batch=100,
    scan_count=100,
    max_error_chars=10_000,
)


@dataclass
class World:
    redis: Redis
    engine: AsyncEngine
    registry: CollectorRegistry
    reconciler: Reconciler
    manager: JobManager

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def build(redis: Redis, engine: AsyncEngine, config: ReconcileConfig = CONFIG) -> World:
    registry = CollectorRegistry()
    metrics = JobMetrics(registry, max_workers=50, max_queues=50, max_error_classes=50)
    sessions = create_sessionmaker(engine)
    reconciler = Reconciler(
        redis=redis, keys=Keys(), sessions=sessions, metrics=metrics, config=config
    )
    return World(redis, engine, registry, reconciler, JobManager(sessions))


@pytest.fixture
def world(redis: Redis, engine: AsyncEngine) -> World:
    return build(redis, engine)


def proc(identity: str, *, beat: datetime = NOW) -> ProcessInfo:
    return ProcessInfo(
        identity=identity,
        hostname=identity.split(":")[0],
        pid=1,
        tag=None,
        queues=("default",),
        labels=(),
        concurrency=5,
        busy=1,
        quiet=False,
        rss_kb=None,
        beat=beat,
        started_at=NOW - timedelta(hours=1),
        version="6.4.1",
    )


def snapshot(
    *,
    busy: dict[str, str] | None = None,
    processes: tuple[ProcessInfo, ...] = (),
    queues: tuple[QueueStats, ...] = (QueueStats("default", 0, 0.0),),
    taken_at: datetime = NOW,
) -> Snapshot:
    """`busy` maps jids to the identity of the process running them."""
    jobs = tuple(
        BusyJob(identity, "tid", "default", jid, "HardJob", NOW, "{}")
        for jid, identity in (busy or {}).items()
    )
    return Snapshot(
        taken_at=taken_at,
        processed=0,
        failed=0,
        scheduled=0,
        retries=0,
        dead=0,
        processes_size=len(processes),
        queues=queues,
        processes=processes,
        busy_jobs=jobs,
    )


async def past_grace(world: World, shot: Snapshot | None = None) -> Verdicts | None:
    """Two ticks a grace period apart on the same Sidekiq state: the first sees who is missing,
    the second may call them lost."""
    shot = shot or snapshot()
    await world.reconciler.tick(shot)
    return await world.reconciler.tick(replace(shot, taken_at=shot.taken_at + GRACE))


async def record(world: World, *events: JobEvent) -> None:
    async with world.engine.connect() as conn:
        await write_batch(conn, list(events))


def event(
    jid: str, name: EventName, ago: timedelta, job_class: str = "HardJob", queue: str = "default"
) -> JobEvent:
    at = NOW - ago
    return JobEvent(jid, name, at, at, job_class=job_class, queue=queue, arguments="[1]")


async def started(world: World, jid: str, ago: timedelta, job_class: str = "HardJob") -> None:
    await record(
        world,
        event(jid, EventName.QUEUED, ago + timedelta(seconds=1), job_class),
        event(jid, EventName.STARTED, ago, job_class),
    )


async def status(world: World, jid: str) -> JobStatus:
    job = await world.manager.job(jid)
    assert job is not None
    return job.status


def entry(jid: str, *, retry_count: int = 0, retried_at: datetime | None = None) -> bytes:
    """A retry/dead entry as Sidekiq writes it: the first failure in failed_at, later ones in
    retried_at."""
    job = {
        "class": "HardJob",
        "args": [1],
        "queue": "default",
        "jid": jid,
        "retry_count": retry_count,
        "failed_at": (NOW - timedelta(seconds=30 if retried_at is None else 3_600)).timestamp(),
        "error_class": "Boom",
        "error_message": f"boom in {jid}",
    }
    if retried_at is not None:
        job["retried_at"] = retried_at.timestamp()
    return orjson.dumps(job)


async def test_a_started_job_no_process_runs_is_lost(world: World) -> None:
    await started(world, "gone", timedelta(minutes=5))
    verdicts = await past_grace(world)
    assert verdicts is not None
    assert verdicts.lost == ["gone"]
    assert await status(world, "gone") is JobStatus.LOST
    assert world.sample("sidekiq_jobs_lost", queue="default", worker="HardJob") == 1
    assert world.sample("sidekiq_jobs_lost_detected_total", queue="default", worker="HardJob") == 1
    timeline = await world.manager.timeline("gone")
    assert [e.event for e in timeline][-1] is EventName.LOST
    lost = await world.manager.lost_jobs()
    assert [job.jid for job in lost.items] == ["gone"]


async def test_running_young_and_live_jobs_are_left_alone(world: World) -> None:
    await started(world, "running", timedelta(minutes=5))
    await started(world, "young", timedelta(seconds=10))
    live = snapshot(busy={"running": "w1:1:aa"}, processes=(proc("w1:1:aa"),))
    assert await world.reconciler.tick(live) is None
    assert await status(world, "running") is JobStatus.STARTED
    assert await status(world, "young") is JobStatus.STARTED


async def test_a_job_on_a_process_whose_heartbeat_stopped_is_lost(world: World) -> None:
    """kill -9 leaves the process and its busy-work hash in Redis until they expire."""
    await started(world, "killed", timedelta(minutes=5))
    dead_process = proc("w1:1:aa", beat=NOW - timedelta(seconds=61))
    verdicts = await past_grace(
        world, snapshot(busy={"killed": "w1:1:aa"}, processes=(dead_process,))
    )
    assert verdicts is not None
    assert verdicts.lost == ["killed"]


async def test_a_started_job_found_in_retry_failed_with_sidekiqs_error(world: World) -> None:
    await started(world, "raised", timedelta(minutes=5))
    failure = entry("raised", retry_count=1, retried_at=NOW - timedelta(seconds=30))
    await world.redis.zadd("retry", {failure: NOW.timestamp() + 600})
    verdicts = await world.reconciler.tick(snapshot())
    assert verdicts is not None
    assert verdicts.failed == ["raised"]
    assert verdicts.lost == []
    job = await world.manager.job("raised")
    assert job is not None
    assert job.status is JobStatus.FAILED
    assert (job.error_class, job.error_message) == ("Boom", "boom in raised")
    assert job.attempts == 2  # retry_count 1: this was the second run
    assert job.failed_at == NOW - timedelta(seconds=30)
    failures = world.sample(
        "sidekiq_jobs_failed_total", queue="default", worker="HardJob", error_class="Boom"
    )
    assert failures == 1
    runs = world.sample("sidekiq_job_run_seconds_sum", queue="default", worker="HardJob")
    assert runs == pytest.approx(270.0)  # failed 30 s ago, started 5 min ago


async def test_a_started_job_found_in_dead_is_dead(world: World) -> None:
    await started(world, "died", timedelta(minutes=5))
    await world.redis.zadd("dead", {entry("died", retry_count=3): NOW.timestamp() - 30})
    verdicts = await world.reconciler.tick(snapshot())
    assert verdicts is not None
    assert verdicts.dead == ["died"]
    job = await world.manager.job("died")
    assert job is not None
    assert job.status is JobStatus.DEAD
    assert job.error_class == "Boom"
    assert world.sample("sidekiq_jobs_dead_total", queue="default", worker="HardJob") == 1


async def test_queued_jobs_older_than_their_queue_are_scheduled_or_lost(world: World) -> None:
    for jid, ago in (("later", 600), ("vanished", 600), ("waiting", 120), ("nowhere", 600)):
        queue = "elsewhere" if jid == "nowhere" else "default"
        await record(world, event(jid, EventName.QUEUED, timedelta(seconds=ago), queue=queue))
    run_at = NOW + timedelta(hours=1)
    await world.redis.zadd("schedule", {entry("later"): run_at.timestamp()})
    # The queue's oldest job is 200 s old: "waiting" (120 s) may still be in it.
    queues = (QueueStats("default", 3, 200.0),)
    first = await world.reconciler.tick(snapshot(queues=queues))
    assert first is not None
    assert first.scheduled == ["later"]
    assert first.lost == []  # seen missing once: not yet
    verdicts = await world.reconciler.tick(snapshot(queues=queues, taken_at=NOW + GRACE))
    assert verdicts is not None
    assert sorted(verdicts.lost) == ["nowhere", "vanished"]
    later = await world.manager.job("later")
    assert later is not None
    assert later.status is JobStatus.SCHEDULED
    assert later.scheduled_for == run_at
    assert await status(world, "waiting") is JobStatus.QUEUED


async def test_the_round_reads_sets_a_page_per_tick_before_calling_anything_lost(
    redis: Redis, engine: AsyncEngine
) -> None:
    world = build(redis, engine, replace(CONFIG, scan_count=5))
    await started(world, "raised", timedelta(minutes=5))
    await started(world, "gone", timedelta(minutes=5))
    others = {entry(f"other-{n}"): NOW.timestamp() + n for n in range(300)}
    await redis.zadd("retry", {**others, entry("raised"): NOW.timestamp() + 1_000})
    ticks = 0
    verdicts = None
    while verdicts is None:
        # A grace period a tick: only the pass over the sets holds the verdict back.
        verdicts = await world.reconciler.tick(snapshot(taken_at=NOW + ticks * GRACE))
        ticks += 1
        assert ticks < 1_000, "the round never closed"
        if verdicts is None:
            assert await status(world, "gone") is JobStatus.STARTED  # not before the pass ends
    assert ticks > 1  # 301 entries at about 5 a step: the pass took several ticks
    assert verdicts.failed == ["raised"]
    assert verdicts.lost == ["gone"]


async def test_the_pass_over_started_runs_moves_past_long_running_ones(
    redis: Redis, engine: AsyncEngine
) -> None:
    world = build(redis, engine, replace(CONFIG, batch=2))
    running = {f"long-{n}": "w1:1:aa" for n in range(4)}
    for n, jid in enumerate(running):
        await started(world, jid, timedelta(hours=2, seconds=-n))
    await started(world, "gone", timedelta(hours=1))  # the newest start: read last
    lost: list[str] = []
    for n in range(4):
        at = NOW + n * GRACE
        live = snapshot(busy=running, processes=(proc("w1:1:aa", beat=at),), taken_at=at)
        verdicts = await world.reconciler.tick(live)
        lost += verdicts.lost if verdicts else []
    assert lost == ["gone"]
    for jid in running:
        assert await status(world, jid) is JobStatus.STARTED


async def test_later_news_wins_over_lost_and_lost_jobs_can_be_requeued(world: World) -> None:
    await started(world, "late", timedelta(minutes=5))
    await past_grace(world)
    assert await status(world, "late") is JobStatus.LOST
    await record(world, event("late", EventName.COMPLETE, timedelta(seconds=1)))
    assert await status(world, "late") is JobStatus.COMPLETE


async def test_stuck_counts_follow_each_class_threshold(world: World) -> None:
    await started(world, "slow", timedelta(hours=2))
    await started(world, "report", timedelta(hours=2), job_class="ReportJob")
    await started(world, "old-report", timedelta(hours=5), job_class="ReportJob")
    running = {"slow": "w1:1:aa", "report": "w1:1:aa", "old-report": "w1:1:aa"}
    await world.reconciler.tick(snapshot(busy=running, processes=(proc("w1:1:aa"),)))
    assert world.sample("sidekiq_jobs_stuck", queue="default", worker="HardJob") == 1
    assert world.sample("sidekiq_jobs_stuck", queue="default", worker="ReportJob") == 1
    world.reconciler.stand_down()
    assert (
        world.registry.get_sample_value(
            "sidekiq_jobs_stuck", {"queue": "default", "worker": "HardJob"}
        )
        is None
    )


async def test_news_during_a_round_keeps_the_job_out_of_its_verdicts(
    redis: Redis, engine: AsyncEngine
) -> None:
    world = build(redis, engine, replace(CONFIG, scan_count=5))
    await started(world, "finished", timedelta(minutes=5))
    await redis.zadd("retry", {entry(f"other-{n}"): NOW.timestamp() + n for n in range(100)})
    assert await world.reconciler.tick(snapshot()) is None  # the round is under way
    await record(world, event("finished", EventName.COMPLETE, timedelta(seconds=1)))
    verdicts = None
    while verdicts is None:
        verdicts = await world.reconciler.tick(snapshot())
    assert verdicts == Verdicts()
    assert await status(world, "finished") is JobStatus.COMPLETE
    assert world.sample("sidekiq_jobs_lost_detected_total", queue="default", worker="HardJob") == 0


async def test_started_runs_are_decided_without_waiting_for_the_schedule_pass(
    redis: Redis, engine: AsyncEngine
) -> None:
    world = build(redis, engine, replace(CONFIG, scan_count=5))
    await started(world, "gone", timedelta(minutes=5))
    await record(world, event("vanished", EventName.QUEUED, timedelta(minutes=10)))
    await redis.zadd("schedule", {entry(f"later-{n}"): NOW.timestamp() + n for n in range(200)})
    await world.reconciler.tick(snapshot())  # both seen missing; the schedule pass begins
    first = await world.reconciler.tick(snapshot(taken_at=NOW + GRACE))
    assert first is not None
    assert first.lost == ["gone"]  # retry and dead are empty: passed over in one step
    assert await status(world, "vanished") is JobStatus.QUEUED
    later = None
    ticks = 2
    while later is None:
        later = await world.reconciler.tick(snapshot(taken_at=NOW + ticks * GRACE))
        ticks += 1
    assert later.lost == ["vanished"]


async def test_the_stuck_gauge_agrees_with_the_stuck_filter_every_tick(world: World) -> None:
    """Recounted each tick (10 s apart here), as the GUI's stuck filter reads the ledger."""
    await started(world, "slow", timedelta(hours=2))
    await started(world, "fresh", timedelta(minutes=59, seconds=55))  # stuck 5 s from now
    busy = {"slow": "w1:1:aa", "fresh": "w1:1:aa"}

    async def tick_and_list(at: datetime) -> set[str]:
        beating = (proc("w1:1:aa", beat=at),)
        await world.reconciler.tick(snapshot(busy=busy, processes=beating, taken_at=at))
        rule = StuckRule(at, CONFIG.stuck_after, CONFIG.stuck_after_by_class)
        page = await world.manager.jobs(JobFilter(stuck=rule))
        return {job.jid for job in page.items}

    assert await tick_and_list(NOW) == {"slow"}
    assert world.sample("sidekiq_jobs_stuck", queue="default", worker="HardJob") == 1
    assert await tick_and_list(NOW + timedelta(seconds=10)) == {"slow", "fresh"}
    assert world.sample("sidekiq_jobs_stuck", queue="default", worker="HardJob") == 2
    await record(world, event("slow", EventName.COMPLETE, timedelta(seconds=-15)))
    await record(world, event("fresh", EventName.COMPLETE, timedelta(seconds=-15)))
    assert await tick_and_list(NOW + timedelta(seconds=20)) == set()
    assert world.sample("sidekiq_jobs_stuck", queue="default", worker="HardJob") == 0


async def test_a_run_missing_for_less_than_the_grace_is_not_lost(world: World) -> None:
    await started(world, "finishing", timedelta(minutes=5))
    for at in (NOW, NOW + GRACE - timedelta(seconds=1)):
        verdicts = await world.reconciler.tick(snapshot(taken_at=at))
        assert verdicts is not None
        assert verdicts.lost == []
        assert await status(world, "finishing") is JobStatus.STARTED
    assert world.sample("sidekiq_jobs_lost_detected_total", queue="default", worker="HardJob") == 0
    verdicts = await world.reconciler.tick(snapshot(taken_at=NOW + GRACE))
    assert verdicts is not None
    assert verdicts.lost == ["finishing"]
    assert await status(world, "finishing") is JobStatus.LOST


async def test_a_complete_arriving_within_the_grace_leaves_no_lost_behind(world: World) -> None:
    """The heartbeat stopped listing the finished job; the middleware's background sender
    posts its `complete` a little later."""
    await started(world, "finished", timedelta(minutes=5))
    await world.reconciler.tick(snapshot())
    await record(world, event("finished", EventName.COMPLETE, timedelta(seconds=1)))
    assert await world.reconciler.tick(snapshot(taken_at=NOW + GRACE)) == Verdicts()
    assert await status(world, "finished") is JobStatus.COMPLETE
    timeline = await world.manager.timeline("finished")
    assert EventName.LOST not in [entry.event for entry in timeline]
    assert world.sample("sidekiq_jobs_lost_detected_total", queue="default", worker="HardJob") == 0
    assert world.sample("sidekiq_jobs_lost", queue="default", worker="HardJob") == 0


async def test_a_run_that_runs_again_within_the_grace_waits_it_anew(world: World) -> None:
    """Missing means missing from every snapshot since the first: a process whose heartbeat
    came back was running it all along."""
    await started(world, "paused", timedelta(minutes=5))
    await world.reconciler.tick(snapshot())
    seen = NOW + timedelta(seconds=30)
    back = snapshot(busy={"paused": "w1:1:aa"}, processes=(proc("w1:1:aa", beat=seen),))
    await world.reconciler.tick(replace(back, taken_at=seen))
    verdicts = await world.reconciler.tick(snapshot(taken_at=NOW + GRACE))
    assert verdicts is not None
    assert verdicts.lost == []  # missing again only since this snapshot
    verdicts = await world.reconciler.tick(snapshot(taken_at=NOW + 2 * GRACE))
    assert verdicts is not None
    assert verdicts.lost == ["paused"]


async def test_a_replica_that_takes_the_lead_waits_the_grace_itself(world: World) -> None:
    await started(world, "gone", timedelta(minutes=5))
    await world.reconciler.tick(snapshot())
    world.reconciler.stand_down()  # another replica led in between: it saw nothing for us
    verdicts = await world.reconciler.tick(snapshot(taken_at=NOW + GRACE))
    assert verdicts is not None
    assert verdicts.lost == []
    verdicts = await world.reconciler.tick(snapshot(taken_at=NOW + 2 * GRACE))
    assert verdicts is not None
    assert verdicts.lost == ["gone"]


async def test_missing_runs_past_a_batch_wait_a_batch_at_a_time(
    redis: Redis, engine: AsyncEngine
) -> None:
    """At most `batch` runs wait at once, and each waits out its grace before the next batch
    is read: a backlog is decided a batch per grace period, none of it left behind."""
    world = build(redis, engine, replace(CONFIG, batch=2))
    for n in range(5):
        await started(world, f"gone-{n}", timedelta(minutes=10, seconds=-n))  # gone-0 oldest
    decided_at: dict[str, int] = {}
    for n in range(21):  # a tick every 10 s
        verdicts = await world.reconciler.tick(snapshot(taken_at=NOW + n * GRACE / 6))
        decided_at |= dict.fromkeys(verdicts.lost if verdicts else [], n)
    # Read at ticks 0, 7 and 14; lost six ticks (the grace) later.
    expected = {"gone-0": 6, "gone-1": 6, "gone-2": 13, "gone-3": 13, "gone-4": 20}
    assert decided_at == expected


async def test_the_lost_gauge_drops_on_the_tick_after_a_lost_job_completes(world: World) -> None:
    await started(world, "late", timedelta(minutes=5))
    await past_grace(world)
    assert world.sample("sidekiq_jobs_lost", queue="default", worker="HardJob") == 1
    await record(world, event("late", EventName.COMPLETE, timedelta(seconds=-GRACE.seconds)))
    await world.reconciler.tick(snapshot(taken_at=NOW + GRACE + timedelta(seconds=10)))
    assert world.sample("sidekiq_jobs_lost", queue="default", worker="HardJob") == 0
    assert (await world.manager.lost_jobs()).items == []


async def test_sidekiqs_error_message_is_stored_redacted(redis: Redis, engine: AsyncEngine) -> None:
    world = build(redis, engine, replace(CONFIG, redactor=Redactor(patterns=[r"token=\w+"])))
    await started(world, "leaky", timedelta(minutes=5))
    failure = orjson.loads(entry("leaky")) | {"error_message": "401 for token=abc123 at /api"}
    await world.redis.zadd("retry", {orjson.dumps(failure): NOW.timestamp() + 600})
    verdicts = await world.reconciler.tick(snapshot())
    assert verdicts is not None
    assert verdicts.failed == ["leaky"]
    job = await world.manager.job("leaky")
    assert job is not None
    assert job.error_message == "401 for [REDACTED] at /api"
    timeline = await world.manager.timeline("leaky")
    assert [e.error_message for e in timeline if e.error_message] == ["401 for [REDACTED] at /api"]
