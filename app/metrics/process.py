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
