"""Reads one Snapshot of Sidekiq 6.x, 7.x and 8.x from Redis in two pipelined round trips.

Round trip 1: the counters, the set sizes and the members of `processes` and `queues`.
Round trip 2: each process's heartbeat fields and busy-work hashes (both `:work` and the 6.4.1
`:workers`), and each queue's length and oldest job. Never KEYS or a keyspace SCAN, never a
read of a whole queue or sorted set, and no writes: expired processes are skipped, not pruned.
Numbers follow Sidekiq's own arithmetic (docs/sidekiq-redis.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from app.domain import BusyJob, ProcessInfo, QueueStats, Snapshot
from app.sidekiq.keys import Keys

# Heartbeat fields; `concurrency` is a hash field from Sidekiq 8.1.2 on.
PROCESS_FIELDS = ("info", "concurrency", "busy", "beat", "quiet", "rss", "rtt_us")
# Epoch numbers above this are milliseconds (Sidekiq 8 writes integer ms; earlier, float s).
MS_THRESHOLD = 100_000_000_000
ROUND_TRIPS = 2


def epoch_seconds(value: Any) -> float | None:
    """A Sidekiq timestamp in seconds, decided by JSON type as Sidekiq 8 does: a float is
    seconds, an integer is milliseconds (small integers, as some producers write, are seconds)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return value / 1000 if abs(value) >= MS_THRESHOLD else float(value)
    if isinstance(value, bytes | str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number / 1000 if abs(number) >= MS_THRESHOLD else number
    return None


def _moment(value: Any) -> datetime | None:
    seconds = epoch_seconds(value)
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


def _json(raw: bytes | str | None) -> Any:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _text(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("utf-8", errors="replace")


def _int(raw: bytes | None) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        return 0


async def read_snapshot(
    redis: Redis, keys: Keys, *, clock: Callable[[], float] = time.time
) -> Snapshot:
    """One Snapshot; raises redis-py's errors when Redis cannot answer."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.processed)
        pipe.get(keys.failed)
        pipe.zcard(keys.schedule)
        pipe.zcard(keys.retry)
        pipe.zcard(keys.dead)
        pipe.smembers(keys.processes)
        pipe.smembers(keys.queues)
        processed, failed, scheduled, retries, dead, members, names = await pipe.execute()
    identities = sorted(_text(member) for member in members)
    queue_names = sorted(_text(name) for name in names)

    async with redis.pipeline(transaction=False) as pipe:
        for identity in identities:
            pipe.hmget(keys.process(identity), PROCESS_FIELDS)
            pipe.hgetall(keys.work(identity))
            pipe.hgetall(keys.workers(identity))
        for name in queue_names:
            pipe.llen(keys.queue(name))
            pipe.lindex(keys.queue(name), -1)
        replies = await pipe.execute()
    now = clock()

    processes: list[ProcessInfo] = []
    busy_jobs: list[BusyJob] = []
    for index, identity in enumerate(identities):
        fields, work, workers = replies[3 * index : 3 * index + 3]
        process = parse_process(identity, fields)
        if process is None:
            continue  # its heartbeat hash expired: a dead process Sidekiq has not pruned yet
        processes.append(process)
        busy_jobs.extend(parse_work(identity, {**workers, **work}))
    offset = 3 * len(identities)
    queues = [
        QueueStats(name, int(replies[offset + 2 * i]), latency(replies[offset + 2 * i + 1], now))
        for i, name in enumerate(queue_names)
    ]
    return Snapshot(
        taken_at=datetime.fromtimestamp(now, tz=UTC),
        processed=_int(processed),
        failed=_int(failed),
        scheduled=int(scheduled),
        retries=int(retries),
        dead=int(dead),
        processes_size=len(identities),
        queues=tuple(queues),
        processes=tuple(processes),
        busy_jobs=tuple(sorted(busy_jobs, key=lambda job: job.run_at)),
        round_trips=ROUND_TRIPS,
    )


def latency(oldest: bytes | None, now: float) -> float:
    """Queue#latency: seconds since the oldest job was enqueued; 0 for an empty queue, a job
    without a time, or one that is not JSON (as Stats does)."""
    job = _json(oldest)
    if not isinstance(job, dict):
        return 0.0
    enqueued = epoch_seconds(job.get("enqueued_at", job.get("created_at")))
    return 0.0 if enqueued is None else now - enqueued


def parse_process(identity: str, fields: list[bytes | None]) -> ProcessInfo | None:
    """A live process from its HMGET fields, or None when the hash has expired."""
    raw = dict(zip(PROCESS_FIELDS, fields, strict=True))
    info = _json(raw["info"])
    if not isinstance(info, dict):
        return None
    hostname = str(info.get("hostname") or identity.split(":", 1)[0])
    return ProcessInfo(
        identity=identity,
        hostname=hostname,
        pid=info["pid"] if isinstance(info.get("pid"), int) else None,
        tag=info.get("tag") or None,
        queues=tuple(dict.fromkeys(str(q) for q in info.get("queues") or ())),
        labels=tuple(str(label) for label in info.get("labels") or ()),
        concurrency=_concurrency(raw["concurrency"], info),
        busy=_int(raw["busy"]),
        quiet=_text(raw["quiet"]) == "true",
        rss_kb=_int(raw["rss"]) if raw["rss"] is not None else None,
        beat=_moment(raw["beat"]),
        started_at=_moment(info.get("started_at")),
        version=info.get("version"),
        embedded=bool(info.get("embedded", False)),
    )


def _concurrency(field: bytes | None, info: dict[str, Any]) -> int:
    """The 8.1.2+ hash field, else info.concurrency, else the sum over 8.x capsules."""
    if field is not None:
        return _int(field)
    if isinstance(info.get("concurrency"), int):
        return int(info["concurrency"])
    capsules = info.get("capsules")
    if isinstance(capsules, dict):
        return sum(int(c.get("concurrency", 0)) for c in capsules.values() if isinstance(c, dict))
    return 0


def parse_work(identity: str, work: dict[bytes, bytes]) -> list[BusyJob]:
    """Running jobs from a busy-work hash: {tid: {"queue", "payload", "run_at"}}, where the
    payload is a JSON string (6.0.2+) or an object (older)."""
    jobs = []
    for tid, raw in work.items():
        entry = _json(raw)
        if not isinstance(entry, dict):
            continue
        payload = entry.get("payload")
        job = _json(payload) if isinstance(payload, str) else payload
        job = job if isinstance(job, dict) else {}
        run_at = _moment(entry.get("run_at"))
        jobs.append(
            BusyJob(
                process=identity,
                tid=_text(tid),
                queue=str(entry.get("queue") or job.get("queue") or ""),
                jid=job.get("jid"),
                job_class=job.get("wrapped") or job.get("class"),
                run_at=run_at or datetime.fromtimestamp(0, tz=UTC),
                payload=payload if isinstance(payload, str) else orjson.dumps(job).decode(),
            )
        )
    return jobs
