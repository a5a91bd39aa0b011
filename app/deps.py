"""Dependency aliases for routes (SettingsDep, ManagerDep, ...) and the credential checks."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.domain import EventLimits
from app.errors import Unauthorized
from app.ingest.writer import EventWriter
from app.manager import JobManager
from app.metrics.collector import SidekiqCollector
from app.sidekiq.keys import Keys

MISSING_TOKEN = "this endpoint needs 'Authorization: Bearer <token>' ({setting})"
WRONG_TOKEN = "the bearer token is not valid for this endpoint ({setting})"


@dataclass(frozen=True, slots=True)
class Resources:
    """What the lifespan built; routes reach it through the dependencies below."""

    settings: Settings
    engine: AsyncEngine
    redis: Redis
    writer: EventWriter
    manager: JobManager
    event_limits: EventLimits
    collector: SidekiqCollector
    keys: Keys


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


def require_reader(request: Request) -> None:
    authorization = request.headers.get("authorization", "")
    check_bearer(authorization, resources(request).settings.ADMIN_TOKEN, "SUPERVISOR_ADMIN_TOKEN")


ResourcesDep = Annotated[Resources, Depends(resources)]


def _manager(request: Request) -> JobManager:
    return resources(request).manager


ManagerDep = Annotated[JobManager, Depends(_manager)]
