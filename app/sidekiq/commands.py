"""Writing to Sidekiq's Redis safely: each move is one Lua script whose
ZREM (or a guard key) decides ownership, so a race with Sidekiq's poller, the Web UI or
another replica moves a job once or not at all. Payloads keep their exact bytes and jid."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from redis.asyncio import Redis

from app.domain import Snapshot
from app.errors import InvalidInput, NotFound
from app.sidekiq.keys import Keys
from app.sidekiq.reader import read_snapshot

# KEYS: source zset, queues set, target queue. ARGV: exact member, queue name, new payload.
MOVE_TO_QUEUE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('LPUSH', KEYS[3], ARGV[3])
  return 1
end
return 0
"""
# KEYS: source zset, dead. ARGV: exact member, now (s), oldest kept (s), most kept.
KILL = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[4]))
  return 1
end
return 0
"""
# KEYS: guard, queues set, target queue. ARGV: guard ttl (s), queue name, payload, guard value.
# Returns the guard's value: ours when this call pushed, the first caller's when it did not.
PUSH_ONCE = """
if redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[1]) then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('LPUSH', KEYS[3], ARGV[3])
end
return redis.call('GET', KEYS[1])
"""
REQUEUE_GUARD_TTL_SECONDS = 7 * 24 * 3600
# Sidekiq's morgue limits: dead_timeout_in_seconds (180 days) and dead_max_jobs (10,000).
DEAD_TIMEOUT_SECONDS = 180 * 24 * 3600
DEAD_MAX_JOBS = 10_000
BULK_PAGE = 100
NO_PROCESS = "no live Sidekiq process {identity!r}: it may have stopped"
EMBEDDED = "{identity!r} is an embedded Sidekiq, which ignores quiet and stop signals"
NOT_A_KEY = "not a <score>-<jid> entry key: {key!r}"


class SortedSet(StrEnum):
    """The sets whose entries can be moved: Retries, Scheduled and Dead in Sidekiq's Web UI."""

    RETRY = "retry"
    SCHEDULE = "schedule"
    DEAD = "dead"


class Action(StrEnum):
    """What can be done to a set entry: retry now (add to queue, for scheduled), delete, kill."""

    RETRY = "retry"
    DELETE = "delete"
    KILL = "kill"


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What one call did: entries moved, deleted or killed; keys already gone; entries left."""

    done: int
    missed: tuple[EntryKey, ...]
    more: bool


class Signal(StrEnum):
    QUIET = "TSTP"
    STOP = "TERM"


@dataclass(frozen=True, slots=True)
class EntryKey:
    """The Web UI's address of a set entry: "<score>-<jid>"."""

    score: float
    jid: str

    @classmethod
    def parse(cls, key: str) -> EntryKey:
        """ValueError unless `key` is a number (not NaN), a dash and a jid."""
        score, _, jid = key.partition("-")
        try:
            parsed = cls(float(score), jid)
        except ValueError:
            raise ValueError(NOT_A_KEY.format(key=key)) from None
        if math.isnan(parsed.score) or not jid:
            raise ValueError(NOT_A_KEY.format(key=key))
        return parsed


def signal_targets(snapshot: Snapshot, identities: Sequence[str]) -> list[str]:
    """The processes a quiet or stop goes to: those named (each once), or with none named every
    live one that is not embedded. 404 for a name that is no live process; 422 for an embedded
    one, which Sidekiq 7.0.3+ refuses to signal: it exists, it just takes no signals."""
    if not identities:
        return sorted(p.identity for p in snapshot.processes if not p.embedded)
    live = {process.identity: process for process in snapshot.processes}
    for identity in identities:
        process = live.get(identity)
        if process is None:
            raise NotFound(NO_PROCESS.format(identity=identity))
        if process.embedded:
            raise InvalidInput({"identity": EMBEDDED.format(identity=identity)})
    return list(dict.fromkeys(identities))


def uses_milliseconds(snapshot: Snapshot | None) -> bool:
    """Whether to write times as Sidekiq 8's integer ms: only when every live process runs 8+
    (8.x reads a float as seconds, so floats are right for a mixed or unknown fleet)."""
    if snapshot is None or not snapshot.processes:
        return False
    return all(_major(process.version) >= 8 for process in snapshot.processes)


def _major(version: str | None) -> int:
    try:
        return int((version or "0").split(".", 1)[0])
    except ValueError:
        return 0


def sidekiq_now(milliseconds: bool) -> float | int:
    now = time.time()
    return int(now * 1000) if milliseconds else now


def sidekiq_time(moment: datetime, milliseconds: bool) -> float | int:
    """`moment` as Sidekiq writes times: float seconds, or 8.x's integer milliseconds."""
    seconds = moment.timestamp()
    return int(seconds * 1000) if milliseconds else seconds


def requeued_payload(raw: bytes, *, milliseconds: bool, decrement_retry: bool) -> bytes:
    """The job as Sidekiq's Web UI re-pushes it: a fresh enqueued_at; for retry/dead entries,
    retry_count minus one (SortedEntry#retry); everything else unchanged."""
    job: dict[str, Any] = orjson.loads(raw)
    job["enqueued_at"] = sidekiq_now(milliseconds)
    if decrement_retry and isinstance(job.get("retry_count"), int):
        job["retry_count"] -= 1
    return orjson.dumps(job)


class Control:
    """State-changing operations on one Sidekiq Redis."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def members_at(self, source: SortedSet, key: EntryKey) -> list[bytes]:
        """The exact members at the key's score whose jid matches (normally one)."""
        name = self._keys.key(source.value)
        found = await self._redis.zrangebyscore(name, key.score, key.score)
        members = [bytes(member) for member in found if isinstance(member, bytes)]
        return [member for member in members if _jid_of(member) == key.jid]

    async def move_to_queue(self, source: SortedSet, member: bytes, *, milliseconds: bool) -> bool:
        """Retry now / add to queue: True when this call moved it (False: already gone)."""
        job = orjson.loads(member)
        queue = str(job["queue"])
        payload = requeued_payload(
            member, milliseconds=milliseconds, decrement_retry=source is not SortedSet.SCHEDULE
        )
        keys = [self._keys.key(source.value), self._keys.queues, self._keys.queue(queue)]
        moved = await self._redis.eval(MOVE_TO_QUEUE, 3, *keys, member, queue, payload)
        return _owned(moved)

    async def kill(self, source: SortedSet, member: bytes) -> bool:
        """Move an entry to the morgue (trimmed as Sidekiq trims it)."""
        now = time.time()
        keys = [self._keys.key(source.value), self._keys.dead]
        oldest = now - DEAD_TIMEOUT_SECONDS
        return _owned(await self._redis.eval(KILL, 2, *keys, member, now, oldest, DEAD_MAX_JOBS))

    async def delete(self, source: SortedSet, member: bytes) -> bool:
        return int(await self._redis.zrem(self._keys.key(source.value), member)) == 1

    async def push_once(self, guard: str, queue: str, payload: bytes, *, mark: bytes) -> bytes:
        """LPUSH a new job unless `guard` was used before (by any caller, any replica); the
        guard keeps the first caller's `mark`. Returns the guard's value: `mark` when this call
        pushed, else the mark of the call that did."""
        keys = [self._keys.key(f"sidekiq-supervisor:{guard}"), self._keys.queues]
        keys.append(self._keys.queue(queue))
        found = await self._redis.eval(
            PUSH_ONCE, 3, *keys, REQUEUE_GUARD_TTL_SECONDS, queue, payload, mark
        )
        # Never nil: the script set the guard or read it, and keys do not expire mid-script.
        return found.encode() if isinstance(found, str) else bytes(found)

    async def apply(
        self, source: SortedSet, action: Action, member: bytes, *, milliseconds: bool
    ) -> bool:
        """One action on one exact member; True when this call did it."""
        if action is Action.RETRY:
            return await self.move_to_queue(source, member, milliseconds=milliseconds)
        if action is Action.KILL:
            return await self.kill(source, member)
        return await self.delete(source, member)

    async def apply_to_keys(
        self, source: SortedSet, action: Action, keys: Iterable[EntryKey], *, milliseconds: bool
    ) -> ActionResult:
        """One action on each addressed entry; a key whose entry is gone is `missed`."""
        done, missed = 0, []
        for key in keys:
            members = await self.members_at(source, key)
            moved = [
                await self.apply(source, action, m, milliseconds=milliseconds) for m in members
            ]
            done += sum(moved)
            if not any(moved):
                missed.append(key)
        return ActionResult(done, tuple(missed), more=False)

    async def apply_to_all(
        self, source: SortedSet, action: Action, *, limit: int, milliseconds: bool
    ) -> ActionResult:
        """The action on the set's entries, lowest score first, `limit` at most, a bounded
        page at a time; `more` says entries are left."""
        done = 0
        while done < limit:
            members = await self.first_members(source, min(BULK_PAGE, limit - done))
            if not members:
                return ActionResult(done, (), more=False)
            for member in members:
                done += await self.apply(source, action, member, milliseconds=milliseconds)
        return ActionResult(done, (), more=bool(await self.first_members(source, 1)))

    async def delete_from_queue(self, queue: str, raw: bytes) -> bool:
        """Delete one waiting job by its exact bytes (LREM count 1, as the Web UI does)."""
        # redis-py types `value` as str, but sends bytes unchanged (the exact payload matters).
        removed = await self._redis.lrem(self._keys.queue(queue), 1, raw)  # type: ignore[arg-type]
        return int(removed) == 1

    async def first_members(self, source: SortedSet, count: int) -> list[bytes]:
        """The `count` lowest-scored members (a bounded read, for bulk actions)."""
        found = await self._redis.zrange(self._keys.key(source.value), 0, count - 1)
        return [bytes(member) for member in found if isinstance(member, bytes)]

    async def signal(self, identities: Iterable[str], signal: Signal) -> int:
        """Queue a signal for each process (read at its next heartbeat), as the Web UI does."""
        count = 0
        async with self._redis.pipeline(transaction=True) as pipe:
            for identity in identities:
                pipe.lpush(self._keys.signals(identity), signal.value)
                pipe.expire(self._keys.signals(identity), 60)
                count += 1
            await pipe.execute()
        return count


def _owned(reply: object) -> bool:
    """A script's 1 means this call did the move; 0 means someone else already had."""
    return reply == 1


def _jid_of(member: bytes) -> str | None:
    try:
        job = orjson.loads(member)
    except orjson.JSONDecodeError:
        return None
    return job.get("jid") if isinstance(job, dict) else None


@dataclass(frozen=True, slots=True)
class DrainStatus:
    """Where a host's drain stands; `drained` once it may be stopped safely."""

    host: str
    processes: int
    quieting: int
    running: int
    queues: tuple[str, ...]
    queued_jobs: int | None
    drained: bool


async def drain_host(
    redis: Redis, keys: Keys, host: str, *, wait_for_queues: bool = False
) -> DrainStatus:
    """Quiet every Sidekiq process on `host` (again, until its heartbeat says quiet), then
    report whether it still runs jobs and, if asked, whether the queues it serves are empty.
    Call it in a loop from the pod's preStop hook until `drained`."""
    snapshot = await read_snapshot(redis, keys)
    mine = [process for process in snapshot.processes if process.hostname == host]
    identities = {process.identity for process in mine}
    loud = [process.identity for process in mine if not process.quiet]
    if loud:
        await Control(redis, keys).signal(loud, Signal.QUIET)
    running = sum(1 for job in snapshot.busy_jobs if job.process in identities)
    served = tuple(sorted({queue for process in mine for queue in process.queues}))
    sizes = {queue.name: queue.size for queue in snapshot.queues}
    queued = sum(sizes.get(queue, 0) for queue in served) if wait_for_queues else None
    drained = not loud and running == 0 and not queued
    return DrainStatus(host, len(mine), len(loud), running, served, queued, drained)
