"""The metric names the service really exports: the app in-process with its sampler reading a
Sidekiq layout in Redis and job events ingested, scraped at /prometheus/metrics."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from httpx import ASGITransport, AsyncClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.main import create_app
from app.sidekiq.keys import Keys
from tests.conftest import make_settings
from tests.sidekiq.layouts import V7, process, push

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SCRAPE_DEADLINE_SECONDS = 10.0
POLL_SECONDS = 0.05
# Series whose presence shows the scrape has everything: the sampler's snapshot (with memory,
# from a process reporting rss) and the histograms of the ingested events.
READY = ("sidekiq_workers", "sidekiq_host_processes_memory_usage_bytes", "sidekiq_jobs_dead_total")
# A family's samples carry these names, by type (a histogram with no observation yet, or a
# labelled counter with no child, is announced by its HELP/TYPE lines alone).
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


async def write_layout(redis: Redis) -> None:
    """Two queues, a busy process and a quiet one, as Sidekiq 7 writes them."""
    keys = Keys()
    now = time.time()
    await push(redis, keys, V7, "default", 30.0, 20.0)
    await push(redis, keys, V7, "mailers", 5.0)
    busy = [("busy-jid", "default", now - 30)]
    await process(
        redis,
        keys,
        V7,
        hostname="worker-1",
        concurrency=10,
        queues=["default", "mailers"],
        busy=busy,
        beat=now,
    )
    await process(
        redis,
        keys,
        V7,
        hostname="worker-2",
        concurrency=5,
        queues=["default"],
        quiet=True,
        beat=now,
    )


def _event(name: str, jid: str, seconds: float, **times: float) -> dict[str, Any]:
    at = {key: (T0 + timedelta(seconds=value)).isoformat() for key, value in times.items()}
    return {
        "event": name,
        "job_id": jid,
        "at": (T0 + timedelta(seconds=seconds)).isoformat(),
        "job_class": "HardJob",
        "queue": "default",
        **at,
    }


EVENTS = [
    _event("queued", "ok-1", 0),
    _event("started", "ok-1", 1, enqueued_at=0),
    _event("complete", "ok-1", 3, enqueued_at=0, started_at=1),
    _event("queued", "bad-1", 0),
    _event("started", "bad-1", 2, enqueued_at=0),
    {**_event("failed", "bad-1", 4, enqueued_at=0, started_at=2), "error_class": "KeyError"},
    {**_event("dead", "bad-1", 4), "error_class": "KeyError"},
]


def exported_names(exposition: str) -> set[str]:
    """Every series name the exposition announces or carries."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


async def _scrape_when_ready(client: AsyncClient) -> str:
    async with asyncio.timeout(SCRAPE_DEADLINE_SECONDS):
        while True:
            response = await client.get("/prometheus/metrics")
            assert response.status_code == 200
            samples = {
                sample.name
                for family in text_string_to_metric_families(response.text)
                for sample in family.samples
            }
            if all(name in samples for name in READY):
                return response.text
            await asyncio.sleep(POLL_SECONDS)


async def scrape_service(database_url: str, redis: Redis) -> str:
    """/prometheus/metrics of the app once its sampler and writer have something to show."""
    await write_layout(redis)
    settings = make_settings(database_url, SAMPLER_ENABLED=True, SAMPLE_INTERVAL_SECONDS=0.5)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://supervisor.test") as client:
            response = await client.post("/api/v1/events", json=EVENTS)
            assert response.status_code == 201, response.text
            return await _scrape_when_ready(client)
