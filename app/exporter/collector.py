"""The Ruby exporter's standard Sidekiq metrics, rendered from the latest Snapshot.

A custom collector: every scrape builds fresh families from the sampler's latest snapshot,
so scrapes never touch Redis and vanished queues and hosts simply disappear. Names, labels and
arithmetic follow sidekiq-prometheus-exporter 0.4.0.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.domain import Snapshot, SnapshotSource


class SidekiqCollector(Collector):
    """Renders `source`'s newest snapshot; hides it once it is older than `max_age_seconds`, so
    an outage shows as absent series (and alerts on absence fire) rather than frozen numbers."""

    def __init__(
        self,
        source: SnapshotSource,
        *,
        max_age_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._max_age_seconds = max_age_seconds
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        snap = self._source.latest  # read once: the families below agree with each other
        age = math.inf if snap is None else self._clock() - snap.taken_at.timestamp()
        yield GaugeMetricFamily(
            "supervisor_sidekiq_snapshot_age_seconds",
            "Seconds since the Sidekiq numbers below were read from Redis (+Inf: never).",
            value=age,
        )
        if snap is None or age > self._max_age_seconds:
            return
        yield from _totals(snap)
        yield from _hosts(snap)
        yield from _queues(snap)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _totals(snap: Snapshot) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "sidekiq_processed_jobs", "The total number of processed jobs", value=snap.processed
    )
    yield CounterMetricFamily(
        "sidekiq_failed_jobs", "The total number of failed jobs", value=snap.failed
    )
    yield _gauge("sidekiq_workers", "The number of workers across all the processes", snap.workers)
    yield _gauge("sidekiq_processes", "The number of processes", snap.processes_size)
    yield _gauge("sidekiq_busy_workers", "The number of workers performing the job", snap.busy)
    yield _gauge("sidekiq_enqueued_jobs", "The number of enqueued jobs", snap.enqueued)
    yield _gauge(
        "sidekiq_scheduled_jobs", "The number of jobs scheduled for a future", snap.scheduled
    )
    yield _gauge(
        "sidekiq_retry_jobs", "The number of failed jobs waiting to be retried", snap.retries
    )
    yield _gauge("sidekiq_dead_jobs", "The number of jobs exceeded their retry count", snap.dead)


def _hosts(snap: Snapshot) -> Iterator[Metric]:
    processes = GaugeMetricFamily(
        "sidekiq_host_processes",
        "The number of processes running on the host",
        labels=["host", "quiet"],
    )
    counts: dict[tuple[str, str], int] = defaultdict(int)
    memory: dict[str, int] = defaultdict(int)
    for process in snap.processes:
        counts[(process.hostname, "true" if process.quiet else "false")] += 1
        if process.rss_kb is not None:
            memory[process.hostname] += process.rss_kb * 1024
    for (host, quiet), count in sorted(counts.items()):
        processes.add_metric([host, quiet], count)
    yield processes
    if memory:  # the exporter emits it only when some process reports rss (Sidekiq 6.2+)
        usage = GaugeMetricFamily(
            "sidekiq_host_processes_memory_usage_bytes",
            "Total memory usage of processes running on the host",
            labels=["host"],
        )
        for host, rss in sorted(memory.items()):
            usage.add_metric([host], rss)
        yield usage


def _queues(snap: Snapshot) -> Iterator[Metric]:
    def family(name: str, documentation: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, documentation, labels=["name"])

    latency = family(
        "sidekiq_queue_latency_seconds",
        "The number of seconds between oldest job being pushed to the queue and current time",
    )
    enqueued = family("sidekiq_queue_enqueued_jobs", "The number of enqueued jobs in the queue")
    for queue in snap.queues:
        latency.add_metric([queue.name], round(queue.latency_seconds, 3))
        enqueued.add_metric([queue.name], queue.size)
    yield latency
    yield enqueued

    longest = family(
        "sidekiq_queue_max_processing_time_seconds",
        "The number of seconds between oldest job of the queue being executed and current time",
    )
    oldest: dict[str, float] = {}
    for job in snap.busy_jobs:
        run_at = job.run_at.timestamp()
        oldest[job.queue] = min(run_at, oldest.get(job.queue, run_at))
    now = snap.taken_at.timestamp()
    for queue_name, run_at in sorted(oldest.items()):
        longest.add_metric([queue_name], int(now - run_at))
    yield longest

    workers = family("sidekiq_queue_workers", "The number of workers serving the queue")
    processes = family("sidekiq_queue_processes", "The number of processes serving the queue")
    busy = family(
        "sidekiq_queue_busy_workers", "The number of workers performing the job for the queue"
    )
    served: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for process in snap.processes:
        # The exporter's attribution: a process counts its whole concurrency and busy count
        # in every queue it listens on.
        for queue_name in process.queues:
            totals = served[queue_name]
            totals[0] += process.concurrency
            totals[1] += 1
            totals[2] += process.busy
    for queue_name, (concurrency, count, running) in sorted(served.items()):
        workers.add_metric([queue_name], concurrency)
        processes.add_metric([queue_name], count)
        busy.add_metric([queue_name], running)
    yield workers
    yield processes
    yield busy
