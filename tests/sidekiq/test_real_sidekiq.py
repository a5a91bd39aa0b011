"""The snapshot against real Sidekiq 6.4.1: it equals what Sidekiq's own Ruby API reports.

Sidekiq writes its counters and busy counts only at its 5-second heartbeat, so each comparison
is made in a stable state: jobs are held busy by HoldJob and the test waits for the heartbeat
that shows them, then reads the snapshot and the Ruby API and checks nothing beat in between.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from app.domain import Snapshot
from app.exporter.collector import SidekiqCollector
from app.sidekiq.keys import Keys
from app.sidekiq.reader import read_snapshot
from tests.sidekiq.layouts import Held
from tests.sidekiq.real_sidekiq import RealSidekiq, RubyView, job, start_sidekiq

pytestmark = pytest.mark.slow

SERVED = ["critical", "default", "low"]  # the -q order, de-duplicated, as info.queues holds it
HELD = {"critical": 2, "default": 2, "low": 1}  # five HoldJobs: every thread busy
READ_ATTEMPTS = 3
# The reader rounds times through datetime (microseconds).
TIME_TOLERANCE_SECONDS = 1e-5
LATENCY_TOLERANCE_SECONDS = 2e-3


@pytest.fixture
async def sidekiq(tmp_path: Path) -> AsyncIterator[RealSidekiq]:
    async with start_sidekiq(tmp_path) as running:
        yield running


async def read_both(sidekiq: RealSidekiq) -> tuple[Snapshot, RubyView]:
    """The snapshot and the Ruby API's view of the same moment: read again when a heartbeat
    (which rewrites beat and rss) landed between the two reads."""
    for _ in range(READ_ATTEMPTS):
        before = await sidekiq.heartbeat()
        snapshot = await read_snapshot(sidekiq.redis, Keys())
        view = await sidekiq.inspect()
        if (await sidekiq.heartbeat()).beat == before.beat:
            return snapshot, view
    pytest.fail(f"a heartbeat landed during each of {READ_ATTEMPTS} reads")


def assert_same_numbers(snapshot: Snapshot, view: RubyView) -> None:
    """Every number the snapshot shares with Sidekiq::Stats, Queue, ProcessSet and Workers."""
    stats = view.stats
    assert (snapshot.processed, snapshot.failed) == (stats.processed, stats.failed)
    assert (snapshot.scheduled, snapshot.retries, snapshot.dead) == (
        stats.scheduled_size,
        stats.retry_size,
        stats.dead_size,
    )
    assert snapshot.processes_size == stats.processes_size
    assert snapshot.enqueued == stats.enqueued
    assert snapshot.busy == stats.workers_size

    assert [(q.name, q.size) for q in snapshot.queues] == [(q.name, q.size) for q in view.queues]
    ours = {q.name: q.latency_seconds for q in snapshot.queues}
    for queue in view.queues:
        assert_same_latency(snapshot, ours[queue.name], queue.latency, view)
    default_latency = ours.get("default", 0.0)
    assert_same_latency(snapshot, default_latency, stats.default_queue_latency, view)

    assert len(snapshot.processes) == len(view.processes)
    for process, theirs in zip(snapshot.processes, view.processes, strict=True):
        assert (process.identity, process.hostname, process.pid, process.tag) == (
            theirs.identity,
            theirs.hostname,
            theirs.pid,
            theirs.tag,
        )
        assert (process.concurrency, process.busy, process.queues, process.labels) == (
            theirs.concurrency,
            theirs.busy,
            theirs.queues,
            theirs.labels,
        )
        assert process.quiet is (theirs.quiet == "true")  # Process#stopping?
        assert process.rss_kb == theirs.rss
        assert process.beat is not None
        assert process.beat.timestamp() == pytest.approx(theirs.beat, abs=TIME_TOLERANCE_SECONDS)
        assert process.started_at is not None
        assert process.started_at.timestamp() == pytest.approx(
            theirs.started_at, abs=TIME_TOLERANCE_SECONDS
        )

    running = [
        (j.process, j.tid, j.jid, j.job_class, j.queue, int(j.run_at.timestamp()))
        for j in snapshot.busy_jobs
    ]
    theirs_running = [
        (w.process, w.tid, w.jid, w.job_class, w.queue, w.run_at) for w in view.workers
    ]
    assert sorted(running) == sorted(theirs_running)


def assert_same_latency(snapshot: Snapshot, ours: float, theirs: float, view: RubyView) -> None:
    """Ruby computed its latency at some moment in [before, after], we at taken_at: both must
    point at the same enqueue time."""
    if theirs == 0:
        assert ours == 0.0
        return
    taken_at = snapshot.taken_at.timestamp()
    assert view.before - theirs - LATENCY_TOLERANCE_SECONDS <= taken_at - ours
    assert taken_at - ours <= view.after - theirs + LATENCY_TOLERANCE_SECONDS


def render(snapshot: Snapshot) -> CollectorRegistry:
    collector = SidekiqCollector(
        Held(snapshot), max_age_seconds=60, clock=snapshot.taken_at.timestamp
    )
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


async def run_finished_work(sidekiq: RealSidekiq) -> None:
    """Jobs run from all three queues (6 processed); one failure waits to retry (an hour away),
    one went straight to the dead set (2 failed); one job is scheduled an hour ahead."""
    quick = await sidekiq.push(*(job("QuickJob", q, n) for n, q in enumerate(SERVED + SERVED)))
    await sidekiq.push(
        job("ExplodeJob", "default", "retry me"),
        job("ExplodeJob", "low", "dead now", retry=0),
        job("QuickJob", "default", at=time.time() + 3600),
    )

    async def finished() -> bool:
        sizes = await sidekiq.redis.zcard("retry"), await sidekiq.redis.zcard("dead")
        return (await sidekiq.done()).issuperset(quick) and sizes == (1, 1)

    await sidekiq.wait_until(finished, "the quick and exploding jobs to run")


def assert_same_metrics(snapshot: Snapshot, view: RubyView) -> None:
    """The exporter-compatible metrics rendered from the snapshot carry the Ruby API's numbers."""
    value = render(snapshot).get_sample_value
    stats = view.stats
    assert value("sidekiq_processed_jobs_total") == stats.processed
    assert value("sidekiq_failed_jobs_total") == stats.failed
    assert value("sidekiq_workers") == sum(p.concurrency for p in view.processes)
    assert value("sidekiq_processes") == stats.processes_size
    assert value("sidekiq_busy_workers") == stats.workers_size
    assert value("sidekiq_enqueued_jobs") == stats.enqueued
    assert value("sidekiq_scheduled_jobs") == stats.scheduled_size
    assert value("sidekiq_retry_jobs") == stats.retry_size
    assert value("sidekiq_dead_jobs") == stats.dead_size
    for process in view.processes:
        host = {"host": process.hostname}
        assert value("sidekiq_host_processes", {**host, "quiet": process.quiet}) == 1
        assert value("sidekiq_host_processes_memory_usage_bytes", host) == process.rss * 1024
    ours = {q.name: q.latency_seconds for q in snapshot.queues}
    for queue in view.queues:
        labels = {"name": queue.name}
        assert value("sidekiq_queue_enqueued_jobs", labels) == queue.size
        assert value("sidekiq_queue_latency_seconds", labels) == round(ours[queue.name], 3)
        serving = [p for p in view.processes if queue.name in p.queues]
        assert value("sidekiq_queue_processes", labels) == (len(serving) or None)
        assert value("sidekiq_queue_workers", labels) == (
            sum(p.concurrency for p in serving) if serving else None
        )
        assert value("sidekiq_queue_busy_workers", labels) == (
            sum(p.busy for p in serving) if serving else None
        )
    taken_at = snapshot.taken_at.timestamp()
    for name in {w.queue for w in view.workers}:
        oldest = min(w.run_at for w in view.workers if w.queue == name)
        longest = value("sidekiq_queue_max_processing_time_seconds", {"name": name})
        assert longest == int(taken_at - oldest)


async def test_snapshot_equals_sidekiqs_api_while_jobs_are_held_busy(
    sidekiq: RealSidekiq,
) -> None:
    await run_finished_work(sidekiq)
    # All five threads held, so what is pushed next stays enqueued.
    held = await sidekiq.hold(**HELD)
    backlog = [job("QuickJob", "critical", n) for n in range(2)]
    backlog += [job("QuickJob", "default", n) for n in range(3)]
    backlog += [job("QuickJob", "mailers", n) for n in range(2)]  # a queue nobody serves
    await sidekiq.push(*backlog)
    await sidekiq.wait_for_heartbeat(
        lambda beat: (beat.busy, beat.working, beat.processed, beat.failed) == (5, 5, 8, 2),
        "the heartbeat that shows 5 busy and 8 processed, 2 failed",
    )

    snapshot, view = await read_both(sidekiq)

    assert_same_numbers(snapshot, view)
    assert_same_metrics(snapshot, view)
    # ...and those numbers are the ones this test set up.
    assert (view.stats.processed, view.stats.failed, view.stats.enqueued) == (8, 2, 7)
    assert (view.stats.retry_size, view.stats.dead_size, view.stats.scheduled_size) == (1, 1, 1)
    sizes = [(q.name, q.size) for q in snapshot.queues]
    assert sizes == [("critical", 2), ("default", 3), ("low", 0), ("mailers", 2)]
    assert all(q.latency_seconds > 0 for q in snapshot.queues if q.size)
    [process] = snapshot.processes
    assert (process.identity, process.concurrency, process.busy) == (sidekiq.identity, 5, 5)
    assert (process.queues, process.quiet, process.tag) == (tuple(SERVED), False, "supervisor-test")
    pushed_to = [queue for queue, count in HELD.items() for _ in range(count)]
    assert {j.jid: j.queue for j in snapshot.busy_jobs} == dict(zip(held, pushed_to, strict=True))
    assert {j.job_class for j in snapshot.busy_jobs} == {"HoldJob"}
    assert len(view.workers) == 5

    await sidekiq.release(*held)


async def test_a_quiet_process_matches_sidekiqs_api(sidekiq: RealSidekiq) -> None:
    """TSTP: the beat says quiet ("true", from 6.4.1's boolean), the held job finishes, and
    jobs pushed afterwards stay enqueued; the snapshot still equals the Ruby API."""
    [held] = await sidekiq.hold(default=1)
    sidekiq.quiet()
    await sidekiq.wait_for_heartbeat(lambda beat: beat.quiet == "true", "a quiet heartbeat")
    waiting = await sidekiq.push(job("QuickJob", "default", 1), job("QuickJob", "low", 2))
    await sidekiq.release(held)
    await sidekiq.wait_for_heartbeat(
        lambda beat: (beat.busy, beat.working, beat.processed) == (0, 0, 1),
        "the heartbeat after the held job finished",
    )

    snapshot, view = await read_both(sidekiq)

    assert_same_numbers(snapshot, view)
    assert_same_metrics(snapshot, view)
    [process] = snapshot.processes
    assert (process.quiet, process.busy, snapshot.busy_jobs) == (True, 0, ())
    assert [p.quiet for p in view.processes] == ["true"]
    assert [(q.name, q.size) for q in snapshot.queues] == [("default", 1), ("low", 1)]
    assert not (await sidekiq.done()) & set(waiting)
