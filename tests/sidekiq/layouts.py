"""Write Sidekiq's real Redis layouts for 6.4.1, 6.5, 7.x, 8.0 and 8.1.2+."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from app.domain import Snapshot
from app.sidekiq.keys import Keys

NOW = 1_750_000_000.0  # the clock the tests read snapshots with


@dataclass
class Held:
    """A snapshot source (what the sampler is to the collector) holding what a test gives it."""

    latest: Snapshot | None = None


@dataclass(frozen=True)
class Version:
    name: str
    work_key: str  # ":workers" up to 6.4.1, ":work" after
    ms_times: bool  # 8.x writes created_at/enqueued_at as integer milliseconds
    info_version: str | None  # info.version exists from 7.0.2
    concurrency_field: bool  # 8.1.2+: concurrency in the hash, not in info
    capsules: bool  # 8.0.9+


V641 = Version("6.4.1", ":workers", False, None, False, False)
V65 = Version("6.5.12", ":work", False, None, False, False)
V7 = Version("7.3.10", ":work", False, "7.3.10", False, False)
V80 = Version("8.0.9", ":work", True, "8.0.9", False, True)
V812 = Version("8.1.7", ":work", True, "8.1.7", True, True)
VERSIONS = [V641, V65, V7, V80, V812]


def stamp(version: Version, seconds: float) -> float | int:
    return int(seconds * 1000) if version.ms_times else seconds


def job(
    version: Version, queue: str, *, enqueued_at: float, cls: str = "HardJob"
) -> dict[str, Any]:
    return {
        "class": cls,
        "args": [1, "two"],
        "retry": True,
        "queue": queue,
        "jid": secrets.token_hex(12),
        "created_at": stamp(version, enqueued_at - 1),
        "enqueued_at": stamp(version, enqueued_at),
    }


async def push(redis: Redis, keys: Keys, version: Version, queue: str, *ages: float) -> None:
    """LPUSH jobs onto queue:<queue> (newest on the left), oldest first in `ages`."""
    await redis.sadd(keys.queues, queue)
    for age in sorted(ages, reverse=True):
        payload = job(version, queue, enqueued_at=NOW - age)
        await redis.lpush(keys.queue(queue), orjson.dumps(payload))


async def process(
    redis: Redis,
    keys: Keys,
    version: Version,
    *,
    hostname: str,
    concurrency: int,
    queues: list[str],
    busy: Sequence[tuple[str, str, float]] = (),
    quiet: bool = False,
    rss: int | None = 123_456,
    expired: bool = False,
    beat: float = NOW - 2,
) -> str:
    """A heartbeat as the launcher writes it; `busy` holds (jid, queue, run_at) per thread."""
    identity = f"{hostname}:{secrets.randbelow(90000) + 10000}:{secrets.token_hex(6)}"
    await redis.sadd(keys.processes, identity)
    if expired:
        return identity  # in the set, hash gone: a crashed process nobody pruned
    info: dict[str, Any] = {
        "hostname": hostname,
        "started_at": NOW - 3600,
        "pid": int(identity.split(":")[1]),
        "tag": "app",
        "queues": queues,
        "labels": ["blue"],
        "identity": identity,
    }
    if not version.concurrency_field:
        info["concurrency"] = concurrency
    if version.info_version:
        info["version"] = version.info_version
        info["embedded"] = False
    if version.capsules:
        info["capsules"] = {"default": {"concurrency": concurrency, "mode": "weighted"}}
    fields: dict[FieldT, EncodableT] = {
        "info": orjson.dumps(info),
        "busy": len(busy),
        "beat": str(beat),
        "quiet": "true" if quiet else "false",
        "rtt_us": 150,
    }
    if rss is not None:
        fields["rss"] = rss
    if version.concurrency_field:
        fields["concurrency"] = concurrency
    await redis.hset(keys.process(identity), mapping=fields)
    await redis.expire(keys.process(identity), 60)
    for n, (jid, queue, run_at) in enumerate(busy):
        payload = job(version, queue, enqueued_at=run_at - 5) | {"jid": jid}
        work = {"queue": queue, "payload": orjson.dumps(payload).decode(), "run_at": int(run_at)}
        await redis.hset(keys.key(identity + version.work_key), f"tid{n}", orjson.dumps(work))
    return identity
