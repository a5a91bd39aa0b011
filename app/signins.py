"""Sign-in state every replica shares through Redis: failed sign-ins counted per account and per
client address (the throttle), and GUI sessions ended by signing out. Every Redis call is bounded
by SUPERVISOR_REDIS_TIMEOUT_SECONDS; without an answer a process uses what it knows itself."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.sidekiq.keys import Keys

log = logging.getLogger(__name__)

FAILURES_KEY = "sidekiq-supervisor:sign-in-failures:{subject}"
REVOKED_KEY = "sidekiq-supervisor:revoked-session:{session_id}"
REDIS_DOWN = "sign-in state: Redis did not answer (%r); this process counts alone for %g s"
LOCAL_ENTRIES = 10_000  # bounded memory under a spray of addresses, names or sign-outs
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Attempt:
    """A sign-in: the account name it claims (None for a bearer token) and the client address."""

    account: str | None
    client: str

    def subjects(self) -> tuple[str, ...]:
        """What a failure counts against. Names are hashed: keys stay short and hold no input."""
        found = [f"client:{self.client}"]
        if self.account is not None:
            found.append("account:" + hashlib.sha256(self.account.encode()).hexdigest()[:32])
        return tuple(found)


class LoginThrottle:
    """Failed sign-ins per subject in this process: past `limit` within `window_seconds`, the
    subject waits (a password guesser gets a handful of tries a minute, a typo costs nothing)."""

    def __init__(self, limit: int = 10, window_seconds: float = 300.0) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self._failures: dict[str, deque[float]] = {}

    def wait_seconds(self, subject: str) -> int:
        """0 when `subject` may try now, else how long until it may."""
        recent = self._recent(subject)
        if len(recent) < self.limit:
            return 0
        return max(1, int(recent[0] + self.window_seconds - time.monotonic()) + 1)

    def failed(self, subject: str) -> None:
        self._recent(subject).append(time.monotonic())
        if len(self._failures) > LOCAL_ENTRIES:
            self._failures.pop(next(iter(self._failures)))

    def _recent(self, subject: str) -> deque[float]:
        found = self._failures.setdefault(subject, deque(maxlen=self.limit))
        while found and found[0] < time.monotonic() - self.window_seconds:
            found.popleft()
        return found


class SignIns:
    """The throttle and the revoked sessions, in Redis (one count for every replica) and in
    this process (what it falls back to while Redis cannot answer)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        timeout_seconds: float,
        limit: int = 10,
        window_seconds: int = 300,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._timeout_seconds = timeout_seconds
        self.limit = limit
        self.window_seconds = window_seconds
        self._local = LoginThrottle(limit, window_seconds)
        self._revoked: dict[str, float] = {}
        self._redis_skipped_until = 0.0

    async def wait_seconds(self, attempt: Attempt) -> int:
        """0 when `attempt` may be checked now, else how long until it may."""
        subjects = attempt.subjects()
        local = max(self._local.wait_seconds(subject) for subject in subjects)
        shared = await self._ask(lambda: self._shared_wait(subjects))
        return max(local, shared or 0)

    async def failed(self, attempt: Attempt) -> None:
        """Count a failure against the account and the address, here and in Redis."""
        subjects = attempt.subjects()
        for subject in subjects:
            self._local.failed(subject)
        await self._ask(lambda: self._count(subjects))

    async def revoke(self, session_id: str, seconds: int) -> None:
        """End a session for its remaining `seconds` (its cookie may outlive the sign-out)."""
        self._revoked[session_id] = time.monotonic() + seconds
        self._forget_expired_revocations()
        key = self._keys.key(REVOKED_KEY.format(session_id=session_id))
        await self._ask(lambda: self._redis.set(key, 1, ex=max(1, seconds)))

    async def is_revoked(self, session_id: str) -> bool:
        """Whether a sign-out ended this session. While Redis cannot answer, only this process's
        own sign-outs are known: the cookie is accepted (see the README's Safety part)."""
        if self._revoked.get(session_id, 0.0) > time.monotonic():
            return True
        key = self._keys.key(REVOKED_KEY.format(session_id=session_id))
        return bool(await self._ask(lambda: self._redis.exists(key)))

    async def _ask(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """`call`'s answer, None when Redis fails or is slow; then Redis is left alone for one
        timeout, so an outage does not make every request wait that long."""
        if time.monotonic() < self._redis_skipped_until:
            return None
        try:
            async with asyncio.timeout(self._timeout_seconds):
                return await call()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning(REDIS_DOWN, exc, self._timeout_seconds)
            self._redis_skipped_until = time.monotonic() + self._timeout_seconds
            return None

    async def _shared_wait(self, subjects: Iterable[str]) -> int:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in self._failure_keys(subjects):
                pipe.get(key)
                pipe.pttl(key)
            replies = await pipe.execute()
        pairs = zip(replies[::2], replies[1::2], strict=True)
        return max(self._wait(count, ttl_ms) for count, ttl_ms in pairs)

    def _wait(self, count: Any, ttl_ms: Any) -> int:
        if count is None or int(count) < self.limit:
            return 0
        return max(1, math.ceil(int(ttl_ms) / 1000)) if int(ttl_ms) > 0 else self.window_seconds

    async def _count(self, subjects: Iterable[str]) -> None:
        # A fixed window per subject: the first failure starts it (SET NX EX), later ones only
        # add to it, and the key expires with the window, so nothing grows.
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in self._failure_keys(subjects):
                pipe.set(key, 0, ex=self.window_seconds, nx=True)
                pipe.incr(key)
            await pipe.execute()

    def _failure_keys(self, subjects: Iterable[str]) -> list[str]:
        return [self._keys.key(FAILURES_KEY.format(subject=subject)) for subject in subjects]

    def _forget_expired_revocations(self) -> None:
        if len(self._revoked) <= LOCAL_ENTRIES:
            return
        now = time.monotonic()
        for session_id in [sid for sid, until in self._revoked.items() if until <= now]:
            del self._revoked[session_id]
        while len(self._revoked) > LOCAL_ENTRIES:
            self._revoked.pop(next(iter(self._revoked)))
