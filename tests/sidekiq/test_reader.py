"""The snapshot reader against Sidekiq's real key layouts, version by version."""

from __future__ import annotations

import orjson
import pytest
from redis.asyncio import Redis

from app.sidekiq.keys import Keys
from app.sidekiq.reader import read_snapshot
from tests.sidekiq.layouts import NOW, V641, V812, VERSIONS, Version, process, push

# Sidekiq 7+ refuses redis-namespace, so only 6.x layouts are also tried under one.
LAYOUTS = [(v, "") for v in VERSIONS] + [(v, "myapp") for v in VERSIONS if v.name < "7"]


@pytest.mark.parametrize(
    ("version", "namespace"), LAYOUTS, ids=[f"{v.name}{'-ns' if ns else ''}" for v, ns in LAYOUTS]
)
async def test_snapshot_matches_sidekiqs_arithmetic(
    redis: Redis, version: Version, namespace: str
) -> None:
    keys = Keys(namespace)
    await redis.set(keys.processed, 1234)
    await redis.set(keys.failed, 56)
    await redis.zadd(keys.retry, {"r1": NOW + 30, "r2": NOW + 60})
    await redis.zadd(keys.schedule, {"s1": NOW + 90})
    await redis.zadd(keys.dead, {"d1": NOW - 10, "d2": NOW - 20, "d3": NOW - 30})
    await push(redis, keys, version, "default", 12.5, 3.0)
    await push(redis, keys, version, "mailers", 0.25)
    await redis.sadd(keys.queues, "empty")
    alpha = await process(
        redis, keys, version, hostname="alpha", concurrency=10, queues=["default", "mailers"],
        busy=[("a" * 24, "default", NOW - 7), ("b" * 24, "mailers", NOW - 2)],
    )  # fmt: skip
    await process(
        redis, keys, version, hostname="beta", concurrency=5, queues=["default"], quiet=True
    )
    await process(redis, keys, version, hostname="gone", concurrency=99, queues=["x"], expired=True)

    snap = await read_snapshot(redis, keys, clock=lambda: NOW)

    assert (snap.processed, snap.failed) == (1234, 56)
    assert (snap.retries, snap.scheduled, snap.dead) == (2, 1, 3)
    assert snap.processes_size == 3  # SCARD: unpruned, like Stats#processes_size
    assert [p.hostname for p in snap.processes] == ["alpha", "beta"]
    assert (snap.workers, snap.busy, snap.enqueued) == (15, 2, 3)
    latencies = {q.name: (q.size, round(q.latency_seconds, 3)) for q in snap.queues}
    assert latencies == {"default": (2, 12.5), "empty": (0, 0.0), "mailers": (1, 0.25)}
    first = next(p for p in snap.processes if p.identity == alpha)
    assert first.queues == ("default", "mailers")
    assert (first.quiet, first.rss_kb, first.pid, first.tag) == (False, 123_456, first.pid, "app")
    assert first.beat is not None
    assert first.beat.timestamp() == NOW - 2
    assert first.version == (None if version.info_version is None else version.name)
    assert [p.quiet for p in snap.processes] == [False, True]
    running = [(job.jid, job.queue, job.process, job.run_at.timestamp()) for job in snap.busy_jobs]
    assert running == [("a" * 24, "default", alpha, NOW - 7), ("b" * 24, "mailers", alpha, NOW - 2)]
    assert snap.busy_jobs[0].job_class == "HardJob"
    assert snap.round_trips == 2


async def test_a_641_reader_finds_busy_work_under_either_key(redis: Redis) -> None:
    """A mixed fleet: 6.4.1 writes <id>:workers, 6.4.2+ <id>:work; both are read."""
    keys = Keys()
    await process(
        redis, keys, V641, hostname="old", concurrency=2, queues=["q"], busy=[("o" * 24, "q", NOW)]
    )
    await process(
        redis, keys, V812, hostname="new", concurrency=2, queues=["q"], busy=[("n" * 24, "q", NOW)]
    )
    snap = await read_snapshot(redis, keys, clock=lambda: NOW)
    assert sorted(job.jid or "" for job in snap.busy_jobs) == ["n" * 24, "o" * 24]


async def test_concurrency_fallbacks(redis: Redis) -> None:
    """8.1.2+ hash field; else info.concurrency; else the sum of 8.x capsules."""
    keys = Keys()
    await redis.sadd(keys.processes, "h:1:aa", "h:2:bb", "h:3:cc")
    await redis.hset("h:1:aa", mapping={"info": '{"hostname":"h"}', "concurrency": 7, "busy": 1})
    await redis.hset("h:2:bb", mapping={"info": '{"hostname":"h","concurrency":3}', "busy": 0})
    capsules = '{"hostname":"h","capsules":{"a":{"concurrency":4},"b":{"concurrency":6}}}'
    await redis.hset("h:3:cc", mapping={"info": capsules, "busy": 0})
    snap = await read_snapshot(redis, keys, clock=lambda: NOW)
    assert [p.concurrency for p in snap.processes] == [7, 3, 10]


async def test_latency_units_and_odd_jobs(redis: Redis) -> None:
    keys = Keys()
    odd = {
        "float-seconds": {"enqueued_at": NOW - 1.5},
        "int-ms": {"enqueued_at": int((NOW - 2.5) * 1000)},
        "int-seconds": {"enqueued_at": int(NOW - 4)},
        "created-only": {"created_at": NOW - 6.0},
        "no-time": {"class": "X"},
    }
    for name, payload in odd.items():
        await redis.sadd(keys.queues, name)
        await redis.lpush(keys.queue(name), orjson.dumps(payload))
    await redis.sadd(keys.queues, "garbage")
    await redis.lpush(keys.queue("garbage"), b"{not json")
    snap = await read_snapshot(redis, keys, clock=lambda: NOW)
    latency = {q.name: round(q.latency_seconds, 3) for q in snap.queues}
    assert latency == {
        "created-only": 6.0,
        "float-seconds": 1.5,
        "garbage": 0.0,
        "int-ms": 2.5,
        "int-seconds": 4.0,
        "no-time": 0.0,
    }


async def test_reading_writes_nothing(redis: Redis) -> None:
    keys = Keys()
    await push(redis, keys, V641, "default", 1.0)
    await process(
        redis, keys, V641, hostname="gone", concurrency=1, queues=["default"], expired=True
    )
    before = {key: await redis.dump(key) for key in await redis.keys("*")}
    await read_snapshot(redis, keys, clock=lambda: NOW)
    after = {key: await redis.dump(key) for key in await redis.keys("*")}
    assert after == before
