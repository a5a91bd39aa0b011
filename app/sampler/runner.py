"""The sampler loop. Every tick reads a Snapshot and keeps it as `latest` (what the Prometheus
collector and the routes read) and, on the replica holding the Redis leader lock, persists it
as history and runs one retention chunk. A failed tick is logged and counted by stage; the
loop itself never dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain import Snapshot
from app.exporter.process import SamplerMetrics
from app.sampler.reconcile import Reconciler
from app.sidekiq.keys import Keys
from app.sidekiq.reader import read_snapshot
from app.store.db import DatabaseUnavailable
from app.store.ledger_writes import LedgerUnavailable
from app.store.retention import delete_old_jobs, delete_old_samples
from app.store.samples import add_samples

log = logging.getLogger(__name__)

LEADER_KEY = "sidekiq-supervisor:sampler-leader"
# Take the lock if free, or extend it if it is ours; 1 when we hold it afterwards.
ACQUIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
UNREACHABLE_DB = (DBAPIError, DatabaseUnavailable, LedgerUnavailable, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class SamplerConfig:
    interval_seconds: float
    retention_days: int
    retention_chunk_rows: int
    timeout_seconds: float


def replica_identity() -> str:
    """Who holds the leader lock, readable in Redis: host, pid and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Sampler:
    """Runs `tick` every interval in the app's lifespan. `latest` is the newest snapshot it
    read (None before the first): it owns it, the collector and the routes read it."""

    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
        sessions: async_sessionmaker[AsyncSession],
        metrics: SamplerMetrics,
        config: SamplerConfig,
        reconciler: Reconciler | None = None,
        identity: str | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._sessions = sessions
        self._metrics = metrics
        self._config = config
        self._reconciler = reconciler
        self.identity = identity or replica_identity()
        self._task: asyncio.Task[None] | None = None
        self.latest: Snapshot | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sidekiq-sampler")

    async def stop(self) -> None:
        """End the loop and hand the leader lock over at once (if we held it)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self._config.timeout_seconds):
                await self._redis.eval(RELEASE, 1, self._keys.key(LEADER_KEY), self.identity)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except Exception:
                # The loop boundary: a bug in one tick must not end sampling.
                log.exception("sampler tick failed unexpectedly")
                self._metrics.errors.labels("unexpected").inc()
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self._config.interval_seconds - elapsed))

    async def tick(self) -> Snapshot | None:
        """One sampling round; returns the snapshot, or None when Redis could not be read."""
        snapshot = await self._read()
        if snapshot is None:
            return None
        if await self._is_leader():
            await self._persist(snapshot)
            await self._reconcile(snapshot)
        elif self._reconciler is not None:
            self._reconciler.stand_down()
        return snapshot

    async def _read(self) -> Snapshot | None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._config.timeout_seconds):
                snapshot = await read_snapshot(self._redis, self._keys)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("sampler could not read Sidekiq's Redis: %r", exc)
            self._metrics.errors.labels("redis").inc()
            self._metrics.redis_up.set(0)
            return None
        self._metrics.duration.observe(time.perf_counter() - started)
        self._metrics.redis_up.set(1)
        self._metrics.last_success.set(snapshot.taken_at.timestamp())
        self.latest = snapshot  # one reference swap: a reader sees the old or the new one
        return snapshot

    async def _is_leader(self) -> bool:
        ttl_ms = int(self._config.interval_seconds * 3 * 1000)
        try:
            async with asyncio.timeout(self._config.timeout_seconds):
                held = await self._redis.eval(
                    ACQUIRE, 1, self._keys.key(LEADER_KEY), self.identity, ttl_ms
                )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("sampler could not check the leader lock: %r", exc)
            self._metrics.errors.labels("redis").inc()
            held = 0
        leader: bool = held == 1
        self._metrics.leader.set(1 if leader else 0)
        return leader

    async def _reconcile(self, snapshot: Snapshot) -> None:
        if self._reconciler is None:
            return
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._config.timeout_seconds):
                await self._reconciler.tick(snapshot)
        except (*UNREACHABLE_DB, RedisError) as exc:
            # The round keeps its place: the next tick continues where this one stopped.
            log.warning("reconcile could not finish this tick: %r", exc)
            self._metrics.errors.labels("reconcile").inc()
            return
        self._metrics.reconcile_seconds.observe(time.perf_counter() - started)

    async def _persist(self, snapshot: Snapshot) -> None:
        cutoff = datetime.now(UTC) - timedelta(days=self._config.retention_days)
        chunk = self._config.retention_chunk_rows
        try:
            async with asyncio.timeout(self._config.timeout_seconds), self._sessions() as session:
                await add_samples(session, snapshot)
                await session.commit()
                samples = await delete_old_samples(session, cutoff, chunk=chunk)
                await session.commit()
                jobs = await delete_old_jobs(session, cutoff, chunk=chunk)
                await session.commit()
        except UNREACHABLE_DB as exc:
            log.warning("sampler could not write history: %r", exc)
            self._metrics.errors.labels("database").inc()
            return
        self._metrics.samples_written.inc()
        self._metrics.rows_deleted.labels("samples").inc(samples)
        self._metrics.rows_deleted.labels("jobs").inc(jobs)
