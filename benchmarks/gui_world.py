"""The world the GUI benchmark renders: a month of sampler history in MariaDB and a busy Sidekiq
in Redis (100,000 retries, 50,000 scheduled, 10,000 dead, 100,000 jobs in one queue, 20
processes with 25 jobs running each), written with Sidekiq 7's key layout."""

from __future__ import annotations

import random
import secrets
import time
from typing import Any

import orjson
from redis.asyncio import Redis

from app.sidekiq.keys import Keys
from benchmarks import fake_ledger

RETRIES = 100_000
SCHEDULED = 50_000
DEAD = 10_000
QUEUE_JOBS = 100_000
PROCESSES = 20
THREADS = 25
SAMPLE_SECONDS = 10
SAMPLE_DAYS = 30
CHUNK = 2_000


def _job(rng: random.Random, queue: str, now: float, *, failed: bool) -> dict[str, Any]:
    job: dict[str, Any] = {
        "class": rng.choice(fake_ledger.DOMAINS) + "::" + rng.choice(fake_ledger.ACTIONS),
        "args": orjson.loads(fake_ledger.arguments(rng)),
        "queue": queue,
        "retry": True,
        "jid": secrets.token_hex(12),
        "created_at": now - rng.uniform(60, 86_400),
        "enqueued_at": now - rng.uniform(1, 3_600),
    }
    if failed:
        error_class, message = rng.choice(fake_ledger.ERRORS)
        job.update(
            error_class=error_class,
            error_message=message,
            failed_at=now - rng.uniform(60, 86_400),
            retry_count=rng.randint(0, 24),
        )
    return job


async def _fill_set(redis: Redis, key: str, count: int, rng: random.Random, now: float) -> None:
    for first in range(0, count, CHUNK):
        entries = {}
        for _ in range(min(CHUNK, count - first)):
            job = _job(rng, rng.choice(fake_ledger.QUEUES), now, failed=key != "schedule")
            entries[orjson.dumps(job)] = now + rng.uniform(-86_400, 86_400)
        await redis.zadd(key, entries)


async def _fill_queue(redis: Redis, keys: Keys, rng: random.Random, now: float) -> None:
    await redis.sadd(keys.queues, *fake_ledger.QUEUES)
    for _ in range(QUEUE_JOBS // CHUNK):
        batch = [orjson.dumps(_job(rng, "default", now, failed=False)) for _n in range(CHUNK)]
        await redis.lpush(keys.queue("default"), *batch)
    for queue in fake_ledger.QUEUES[1:]:
        await redis.lpush(keys.queue(queue), orjson.dumps(_job(rng, queue, now, failed=False)))


async def _fill_processes(redis: Redis, keys: Keys, rng: random.Random, now: float) -> None:
    for number in range(PROCESSES):
        identity = f"worker-{number}:1:{secrets.token_hex(6)}"
        info = {
            "hostname": f"worker-{number}",
            "started_at": now - 3_600,
            "pid": 1,
            "tag": "app",
            "concurrency": THREADS,
            "queues": fake_ledger.QUEUES,
            "labels": [],
            "identity": identity,
            "version": "7.3.10",
        }
        work = {f"tid{thread}": _work(rng, now) for thread in range(THREADS)}
        await redis.sadd(keys.processes, identity)
        await redis.hset(
            identity,
            mapping={"info": orjson.dumps(info), "busy": THREADS, "beat": now, "quiet": "false"},
        )
        await redis.hset(f"{identity}:work", mapping=work)  # type: ignore[arg-type]


def _work(rng: random.Random, now: float) -> bytes:
    payload = orjson.dumps(_job(rng, "default", now, failed=False)).decode()
    return orjson.dumps(
        {"queue": "default", "payload": payload, "run_at": now - rng.uniform(0, 600)}
    )


async def fill_redis(redis: Redis) -> None:
    """Sidekiq's keys as a large, busy installation has them (Redis DB flushed first)."""
    keys, rng, now = Keys(), random.Random(fake_ledger.SEED), time.time()
    await redis.flushdb()
    await redis.set(keys.processed, 123_456_789)
    await redis.set(keys.failed, 234_567)
    await _fill_set(redis, keys.key("retry"), RETRIES, rng, now)
    await _fill_set(redis, keys.key("schedule"), SCHEDULED, rng, now)
    await _fill_set(redis, keys.key("dead"), DEAD, rng, now)
    await _fill_queue(redis, keys, rng, now)
    await _fill_processes(redis, keys, rng, now)


def sample_rows(now: float) -> list[str]:
    """A month of sidekiq_samples rows, one per SAMPLE_SECONDS, as multi-row INSERTs."""
    rows, statements, processed = [], [], 0
    start = now - SAMPLE_DAYS * 86_400
    for step in range(SAMPLE_DAYS * 86_400 // SAMPLE_SECONDS):
        processed += 40 + step % 17
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start + step * SAMPLE_SECONDS))
        gauges = f"{step % 500},10,{step % 300},5,20,500,{step % 400}"
        rows.append(f"('{at}',{processed},{processed // 90},{gauges})")
        if len(rows) == 5_000:
            statements.append(_samples_insert(rows))
            rows = []
    if rows:
        statements.append(_samples_insert(rows))
    return statements


def _samples_insert(rows: list[str]) -> str:
    columns = (
        "sampled_at, processed, failed, enqueued, scheduled, retry, dead, processes, workers, busy"
    )
    return f"INSERT INTO sidekiq_samples ({columns}) VALUES " + ",".join(rows)  # fmt: skip
