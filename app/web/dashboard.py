"""The Dashboard: the summary bar, a live graph fed by /sidekiq/stats.json every few seconds,
history graphs from the sample tables (/sidekiq/history.json) and Redis's health."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.deps import resources
from app.domain import Snapshot
from app.sidekiq.reader import read_snapshot
from app.store.samples import totals_by_bucket
from app.web.auth import ViewerDep
from app.web.render import SECURITY_HEADERS, render, summary

router = APIRouter()

Range = Literal["1h", "6h", "24h", "3d", "7d", "30d"]
RANGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "3d": timedelta(days=3),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
HISTORY_POINTS = 240
REDIS_FIELDS = (
    "redis_version",
    "uptime_in_days",
    "connected_clients",
    "used_memory_human",
    "used_memory_peak_human",
    "maxmemory_policy",
)


@router.get("")
async def dashboard(request: Request, _who: ViewerDep) -> HTMLResponse:
    snapshot = await summary(request)
    # No summary means a fresh read of Redis just failed: asking it for INFO would wait again.
    redis_info = None if snapshot is None else await _redis_info(resources(request).redis)
    latency = _default_latency(snapshot)
    return await render(
        request,
        "dashboard.html",
        active="dashboard",
        title="Dashboard",
        snapshot=snapshot,
        redis_info=redis_info,
        default_latency=latency,
        ranges=list(RANGES),
    )


async def _redis_info(redis: Redis) -> dict[str, Any] | None:
    """Redis's version, uptime, clients and memory (Sidekiq's dashboard shows the same)."""
    try:
        info = await redis.info()
    except (RedisError, OSError):
        return None
    return {name: info.get(name) for name in REDIS_FIELDS}


def _default_latency(snapshot: Snapshot | None) -> float | None:
    if snapshot is None:
        return None
    return next((q.latency_seconds for q in snapshot.queues if q.name == "default"), 0.0)


@router.get("/stats.json")
async def live_stats(request: Request, _who: ViewerDep) -> JSONResponse:
    """What the live graph polls: one fresh read of Redis each call, as Sidekiq's /stats."""
    found = resources(request)
    snap = await read_snapshot(found.redis, found.keys)
    body = {
        "taken_at": snap.taken_at.timestamp(),
        "processed": snap.processed,
        "failed": snap.failed,
        "busy": snap.busy,
        "processes": len(snap.processes),
        "enqueued": snap.enqueued,
        "retries": snap.retries,
        "scheduled": snap.scheduled,
        "dead": snap.dead,
        "default_latency": _default_latency(snap),
    }
    return JSONResponse(body, headers=SECURITY_HEADERS)


@router.get("/history.json")
async def history(
    request: Request, _who: ViewerDep, range_: Annotated[Range, Query(alias="range")] = "24h"
) -> JSONResponse:
    """The sample tables over `range`, one sample per HISTORY_POINTS-th of it, as uPlot columns."""
    found = resources(request)
    until = datetime.now(UTC)
    span = RANGES[range_]
    async with found.sessions() as session:
        points = await totals_by_bucket(session, until - span, until, buckets=HISTORY_POINTS)
    body = {
        "range": range_,
        "bucket_seconds": int(span.total_seconds() // HISTORY_POINTS),
        "time": [p.sampled_at.timestamp() for p in points],
        "processed": [p.processed for p in points],
        "failed": [p.failed for p in points],
        "enqueued": [p.enqueued for p in points],
        "busy": [p.busy for p in points],
        "retry": [p.retry for p in points],
        "dead": [p.dead for p in points],
    }
    return JSONResponse(body, headers=SECURITY_HEADERS)
