"""JobManager, named as in the seed: a string filter searches the arguments."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain import JobFilter
from app.manager import JobManager, percentiles
from app.store.db import create_sessionmaker
from tests.api.test_jobs_read import lifecycle, seed


async def test_seed_methods_split_jobs_by_their_latest_status(engine: AsyncEngine) -> None:
    await seed(
        engine,
        lifecycle("waiting", start=0, arguments='["invoice",1]'),
        lifecycle("running", start=1, wait=1, arguments='["invoice",2]'),
        lifecycle("finished", start=2, wait=1, run=4, arguments='["report",3]'),
    )
    manager = JobManager(create_sessionmaker(engine))

    async def jids(page_items: object) -> list[str]:
        return [job.jid for job in page_items]  # type: ignore[attr-defined]

    assert await jids((await manager.queued_jobs()).items) == ["waiting"]
    assert await jids((await manager.uncompleted_jobs()).items) == ["running"]
    assert await jids((await manager.completed_jobs()).items) == ["finished"]
    assert await jids((await manager.jobs("invoice")).items) == ["running", "waiting"]
    assert await jids((await manager.jobs(JobFilter(queue="nope"))).items) == []

    total = await manager.queued_to_completion_duration("report")
    run = await manager.completed_jobs_duration()
    assert [job.jid for job in total.items] == ["finished"]
    assert (total.percentiles.count, total.percentiles.p50) == (1, 5.0)
    assert (run.measure, run.percentiles.max) == ("started_to_completed", 4.0)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    found = percentiles(values)
    assert (found.p50, found.p90, found.p95, found.p99, found.max) == (50, 90, 95, 99, 100)
    assert percentiles([]).count == 0
    assert percentiles([]).p50 is None
