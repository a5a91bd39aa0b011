"""Job metrics through the app: the original middleware's form posts (times read back from the
ledger) and JSON batches with context times, on MariaDB and SQLite, read from the scrape."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.main import create_app
from app.store.db import create_engine
from tests.conftest import make_settings

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
FARADAY = {"User-Agent": "Faraday v1.1.0", "Content-Type": "application/x-www-form-urlencoded"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def scrape(client: AsyncClient) -> Samples:
    response = await client.get("/prometheus/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def number(value: float | None) -> float:
    assert value is not None
    return value


async def eventually(client: AsyncClient, ready: Callable[[Samples], bool]) -> Samples:
    """The scrape once `ready` holds: metrics follow the acknowledgement, they do not gate it."""
    async with asyncio.timeout(5):
        while True:
            samples = await scrape(client)
            if ready(samples):
                return samples
            await asyncio.sleep(0.01)


async def post_original_walk(client: AsyncClient, jid: str, job: dict[str, str], **at: str) -> None:
    """queued, started, complete as the original Faraday middleware posts them (form-encoded),
    with an explicit `at` per event when given."""
    common = {"arguments": "[1]", **job}
    routes = {
        "queued": ("/api/v1/jobs", {**common, "job_id": jid}),
        "started": (f"/api/v1/jobs/{jid}/started", common),
        "complete": (f"/api/v1/jobs/{jid}/complete", common),
    }
    for name, (path, fields) in routes.items():
        extra = {"at": at[name]} if name in at else {}
        response = await client.post(path, data={**fields, **extra}, headers=FARADAY)
        assert response.status_code == 201, response.text


async def test_original_posts_count_and_time_a_run_from_the_ledger(client: AsyncClient) -> None:
    hard = {"job_class": "HardJob", "queue": "default"}
    timed = {"job_class": "TimedJob", "queue": "default"}
    await post_original_walk(client, "a" * 24, hard)
    await post_original_walk(
        client, "b" * 24, timed, queued=iso(0), started=iso(1.5), complete=iso(4.25)
    )
    h = {"queue": "default", "worker": "HardJob"}
    t = {"queue": "default", "worker": "TimedJob"}
    samples = await eventually(
        client, lambda s: sample(s, "sidekiq_job_total_seconds_count", **t) == 1
    )
    for labels in (h, t):
        assert sample(samples, "sidekiq_jobs_executed_total", **labels) == 1
        assert sample(samples, "sidekiq_jobs_succeeded_total", **labels) == 1
        for name in ("wait", "run", "total"):
            assert sample(samples, f"sidekiq_job_{name}_seconds_count", **labels) == 1
    # Explicit times: the read-back gives exactly complete.at - started.at, and so on.
    assert sample(samples, "sidekiq_job_wait_seconds_sum", **t) == pytest.approx(1.5)
    assert sample(samples, "sidekiq_job_run_seconds_sum", **t) == pytest.approx(2.75)
    assert sample(samples, "sidekiq_job_total_seconds_sum", **t) == pytest.approx(4.25)
    assert sample(samples, "sidekiq_job_run_seconds_bucket", **t, le="2.5") == 0
    assert sample(samples, "sidekiq_job_run_seconds_bucket", **t, le="5.0") == 1
    # Receive times: whatever they were, total = wait + run of the one run.
    wait, run, total = (
        number(sample(samples, f"sidekiq_job_{name}_seconds_sum", **h))
        for name in ("wait", "run", "total")
    )
    assert min(wait, run) >= 0
    assert total == pytest.approx(wait + run, abs=1e-6)


def batch_event(name: str, jid: str, at: float, **fields: Any) -> dict[str, Any]:
    times = {key: iso(value) for key, value in fields.items() if key.endswith("_at")}
    return {
        "event": name,
        "job_id": jid,
        "at": iso(at),
        "job_class": "BatchJob",
        "queue": "mailers",
        **fields,
        **times,
    }


async def test_batch_events_with_context_times(client: AsyncClient) -> None:
    error = {"error_class": "Net::ReadTimeout", "error_message": "timed out"}
    events = [
        batch_event("queued", "c1", 0),
        batch_event("started", "c1", 2, enqueued_at=0),
        batch_event("complete", "c1", 5, enqueued_at=0, started_at=2),
        batch_event("queued", "c2", 0),
        batch_event("started", "c2", 1, enqueued_at=0),
        batch_event("failed", "c2", 1.5, enqueued_at=0, started_at=1, **error),
        batch_event("started", "c2", 60, retry_count=0, enqueued_at=50),
        batch_event("failed", "c2", 61, retry_count=0, enqueued_at=50, started_at=60, **error),
        batch_event("dead", "c2", 61, retry_count=0),
        # No context: the times come from the row this same batch wrote.
        batch_event("queued", "c3", 0, job_class="LookupJob"),
        batch_event("started", "c3", 1, job_class="LookupJob"),
        batch_event("complete", "c3", 3, job_class="LookupJob"),
    ]
    response = await client.post("/api/v1/events", json=events)
    assert response.status_code == 201, response.text
    b = {"queue": "mailers", "worker": "BatchJob"}
    lookup = {"queue": "mailers", "worker": "LookupJob"}
    samples = await eventually(
        client, lambda s: sample(s, "sidekiq_job_total_seconds_count", **lookup) == 1
    )
    assert sample(samples, "sidekiq_jobs_executed_total", **b) == 3
    assert sample(samples, "sidekiq_jobs_succeeded_total", **b) == 1
    assert sample(samples, "sidekiq_jobs_dead_total", **b) == 1
    failed = sample(samples, "sidekiq_jobs_failed_total", **b, error_class="Net::ReadTimeout")
    assert failed == 2
    expected = {"wait": (3, 2 + 1 + 10), "run": (3, 3 + 0.5 + 1), "total": (1, 5)}
    for name, (count, total) in expected.items():
        assert sample(samples, f"sidekiq_job_{name}_seconds_count", **b) == count, name
        assert sample(samples, f"sidekiq_job_{name}_seconds_sum", **b) == pytest.approx(total)
    for name, seconds in {"wait": 1, "run": 2, "total": 3}.items():
        assert sample(samples, f"sidekiq_job_{name}_seconds_sum", **lookup) == pytest.approx(
            seconds
        )
    assert sample(samples, "supervisor_job_metrics_lookup_errors_total") == 0


@pytest.fixture
async def no_jid_reader(mysql_url: str) -> AsyncIterator[str]:
    """A MariaDB user that may write the ledger but not read `jobs.jid`: the writer's commits
    succeed and its read-back fails with a real 'SELECT command denied'."""
    url = make_url(mysql_url)
    user = f"nojid_{os.getpid()}_{secrets.token_hex(3)}"
    password = secrets.token_hex(8)
    db = url.database
    readable = (
        "job_class, queue, arguments, arguments_truncated, arguments_redacted, info_key, status, "
        "status_key, enqueued_at, scheduled_for, started_at, completed_at, failed_at, "
        "first_seen_at, last_event_at, attempts, error_class, error_message, process, requeued_as"
    )
    admin = create_engine(make_settings(mysql_url), name="supervisor-tests")
    statements = [
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'",
        f"GRANT INSERT, UPDATE ON {db}.jobs TO '{user}'@'%'",
        f"GRANT SELECT ({readable}) ON {db}.jobs TO '{user}'@'%'",
        f"GRANT INSERT ON {db}.job_events TO '{user}'@'%'",
    ]
    try:
        async with admin.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
        yield url.set(username=user, password=password).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        await admin.dispose()


async def test_a_failed_read_back_is_counted_and_never_fails_the_batch(no_jid_reader: str) -> None:
    application = create_app(make_settings(no_jid_reader))
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://t") as client:
            job = {"job_class": "DeniedJob", "queue": "default"}
            # Each post is answered 201, and each read-back fails on a fresh connection.
            await post_original_walk(client, secrets.token_hex(12), job)
            await post_original_walk(client, secrets.token_hex(12), job)
            labels = {"queue": "default", "worker": "DeniedJob"}
            samples = await eventually(
                client, lambda s: sample(s, "supervisor_job_metrics_lookup_errors_total") == 4
            )
    assert sample(samples, "sidekiq_jobs_executed_total", **labels) == 2
    assert sample(samples, "sidekiq_jobs_succeeded_total", **labels) == 2
    for name in ("wait", "run", "total"):
        assert sample(samples, f"sidekiq_job_{name}_seconds_count", **labels) == 0
    assert sample(samples, "supervisor_events_ingested_total", event="complete") == 2
