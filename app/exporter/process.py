"""The supervisor's own health metrics (supervisor_*), registered on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class IngestMetrics:
    """What the event writer reports: throughput, batch shape, failures, database reachability."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_ingested = Counter(
            "supervisor_events_ingested",
            "Lifecycle events committed to the ledger, by event name.",
            ["event"],
            registry=registry,
        )
        self.events_rejected = Counter(
            "supervisor_events_rejected",
            "Events answered with an error instead of being stored, by reason.",
            ["reason"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "supervisor_writer_batch_size",
            "Events per committed write batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "supervisor_writer_batch_seconds",
            "Time to write and commit one batch.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.pending = Gauge(
            "supervisor_writer_pending_events",
            "Events waiting for a write batch.",
            registry=registry,
        )
        self.database_up = Gauge(
            "supervisor_database_up",
            "1 while the ledger database accepts writes, 0 while the writer waits for it.",
            registry=registry,
        )
        self.database_up.set(1)


class SamplerMetrics:
    """What the sampler reports: freshness, cost, failures by stage, Redis reachability."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_success = Gauge(
            "supervisor_sampler_last_success_timestamp_seconds",
            "When the sampler last read a snapshot from Sidekiq's Redis (Unix time).",
            registry=registry,
        )
        self.duration = Histogram(
            "supervisor_sampler_duration_seconds",
            "Time to read one snapshot from Redis.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.reconcile_seconds = Histogram(
            "supervisor_reconcile_duration_seconds",
            "Time the leader spent looking for stuck and lost jobs in one tick.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "supervisor_sampler_errors",
            "Sampler ticks that failed, by stage (redis, database, reconcile, unexpected).",
            ["stage"],
            registry=registry,
        )
        self.redis_up = Gauge(
            "supervisor_redis_up",
            "1 when the last read of Sidekiq's Redis succeeded, else 0.",
            registry=registry,
        )
        self.leader = Gauge(
            "supervisor_sampler_leader",
            "1 while this replica holds the leader lock and writes history samples.",
            registry=registry,
        )
        self.samples_written = Counter(
            "supervisor_samples_written",
            "Snapshots persisted to sidekiq_samples/queue_samples.",
            registry=registry,
        )
        self.rows_deleted = Counter(
            "supervisor_retention_deleted_rows",
            "Rows deleted by retention, by table group (samples, jobs).",
            ["table"],
            registry=registry,
        )
