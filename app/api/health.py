"""Liveness (/healthz, no I/O) and readiness (/readyz: database SELECT 1 and Redis PING)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.schemas import RETRY_AFTER
from app.deps import ResourcesDep
from app.store.db import ping

router = APIRouter(tags=["health"])


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    milliseconds: float


async def check_database(engine: AsyncEngine, limit_seconds: float) -> Check:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit_seconds):
            await ping(engine)
    except (DBAPIError, OSError, TimeoutError) as exc:
        return Check("database", False, _reason(exc), _ms(started))
    return Check("database", True, "SELECT 1", _ms(started))


async def check_redis(redis: Redis, limit_seconds: float) -> Check:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit_seconds):
            await redis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        return Check("redis", False, _reason(exc), _ms(started))
    return Check("redis", True, "PING", _ms(started))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer before the timeout"
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


@router.get("/healthz", summary="The process is alive (no I/O)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database and Redis answer (503 when one does not)",
    responses={
        503: {"description": "A dependency is down; `checks` says which.", "headers": RETRY_AFTER}
    },
)
async def readyz(found: ResourcesDep) -> JSONResponse:
    timeout = found.settings.DB_TIMEOUT_SECONDS
    checks = await asyncio.gather(
        check_database(found.engine, timeout),
        check_redis(found.redis, found.settings.REDIS_TIMEOUT_SECONDS),
    )
    ready = all(check.ok for check in checks)
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": {c.name: {"ok": c.ok, "detail": c.detail, "ms": c.milliseconds} for c in checks},
    }
    if ready:
        return JSONResponse(body)
    retry_after = str(found.settings.RETRY_AFTER_SECONDS)
    return JSONResponse(body, status_code=503, headers={"Retry-After": retry_after})
