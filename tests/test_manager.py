"""JobManager, named as in the original supervisor: a string filter searches the arguments."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain import EventName, JobEvent, JobFilter, JobStatus
from app.errors import Unavailable
from app.manager import REQUEUED_AS, JobManager, percentiles
from app.sidekiq.keys import Keys
from app.store.db import create_engine, create_sessionmaker
from app.store.ledger_writes import write_batch
from tests.api.test_actions import queued_payloads, started
from tests.api.test_jobs_read import lifecycle, seed
from tests.conftest import make_settings, through
from tests.ingest.tcp_proxy import TcpProxy
from tests.sidekiq.layouts import V7, process

# A hang fails the test; slowness does not.
BOUND_SECONDS = 10.0


async def test_original_methods_split_jobs_by_their_latest_status(engine: AsyncEngine) -> None:
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


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
async def test_a_requeue_whose_record_failed_is_recorded_by_its_retry(
    engine: AsyncEngine, redis: Redis, mysql_proxy: TcpProxy, mysql_url: str
) -> None:
    """The database goes away between the push and its record: 503, and the retry records
    the jid the first call pushed (a dry run in between writes nothing), pushing nothing."""
    original = "a" * 24
    await started(engine, original)
    behind = create_engine(make_settings(through(mysql_url, mysql_proxy)))
    manager = JobManager(create_sessionmaker(behind), redis=redis, retry_after_seconds=7)

    def cut_after_push(response: object, **options: object) -> object:
        mysql_proxy.cut()  # PUSH_ONCE is the only script a requeue runs
        return response

    redis.set_response_callback("EVAL", cut_after_push)
    try:
        async with asyncio.timeout(BOUND_SECONDS):
            with pytest.raises(Unavailable) as refused:
                await manager.restart_uncompleted_jobs(dry_run=False)
        assert refused.value.status == 503
        assert refused.value.headers == {"Retry-After": "7"}
        [pushed] = await queued_payloads(redis)
        new_jid = str(pushed["jid"])
        mysql_proxy.restore()
        redis.set_response_callback("EVAL", lambda response, **options: response)

        dry = await manager.restart_uncompleted_jobs(dry_run=True)
        assert [item.job.jid for item in dry.items] == [original]
        assert await manager.job(new_jid) is None
        # The new job runs before the retry: the record, dated at the push, must not undo that.
        now = datetime.now(UTC)
        async with engine.connect() as conn:
            await write_batch(conn, [JobEvent(new_jid, EventName.STARTED, now, now)])
        busy, beat = [(new_jid, "default", time.time())], time.time()
        await process(
            redis, Keys(), V7, hostname="w", concurrency=5, queues=["default"], busy=busy, beat=beat
        )

        async with asyncio.timeout(BOUND_SECONDS):
            retried = await manager.restart_uncompleted_jobs(dry_run=False)
        [item] = [item for item in retried.items if item.job.jid == original]
        assert item.new_jid == new_jid
        assert item.skipped == REQUEUED_AS.format(new_jid=new_jid)
        assert retried.requeued == []
        requeued = await manager.job(original)
        assert requeued is not None
        assert (requeued.status, requeued.requeued_as) == (JobStatus.REQUEUED, new_jid)
        attempt = await manager.job(new_jid)
        assert attempt is not None
        assert (attempt.status, attempt.queue) == (JobStatus.STARTED, "default")
        again = await manager.restart_uncompleted_jobs(dry_run=False)
        assert [item.job.jid for item in again.items] == [new_jid]  # running: skipped
        assert again.requeued == []
        assert [p["jid"] for p in await queued_payloads(redis)] == [new_jid]
    finally:
        await behind.dispose()
