"""Per-class job metrics derived from ingested lifecycle events (Sidekiq Pro's statsd metrics for
everyone), and the stuck/lost series the reconciler sets; registered on an injected registry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.domain import EventName, JobEvent, RunTimes

# Jobs last from milliseconds to hours: 5 ms … 4 h, then +Inf.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1800.0, 3600.0, 7200.0, 14400.0,
)  # fmt: skip
UNKNOWN = "unknown"
OTHER = "other"
JOB_LABELS = ("queue", "worker")
OBSERVED = frozenset({EventName.STARTED, EventName.COMPLETE, EventName.FAILED, EventName.DEAD})


class LabelBound:
    """Bounds one label's values: the first `limit` distinct values keep their own label, later
    ones read `other`; a missing (None or empty) value reads `unknown`. Neither uses a slot."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: dict[str, str] = {}

    def label(self, value: str | None) -> str:
        if not value:
            return UNKNOWN
        known = self._seen.get(value)
        if known is not None:
            return known
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen[value] = value
        return value


@dataclass(frozen=True, slots=True)
class _Series:
    """The children of one {queue, worker} pair, bound once: `labels()` is the costly part."""

    executed: Counter
    succeeded: Counter
    dead: Counter
    wait: Histogram
    run: Histogram
    total: Histogram


class JobMetrics:
    """Counts and times jobs from their events; see `observe` for what each event adds.

    Times come from the event's own context (`enqueued_at`, `started_at`, which our Ruby
    middleware sends) or else from the job's ledger row read back after the batch committed.
    The row keeps the job's *first* enqueue, so it gives a wait (and a total) only for a first
    run. The original Faraday middleware sends no retry count and no context: with it, a retried
    run looks like a first run and its wait includes the retry delay, and a scheduled job's wait
    includes the time it was scheduled for (its only `queued` is posted when it is scheduled).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        max_workers: int,
        max_queues: int,
        max_error_classes: int,
    ) -> None:
        self._workers = LabelBound(max_workers)
        self._queues = LabelBound(max_queues)
        self._error_classes = LabelBound(max_error_classes)
        self._series: dict[tuple[str, str], _Series] = {}
        self._failures: dict[tuple[str, str, str], Counter] = {}
        self.executed = _counter(
            registry, "sidekiq_jobs_executed", "Runs that finished (complete or failed)."
        )
        self.succeeded = _counter(registry, "sidekiq_jobs_succeeded", "Runs that completed.")
        self.failed = Counter(
            "sidekiq_jobs_failed",
            "Runs that raised, by error class.",
            [*JOB_LABELS, "error_class"],
            registry=registry,
        )
        self.dead = _counter(registry, "sidekiq_jobs_dead", "Jobs that ran out of retries.")
        self.wait = _histogram(registry, "sidekiq_job_wait_seconds", "Enqueue of a run to start.")
        self.run = _histogram(registry, "sidekiq_job_run_seconds", "Start of a run to its end.")
        self.total = _histogram(
            registry, "sidekiq_job_total_seconds", "Enqueue of a run to its completion."
        )
        self.stuck = _gauge(registry, "sidekiq_jobs_stuck", "Started jobs running too long.")
        self.lost = _gauge(registry, "sidekiq_jobs_lost", "Jobs the reconciler counts as lost now.")
        self.lost_detections = _counter(
            registry, "sidekiq_jobs_lost_detected", "Jobs the reconciler found lost."
        )
        self.lookup_errors = Counter(
            "supervisor_job_metrics_lookup_errors",
            "Batches whose run times could not be read back (their durations were skipped).",
            registry=registry,
        )

    @staticmethod
    def needs_lookup(event: JobEvent) -> bool:
        """Whether `event` lacks a time its observations need and the ledger row could give.

        A run that is known not to be the first (a retry count was sent) needs no lookup for its
        enqueue time: the row only holds the first enqueue.
        """
        name = event.event
        if name is EventName.STARTED:
            return event.enqueued_at is None and event.attempt <= 1
        if name is EventName.COMPLETE:
            return event.started_at is None or (event.enqueued_at is None and event.attempt <= 1)
        if name is EventName.FAILED:
            return event.started_at is None
        return False

    def observe(self, events: Sequence[JobEvent], known: Mapping[str, RunTimes]) -> None:
        """Count and time committed events; `known` maps jids to their rows after the commit.

        COMPLETE: executed, succeeded, run and total time. FAILED: executed, failed (by error
        class), run time. DEAD: dead only (its run was counted by the FAILED before it).
        STARTED: wait time. A time that is unknown or would be negative is not observed.
        """
        for event in events:
            name = event.event
            if name not in OBSERVED:
                continue
            series = self._series_of(event.queue, event.job_class)
            row = known.get(event.jid)
            if name is EventName.STARTED:
                _observe(series.wait, _enqueued_at(event, row), event.at)
            elif name is EventName.DEAD:
                series.dead.inc()
            else:
                series.executed.inc()
                _observe(series.run, _started_at(event, row), event.at)
                if name is EventName.COMPLETE:
                    series.succeeded.inc()
                    _observe(series.total, _enqueued_at(event, row), event.at)
                else:
                    self._failure_of(event).inc()

    def set_stuck(self, counts: Mapping[tuple[str | None, str | None], int]) -> None:
        """Replace every `sidekiq_jobs_stuck` series; keys are (queue, job_class)."""
        self._replace(self.stuck, counts)

    def set_lost(self, counts: Mapping[tuple[str | None, str | None], int]) -> None:
        """Replace every `sidekiq_jobs_lost` series; keys are (queue, job_class)."""
        self._replace(self.lost, counts)

    def clear_reconcile_gauges(self) -> None:
        """Drop the stuck and lost series (this replica stopped reconciling)."""
        self.stuck.clear()
        self.lost.clear()

    def lost_detected(self, queue: str | None, job_class: str | None, count: int = 1) -> None:
        self.lost_detections.labels(self._queues.label(queue), self._workers.label(job_class)).inc(
            count
        )

    def _series_of(self, queue: str | None, job_class: str | None) -> _Series:
        key = (self._queues.label(queue), self._workers.label(job_class))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(
                executed=self.executed.labels(*key),
                succeeded=self.succeeded.labels(*key),
                dead=self.dead.labels(*key),
                wait=self.wait.labels(*key),
                run=self.run.labels(*key),
                total=self.total.labels(*key),
            )
        return series

    def _failure_of(self, event: JobEvent) -> Counter:
        key = (
            self._queues.label(event.queue),
            self._workers.label(event.job_class),
            self._error_classes.label(event.error_class),
        )
        child = self._failures.get(key)
        if child is None:
            child = self._failures[key] = self.failed.labels(*key)
        return child

    def _replace(self, gauge: Gauge, counts: Mapping[tuple[str | None, str | None], int]) -> None:
        # Several raw keys can share a bounded label pair (`other`): their counts add up.
        totals: dict[tuple[str, str], int] = {}
        for (queue, job_class), count in counts.items():
            key = (self._queues.label(queue), self._workers.label(job_class))
            totals[key] = totals.get(key, 0) + count
        gauge.clear()
        for key, count in totals.items():
            gauge.labels(*key).set(count)


def _enqueued_at(event: JobEvent, row: RunTimes | None) -> datetime | None:
    """This run's enqueue: the event's own, else the row's first enqueue for a first run."""
    if event.enqueued_at is not None:
        return event.enqueued_at
    if row is not None and event.attempt <= 1 and row.attempts <= 1:
        return row.enqueued_at
    return None


def _started_at(event: JobEvent, row: RunTimes | None) -> datetime | None:
    """This run's start: the event's own, else the row's latest start."""
    if event.started_at is not None:
        return event.started_at
    return None if row is None else row.started_at


def _observe(histogram: Histogram, start: datetime | None, end: datetime) -> None:
    if start is None:
        return
    seconds = (end - start).total_seconds()
    if seconds >= 0:
        histogram.observe(seconds)


def _counter(registry: CollectorRegistry, name: str, documentation: str) -> Counter:
    return Counter(name, documentation, JOB_LABELS, registry=registry)


def _gauge(registry: CollectorRegistry, name: str, documentation: str) -> Gauge:
    return Gauge(name, documentation, JOB_LABELS, registry=registry)


def _histogram(registry: CollectorRegistry, name: str, documentation: str) -> Histogram:
    return Histogram(name, documentation, JOB_LABELS, buckets=DURATION_BUCKETS, registry=registry)
