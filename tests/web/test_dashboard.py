"""The Dashboard: its page, the live feed the graph polls (fresh from Redis each call) and the
bucketed history from the sample tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from httpx import AsyncClient
from redis.asyncio import Redis
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.sidekiq.keys import Keys
from app.store.samples import totals_by_bucket
from app.store.tables import SidekiqSampleRow, stored_time
from tests.sidekiq.layouts import NOW, V7, process, push

KEYS = Keys()


async def add_sample(engine: AsyncEngine, at: datetime, processed: int, **values: int) -> None:
    row = {
        "sampled_at": stored_time(at),
        "processed": processed,
        "failed": values.get("failed", 0),
        "enqueued": values.get("enqueued", 0),
        "scheduled": 0,
        "retry": values.get("retry", 0),
        "dead": 0,
        "processes": 1,
        "workers": 10,
        "busy": values.get("busy", 0),
    }
    async with engine.begin() as conn:
        await conn.execute(insert(SidekiqSampleRow).values(**row))


async def test_the_dashboard_shows_sidekiq_and_redis(client: AsyncClient, redis: Redis) -> None:
    await redis.set(KEYS.processed, 1234567)
    await redis.set(KEYS.failed, 89)
    await push(redis, KEYS, V7, "default", 30.0, 5.0)
    await process(redis, KEYS, V7, hostname="w1", concurrency=5, queues=["default"])
    page = await client.get("/sidekiq")
    assert page.status_code == 200
    assert '<b data-stat="processed">1,234,567</b>' in page.text
    assert '<b data-stat="enqueued">2</b>' in page.text
    assert "<b>1</b> live" in page.text
    assert "Version</dt><dd>" in page.text  # Redis INFO
    assert "/static/vendor/uplot/uPlot.iife.min.js" in page.text


async def test_the_live_feed_reads_redis_on_every_call(client: AsyncClient, redis: Redis) -> None:
    await redis.set(KEYS.processed, 10)
    first = (await client.get("/sidekiq/stats.json")).json()
    await redis.incrby(KEYS.processed, 5)
    await redis.set(KEYS.failed, 2)
    await push(redis, KEYS, V7, "default", 12.0)
    second = (await client.get("/sidekiq/stats.json")).json()
    assert (first["processed"], second["processed"]) == (10, 15)
    assert (second["failed"], second["enqueued"]) == (2, 1)
    # The layout's jobs are stamped relative to its fixed NOW.
    expected = second["taken_at"] - (NOW - 12.0)
    assert second["default_latency"] == pytest.approx(expected, abs=1.0)
    assert second["taken_at"] >= first["taken_at"]


async def test_history_buckets_the_samples(client: AsyncClient, engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    await add_sample(engine, now - timedelta(minutes=50), 100, enqueued=4)
    await add_sample(engine, now - timedelta(minutes=30), 160, enqueued=8, failed=3)
    await add_sample(engine, now - timedelta(hours=3), 1, enqueued=1)
    hour = (await client.get("/sidekiq/history.json", params={"range": "1h"})).json()
    assert hour["bucket_seconds"] == 15  # 240 points an hour
    assert (hour["processed"], hour["enqueued"], hour["failed"]) == ([100, 160], [4, 8], [0, 3])
    assert hour["time"][0] < hour["time"][1]
    assert len((await client.get("/sidekiq/history.json?range=6h")).json()["time"]) == 3


async def test_history_refuses_an_unknown_range(client: AsyncClient) -> None:
    answer = await client.get("/sidekiq/history.json", params={"range": "2h"})
    assert answer.status_code == 422
    assert "range" in answer.json()["detail"]


async def test_each_bucket_gives_its_first_sample(engine: AsyncEngine) -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC)
    for offset, processed, enqueued in ((0, 10, 2), (4, 12, 4), (11, 30, 9), (35, 31, 0)):
        await add_sample(engine, since + timedelta(seconds=offset), processed, enqueued=enqueued)
    await add_sample(engine, since + timedelta(seconds=40), 99)  # past `until`
    sessions = async_sessionmaker(engine)
    async with sessions() as session:
        points = await totals_by_bucket(session, since, since + timedelta(seconds=40), buckets=4)
    assert [(p.sampled_at - since).total_seconds() for p in points] == [0, 11, 35]
    assert [p.processed for p in points] == [10, 30, 31]
    assert [p.enqueued for p in points] == [2, 9, 0]
