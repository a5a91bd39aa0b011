"""Dependency aliases for routes (SettingsDep, ManagerDep, ...) and the credential checks."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.access import OPEN, LoginThrottle, Principal, from_authorization
from app.config import Settings
from app.domain import EventLimits, Snapshot
from app.errors import Forbidden, InvalidInput, Unauthorized
from app.ingest.writer import EventWriter
from app.manager import JobManager
from app.metrics.collector import SidekiqCollector
from app.metrics.jobs import JobMetrics
from app.sidekiq.browse import translate_redis_errors
from app.sidekiq.keys import Keys
from app.sidekiq.reader import read_snapshot

MISSING_TOKEN = "this endpoint needs 'Authorization: Bearer <token>' ({setting})"
WRONG_TOKEN = "the bearer token is not valid for this endpoint ({setting})"


@dataclass(frozen=True, slots=True)
class Resources:
    """What the lifespan built; routes reach it through the dependencies below."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    writer: EventWriter
    manager: JobManager
    event_limits: EventLimits
    collector: SidekiqCollector
    keys: Keys
    job_metrics: JobMetrics
    session_key: bytes
    login_throttle: LoginThrottle


def resources(request: Request) -> Resources:
    found: Resources = request.app.state.resources
    return found


def check_bearer(authorization: str, token: SecretStr | None, setting: str) -> None:
    """Nothing when `token` is unset (development); else the Authorization header must carry it."""
    if token is None:
        return
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise Unauthorized(MISSING_TOKEN.format(setting=setting))
    if not hmac.compare_digest(value.strip().encode(), token.get_secret_value().encode()):
        raise Unauthorized(WRONG_TOKEN.format(setting=setting))


NO_CREDENTIALS = (
    "this endpoint needs credentials: 'Authorization: Bearer <token>' (SUPERVISOR_ADMIN_TOKEN or "
    "SUPERVISOR_READ_TOKEN) or basic auth (a SUPERVISOR_USERS user, or any name with a token)"
)
READ_ONLY = "{name} has the read-only role; this needs an admin (SUPERVISOR_ADMIN_TOKEN or USERS)"


def caller(request: Request) -> Principal:
    """The API caller from its Authorization header; everyone is an admin when no credentials
    are configured (development)."""
    settings = resources(request).settings
    if not settings.has_credentials:
        return OPEN
    found = from_authorization(settings, request.headers.get("authorization", ""))
    if found is None:
        raise Unauthorized(NO_CREDENTIALS)
    return found


def require_admin(request: Request) -> None:
    """State-changing routes: the admin role."""
    who = caller(request)
    if not who.can_act:
        raise Forbidden(READ_ONLY.format(name=who.name))


def require_reader(request: Request) -> None:
    """The read API: either role."""
    caller(request)


ResourcesDep = Annotated[Resources, Depends(resources)]
BAD_LIMIT = "must be between 1 and {maximum}"


def page_limit(found: ResourcesDep, limit: int | None = None) -> int:
    """`limit` from the query: SUPERVISOR_PAGE_SIZE by default, at most MAX_PAGE_SIZE."""
    maximum = found.settings.MAX_PAGE_SIZE
    if limit is None:
        return found.settings.PAGE_SIZE
    if not 1 <= limit <= maximum:
        raise InvalidInput({"limit": BAD_LIMIT.format(maximum=maximum)})
    return limit


LimitDep = Annotated[int, Depends(page_limit)]


def _manager(request: Request) -> JobManager:
    return resources(request).manager


ManagerDep = Annotated[JobManager, Depends(_manager)]


@dataclass(frozen=True, slots=True)
class CurrentSnapshot:
    snapshot: Snapshot
    from_sampler: bool


async def current_snapshot(found: ResourcesDep) -> CurrentSnapshot:
    """The sampler's snapshot while younger than one sample interval, else a fresh read."""
    latest = found.collector.snapshot
    if latest is not None:
        age = time.time() - latest.taken_at.timestamp()
        if age < found.settings.SAMPLE_INTERVAL_SECONDS:
            return CurrentSnapshot(latest, from_sampler=True)
    with translate_redis_errors(found.settings.RETRY_AFTER_SECONDS):
        return CurrentSnapshot(await read_snapshot(found.redis, found.keys), from_sampler=False)


SnapshotDep = Annotated[CurrentSnapshot, Depends(current_snapshot)]
