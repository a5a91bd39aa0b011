"""The exporter-compatible metrics, rendered from a snapshot of a real Redis layout."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.exporter.collector import SidekiqCollector
from app.sidekiq.keys import Keys
from app.sidekiq.reader import read_snapshot
from tests.sidekiq.layouts import NOW, V7, Held, process, push

STANDARD = {
    "sidekiq_processed_jobs",
    "sidekiq_failed_jobs",
    "sidekiq_workers",
    "sidekiq_processes",
    "sidekiq_busy_workers",
    "sidekiq_enqueued_jobs",
    "sidekiq_scheduled_jobs",
    "sidekiq_retry_jobs",
    "sidekiq_dead_jobs",
    "sidekiq_host_processes",
    "sidekiq_host_processes_memory_usage_bytes",
    "sidekiq_queue_latency_seconds",
    "sidekiq_queue_enqueued_jobs",
    "sidekiq_queue_max_processing_time_seconds",
    "sidekiq_queue_workers",
    "sidekiq_queue_processes",
    "sidekiq_queue_busy_workers",
}


async def test_every_standard_metric_with_the_exporters_labels(redis: Redis) -> None:
    keys = Keys()
    await redis.set(keys.processed, 10)
    await push(redis, keys, V7, "default", 4.0, 1.0)
    await push(redis, keys, V7, "low", 2.0)
    await process(
        redis, keys, V7, hostname="web-1", concurrency=10, queues=["default", "low"],
        busy=[("j" * 24, "default", NOW - 30), ("k" * 24, "default", NOW - 5)], rss=2048,
    )  # fmt: skip
    await process(redis, keys, V7, hostname="web-1", concurrency=5, queues=["low"], quiet=True)
    snapshot = await read_snapshot(redis, keys, clock=lambda: NOW)
    collector = SidekiqCollector(Held(snapshot), max_age_seconds=30, clock=lambda: NOW + 1)
    registry = CollectorRegistry()
    registry.register(collector)

    text = generate_latest(registry).decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert families >= STANDARD
    value = registry.get_sample_value
    assert value("sidekiq_processed_jobs_total") == 10
    assert value("sidekiq_workers") == 15
    assert value("sidekiq_busy_workers") == 2
    assert value("sidekiq_enqueued_jobs") == 3
    assert value("sidekiq_host_processes", {"host": "web-1", "quiet": "false"}) == 1
    assert value("sidekiq_host_processes", {"host": "web-1", "quiet": "true"}) == 1
    assert (
        value("sidekiq_host_processes_memory_usage_bytes", {"host": "web-1"})
        == (2048 + 123_456) * 1024
    )
    assert value("sidekiq_queue_latency_seconds", {"name": "default"}) == 4.0
    assert value("sidekiq_queue_enqueued_jobs", {"name": "low"}) == 1
    assert value("sidekiq_queue_max_processing_time_seconds", {"name": "default"}) == 30
    assert value("sidekiq_queue_max_processing_time_seconds", {"name": "low"}) is None
    assert value("sidekiq_queue_workers", {"name": "low"}) == 15
    assert value("sidekiq_queue_processes", {"name": "default"}) == 1
    assert value("sidekiq_queue_busy_workers", {"name": "low"}) == 2
    assert value("supervisor_sidekiq_snapshot_age_seconds") == 1


async def test_vanished_queues_disappear_and_stale_snapshots_are_hidden(redis: Redis) -> None:
    keys = Keys()
    await push(redis, keys, V7, "doomed", 1.0)
    clock = [NOW]
    sampler = Held()
    collector = SidekiqCollector(sampler, max_age_seconds=30, clock=lambda: clock[0])
    registry = CollectorRegistry()
    registry.register(collector)
    sampler.latest = await read_snapshot(redis, keys, clock=lambda: NOW)
    assert registry.get_sample_value("sidekiq_queue_enqueued_jobs", {"name": "doomed"}) == 1

    await redis.delete(keys.queue("doomed"))
    await redis.srem(keys.queues, "doomed")
    sampler.latest = await read_snapshot(redis, keys, clock=lambda: NOW)
    assert registry.get_sample_value("sidekiq_queue_enqueued_jobs", {"name": "doomed"}) is None

    clock[0] = NOW + 31
    assert registry.get_sample_value("sidekiq_enqueued_jobs") is None
    assert registry.get_sample_value("supervisor_sidekiq_snapshot_age_seconds") == 31


def test_nothing_but_the_age_before_the_first_snapshot() -> None:
    registry = CollectorRegistry()
    registry.register(SidekiqCollector(Held(), max_age_seconds=30))
    text = generate_latest(registry).decode()
    assert [f.name for f in text_string_to_metric_families(text)] == [
        "supervisor_sidekiq_snapshot_age_seconds"
    ]
