"""The Metrics page: per class and queue over a window (1h to 7d, like Sidekiq 7's), how many
jobs finished, succeeded and failed, the failure rate and run/wait percentiles, from at most
METRICS_WINDOW_MAX_JOBS of the window's newest finished jobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.deps import resources
from app.domain import Percentiles
from app.manager import percentiles
from app.store.job_stats import ClassStats, aggregate, finished_jobs
from app.store.tables import read_time
from app.web.auth import ViewerDep
from app.web.render import render

router = APIRouter()

Window = Literal["1h", "6h", "24h", "3d", "7d"]
WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "3d": timedelta(days=3),
    "7d": timedelta(days=7),
}
Sort = Literal[
    "class", "queue", "finished", "succeeded", "failed", "rate", "p50", "p95", "p99", "wait"
]
# Names sort A to Z; numbers from the largest, where trouble shows first.
SORT_LABELS: dict[str, str] = {
    "class": "Class",
    "queue": "Queue",
    "finished": "Finished",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "rate": "Failure rate",
    "p50": "Run p50",
    "p95": "Run p95",
    "p99": "Run p99",
    "wait": "Wait p95",
}


@dataclass(frozen=True, slots=True)
class MetricsRow:
    """One (class, queue) pair's line on the page."""

    stats: ClassStats
    run: Percentiles
    wait: Percentiles

    def sort_key(self, sort: str) -> tuple[float | str, ...]:
        s = self.stats
        numbers: dict[str, float | None] = {
            "finished": s.finished,
            "succeeded": s.succeeded,
            "failed": s.failures,
            "rate": s.failure_rate,
            "p50": self.run.p50,
            "p95": self.run.p95,
            "p99": self.run.p99,
            "wait": self.wait.p95,
        }
        if sort in numbers:
            # Largest first; rows without a value last; ties by name.
            value = numbers[sort]
            return (value is None, -(value or 0.0), s.job_class or "", s.queue or "")
        first, second = (s.queue, s.job_class) if sort == "queue" else (s.job_class, s.queue)
        return (first or "", second or "")


def rows_of(stats: list[ClassStats], sort: str) -> list[MetricsRow]:
    rows = [MetricsRow(s, percentiles(s.run_seconds), percentiles(s.wait_seconds)) for s in stats]
    return sorted(rows, key=lambda row: row.sort_key(sort))


def _total(stats: list[ClassStats]) -> ClassStats:
    """Every class and queue together, for the cards above the table."""
    total = ClassStats(None, None)
    for part in stats:
        total.succeeded += part.succeeded
        total.failed += part.failed
        total.dead += part.dead
    return total


@router.get("/metrics")
async def metrics_page(
    request: Request,
    _who: ViewerDep,
    window: Annotated[Window, Query()] = "24h",
    sort: Annotated[Sort, Query()] = "finished",
) -> HTMLResponse:
    found = resources(request)
    cap = found.settings.METRICS_WINDOW_MAX_JOBS
    until = datetime.now(UTC)
    async with found.sessions() as session:
        jobs = await finished_jobs(
            session, since=until - WINDOWS[window], until=until, limit=cap + 1
        )
    capped = len(jobs) > cap
    jobs = jobs[:cap]
    stats = aggregate(jobs)
    return await render(
        request,
        "metrics.html",
        active="metrics",
        title="Metrics",
        window=window,
        windows=list(WINDOWS),
        sort=sort,
        sort_labels=SORT_LABELS,
        rows=rows_of(stats, sort),
        total=_total(stats),
        capped=capped,
        cap=cap,
        oldest=read_time(jobs[-1].last_event_at) if capped else None,
    )
