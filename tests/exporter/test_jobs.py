"""Job metrics from events, read through a fresh registry: counts, histograms, times from the
event or the ledger row, label bounding, and the reconciler's gauges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from app.domain import EventName, JobEvent, RunTimes
from app.exporter.jobs import DURATION_BUCKETS, JobMetrics

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
JID = "0123456789abcdef01234567"
HARD = {"queue": "default", "worker": "HardJob"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(name: EventName, when: float, **fields: Any) -> JobEvent:
    values: dict[str, Any] = {"job_class": "HardJob", "queue": "default", **fields}
    return JobEvent(
        jid=values.pop("jid", JID), event=name, at=at(when), received_at=at(when), **values
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> JobMetrics:
    return JobMetrics(registry, max_workers=3, max_queues=2, max_error_classes=2)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels or HARD)


def histogram(registry: CollectorRegistry, name: str, **labels: str) -> tuple[float, float]:
    """(count, sum) of a histogram's series; (0, 0) when it was never observed."""
    count = value(registry, f"{name}_count", **labels) or 0.0
    total = value(registry, f"{name}_sum", **labels) or 0.0
    return count, total


def test_a_successful_run_counts_once_with_its_wait_run_and_total(
    registry: CollectorRegistry, metrics: JobMetrics
) -> None:
    metrics.observe(
        [
            event(EventName.QUEUED, 0),
            event(EventName.STARTED, 2, enqueued_at=at(0)),
            event(EventName.COMPLETE, 7, enqueued_at=at(0), started_at=at(2)),
        ],
        {},
    )
    assert value(registry, "sidekiq_jobs_executed_total") == 1
    assert value(registry, "sidekiq_jobs_succeeded_total") == 1
    assert value(registry, "sidekiq_jobs_dead_total") == 0
    assert histogram(registry, "sidekiq_job_wait_seconds") == (1, 2.0)
    assert histogram(registry, "sidekiq_job_run_seconds") == (1, 5.0)
    assert histogram(registry, "sidekiq_job_total_seconds") == (1, 7.0)
    assert value(registry, "sidekiq_job_run_seconds_bucket", **HARD, le="2.5") == 0
    assert value(registry, "sidekiq_job_run_seconds_bucket", **HARD, le="5.0") == 1
    assert value(registry, "sidekiq_job_run_seconds_bucket", **HARD, le="+Inf") == 1


def test_a_failure_then_death_counts_one_run_one_failure_and_one_death(
    registry: CollectorRegistry, metrics: JobMetrics
) -> None:
    failed = event(
        EventName.FAILED, 3, started_at=at(1), retry_count=4, error_class="Net::ReadTimeout"
    )
    metrics.observe([failed, event(EventName.DEAD, 3, retry_count=4)], {})
    assert value(registry, "sidekiq_jobs_executed_total") == 1
    assert value(registry, "sidekiq_jobs_succeeded_total") == 0
    assert value(registry, "sidekiq_jobs_failed_total", **HARD, error_class="Net::ReadTimeout") == 1
    assert value(registry, "sidekiq_jobs_dead_total") == 1
    assert histogram(registry, "sidekiq_job_run_seconds") == (1, 2.0)
    # Neither a failure nor a death is a completion.
    assert histogram(registry, "sidekiq_job_total_seconds") == (0, 0)


def test_a_failure_without_error_class_is_unknown(
    registry: CollectorRegistry, metrics: JobMetrics
) -> None:
    metrics.observe([event(EventName.FAILED, 3, started_at=at(1))], {})
    assert value(registry, "sidekiq_jobs_failed_total", **HARD, error_class="unknown") == 1


def test_times_missing_from_the_event_come_from_the_row(
    registry: CollectorRegistry, metrics: JobMetrics
) -> None:
    row = {JID: RunTimes(enqueued_at=at(0), started_at=at(4), attempts=1)}
    started, complete = event(EventName.STARTED, 4), event(EventName.COMPLETE, 10)
    assert JobMetrics.needs_lookup(started)
    assert JobMetrics.needs_lookup(complete)
    metrics.observe([started], row)
    metrics.observe([complete], row)
    assert histogram(registry, "sidekiq_job_wait_seconds") == (1, 4.0)
    assert histogram(registry, "sidekiq_job_run_seconds") == (1, 6.0)
    assert histogram(registry, "sidekiq_job_total_seconds") == (1, 10.0)


def test_the_events_own_times_win_over_the_row(
    registry: CollectorRegistry, metrics: JobMetrics
) -> None:
    row = {JID: RunTimes(enqueued_at=at(-100), started_at=at(-50), attempts=1)}
    complete = event(EventName.COMPLETE, 10, enqueued_at=at(1), started_at=at(3))
    assert not JobMetrics.needs_lookup(complete)
    metrics.observe([event(EventName.STARTED, 3, enqueued_at=at(1)), complete], row)
    assert histogram(registry, "sidekiq_job_wait_seconds") == (1, 2.0)
    assert histogram(registry, "sidekiq_job_run_seconds") == (1, 7.0)
    assert histogram(registry, "sidekiq_job_total_seconds") == (1, 9.0)


def test_unknown_and_negative_times_are_not_observed(
    registry: CollectorRegistry, metrics: JobMetrics
) -> None:
    skewed = {JID: RunTimes(enqueued_at=at(15), started_at=at(20), attempts=1)}
    metrics.observe([event(EventName.STARTED, 2), event(EventName.COMPLETE, 10)], skewed)
    metrics.observe([event(EventName.STARTED, 2), event(EventName.FAILED, 10)], {})
    metrics.observe([event(EventName.STARTED, 2, enqueued_at=at(3))], {})
    assert value(registry, "sidekiq_jobs_executed_total") == 2
    for name in ("wait", "run", "total"):
        assert histogram(registry, f"sidekiq_job_{name}_seconds") == (0, 0), name


def test_a_retried_start_without_context_takes_no_wait_from_the_row(
    registry: CollectorRegistry, metrics: JobMetrics
) -> None:
    # The row keeps the first enqueue: it is not when a retry was enqueued.
    retried = event(EventName.STARTED, 60, retry_count=0)
    assert not JobMetrics.needs_lookup(retried)
    row = {JID: RunTimes(enqueued_at=at(0), started_at=at(60), attempts=2)}
    metrics.observe([retried], row)
    # Without a retry count on the event, the row's attempts still tell a retry apart.
    metrics.observe([event(EventName.STARTED, 60)], row)
    metrics.observe([event(EventName.COMPLETE, 70)], row)
    assert histogram(registry, "sidekiq_job_wait_seconds") == (0, 0)
    assert histogram(registry, "sidekiq_job_total_seconds") == (0, 0)
    assert histogram(registry, "sidekiq_job_run_seconds") == (1, 10.0)


def test_only_finishing_and_starting_events_need_a_lookup() -> None:
    assert not JobMetrics.needs_lookup(event(EventName.QUEUED, 0))
    assert not JobMetrics.needs_lookup(event(EventName.DEAD, 0))
    assert JobMetrics.needs_lookup(event(EventName.FAILED, 0))
    assert not JobMetrics.needs_lookup(event(EventName.FAILED, 1, started_at=at(0)))
    assert JobMetrics.needs_lookup(event(EventName.COMPLETE, 1, started_at=at(0)))


def test_buckets_span_milliseconds_to_hours() -> None:
    assert DURATION_BUCKETS[0] == 0.005
    assert DURATION_BUCKETS[-1] == 4 * 3600
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)


def test_workers_past_the_limit_count_as_other(
    registry: CollectorRegistry, metrics: JobMetrics
) -> None:
    classes = ["A", "B", "C", "D", "E", "A"]
    metrics.observe([event(EventName.DEAD, 0, job_class=name) for name in classes], {})
    count = {
        worker: value(registry, "sidekiq_jobs_dead_total", queue="default", worker=worker)
        for worker in ("A", "B", "C", "D", "other")
    }
    assert count == {"A": 2, "B": 1, "C": 1, "D": None, "other": 2}


def test_queues_past_the_limit_count_as_other_and_missing_ones_as_unknown(
    registry: CollectorRegistry, metrics: JobMetrics
) -> None:
    queues = ["q1", "q2", "q3", None, "q1"]
    metrics.observe([event(EventName.DEAD, 0, queue=name) for name in queues], {})
    metrics.observe([event(EventName.DEAD, 0, job_class=None)], {})

    def dead(queue: str, worker: str = "HardJob") -> float | None:
        return value(registry, "sidekiq_jobs_dead_total", queue=queue, worker=worker)

    assert [dead("q1"), dead("q2"), dead("q3"), dead("other"), dead("unknown")] == [
        2,
        1,
        None,
        1,
        1,
    ]
    assert dead("default", "unknown") is None  # `default` came third: it is `other` too
    assert dead("other", "unknown") == 1


def test_error_classes_past_the_limit_count_as_other(
    registry: CollectorRegistry, metrics: JobMetrics
) -> None:
    errors = ["E1", "E2", "E3", "E1", None]
    metrics.observe(
        [event(EventName.FAILED, 0, started_at=at(0), error_class=e) for e in errors], {}
    )
    failed = {
        error: value(registry, "sidekiq_jobs_failed_total", **HARD, error_class=error)
        for error in ("E1", "E2", "E3", "other", "unknown")
    }
    assert failed == {"E1": 2, "E2": 1, "E3": None, "other": 1, "unknown": 1}


def test_reconcile_gauges_are_replaced_whole_and_cleared(
    registry: CollectorRegistry, metrics: JobMetrics
) -> None:
    metrics.set_stuck({("default", "HardJob"): 3, ("low", "Report"): 1})
    metrics.set_lost({("default", "HardJob"): 2})
    assert value(registry, "sidekiq_jobs_stuck") == 3
    assert value(registry, "sidekiq_jobs_stuck", queue="low", worker="Report") == 1
    metrics.set_stuck({("low", "Report"): 4, (None, None): 1})
    assert value(registry, "sidekiq_jobs_stuck") is None
    assert value(registry, "sidekiq_jobs_stuck", queue="low", worker="Report") == 4
    assert value(registry, "sidekiq_jobs_stuck", queue="unknown", worker="unknown") == 1
    assert value(registry, "sidekiq_jobs_lost") == 2
    metrics.clear_reconcile_gauges()
    assert value(registry, "sidekiq_jobs_stuck", queue="low", worker="Report") is None
    assert value(registry, "sidekiq_jobs_lost") is None


def test_reconcile_gauges_add_up_keys_that_share_the_other_label(
    registry: CollectorRegistry, metrics: JobMetrics
) -> None:
    metrics.set_lost({("q1", "A"): 1, ("q2", "A"): 1, ("q3", "A"): 2, ("q4", "A"): 5})
    assert value(registry, "sidekiq_jobs_lost", queue="other", worker="A") == 7


def test_lost_detections_are_counted(registry: CollectorRegistry, metrics: JobMetrics) -> None:
    metrics.lost_detected("default", "HardJob")
    metrics.lost_detected("default", "HardJob", count=3)
    metrics.lost_detected(None, None)
    assert value(registry, "sidekiq_jobs_lost_detected_total") == 4
    assert value(registry, "sidekiq_jobs_lost_detected_total", queue="unknown", worker="unknown")
