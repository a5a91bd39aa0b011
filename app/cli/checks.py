"""`sidekiq-supervisor health`: the original supervisor's queue:health, a line per check, exit
0 or 1."""

from __future__ import annotations

from redis.asyncio import Redis

from app.api.health import Check, check_database, check_redis
from app.config import Settings
from app.store.db import create_engine, describe


async def run_checks(settings: Settings) -> bool:
    """Print each check; True when all passed."""
    engine = create_engine(settings, name="sidekiq-supervisor-health")
    redis = Redis.from_url(settings.REDIS_URL, client_name="sidekiq-supervisor-health")
    try:
        checks = [
            await check_database(engine, settings.DB_TIMEOUT_SECONDS),
            await check_redis(redis, settings.REDIS_TIMEOUT_SECONDS),
        ]
    finally:
        await redis.aclose()
        await engine.dispose()
    where = {"database": describe(engine)["url"], "redis": _redis_where(settings.REDIS_URL)}
    for check in checks:
        print(_line(check, where[check.name]))  # noqa: T201 - this command's output
    return all(check.ok for check in checks)


def _line(check: Check, where: str) -> str:
    state = "ok  " if check.ok else "FAIL"
    return f"{state} {check.name:<8} {where}  {check.detail} ({check.milliseconds:.1f} ms)"


def _redis_where(url: str) -> str:
    # Never print a password that may sit in the URL.
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
