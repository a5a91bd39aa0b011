"""Dependency aliases for routes (SettingsDep, ManagerDep, ...) and the credential checks."""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.domain import EventLimits
from app.errors import Unauthorized
from app.ingest.writer import EventWriter
from app.manager import JobManager
from app.metrics.collector import SidekiqCollector
from app.metrics.jobs import JobMetrics
from app.sidekiq.keys import Keys

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


def check_admin(authorization: str, token: SecretStr | None) -> None:
    """Bearer <token>, or HTTP basic auth with the token as password (any user name)."""
    scheme, _, value = authorization.partition(" ")
    if token is not None and scheme.lower() == "basic":
        try:
            _user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            password = ""
        if hmac.compare_digest(password.encode(), token.get_secret_value().encode()):
            return
        raise Unauthorized(WRONG_TOKEN.format(setting="SUPERVISOR_ADMIN_TOKEN"))
    check_bearer(authorization, token, "SUPERVISOR_ADMIN_TOKEN")


def require_admin(request: Request) -> None:
    """State-changing routes: the admin credentials when configured."""
    check_admin(request.headers.get("authorization", ""), resources(request).settings.ADMIN_TOKEN)


def require_reader(request: Request) -> None:
    """The read API: the same credentials (a read-only role arrives with the GUI)."""
    check_admin(request.headers.get("authorization", ""), resources(request).settings.ADMIN_TOKEN)


ResourcesDep = Annotated[Resources, Depends(resources)]


def _manager(request: Request) -> JobManager:
    return resources(request).manager


ManagerDep = Annotated[JobManager, Depends(_manager)]
