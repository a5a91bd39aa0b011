"""Control actions against a real Sidekiq 6.4.1: a requeued job runs, a quiet signal quiets the
process, and retry-now moves a real retry entry into its queue exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from httpx import ASGITransport, AsyncClient

from app.domain import EventName, JobEvent
from app.main import create_app
from app.store.db import create_engine
from app.store.ledger_writes import write_batch
from tests.conftest import make_settings
from tests.sidekiq.real_sidekiq import REDIS_URL, RealSidekiq, job, start_sidekiq

pytestmark = pytest.mark.slow


@pytest.fixture
async def sidekiq(tmp_path: Path) -> AsyncIterator[RealSidekiq]:
    async with start_sidekiq(tmp_path) as running:
        yield running


@pytest.fixture
async def supervisor(sqlite_url: str) -> AsyncIterator[AsyncClient]:
    """The app on the embedded SQLite ledger, watching the real Sidekiq's Redis."""
    settings = make_settings(sqlite_url, REDIS_URL=REDIS_URL)
    engine = create_engine(settings)
    async with engine.begin() as conn:
        for table in ("jobs", "job_events"):
            await conn.exec_driver_sql(f"DELETE FROM {table}")
    await engine.dispose()
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_a_requeued_job_is_run_by_real_sidekiq(
    sidekiq: RealSidekiq, supervisor: AsyncClient, sqlite_url: str
) -> None:
    # The ledger says QuickJob "lost-one" started and never completed (its process died).
    at = datetime.now(UTC) - timedelta(minutes=1)
    engine = create_engine(make_settings(sqlite_url))
    events = [
        JobEvent(
            "lost-one", name, at, at, job_class="QuickJob", queue="default", arguments='["again"]'
        )
        for name in (EventName.QUEUED, EventName.STARTED)
    ]
    async with engine.connect() as conn:
        await write_batch(conn, events)
    await engine.dispose()

    answer = await supervisor.post("/api/v1/jobs/requeue", json={"dry_run": False})
    assert answer.json()["requeued"] == 1, answer.text
    new_jid = answer.json()["items"][0]["new_jid"]
    await sidekiq.wait_done(new_jid)
    original = (await supervisor.get("/api/v1/jobs/lost-one")).json()
    assert (original["status"], original["requeued_as"]) == ("requeued", new_jid)


async def test_a_quiet_signal_quiets_the_real_process(
    sidekiq: RealSidekiq, supervisor: AsyncClient
) -> None:
    answer = await supervisor.post("/api/v1/processes/quiet", params={"identity": sidekiq.identity})
    assert answer.status_code == 200, answer.text
    await sidekiq.wait_for_heartbeat(lambda beat: beat.quiet == "true", "the process to be quiet")
    stats = (await supervisor.get("/api/v1/processes")).json()
    assert [item["quiet"] for item in stats["items"]] == [True]


async def test_retry_now_moves_a_real_retry_entry_exactly_once(
    sidekiq: RealSidekiq, supervisor: AsyncClient
) -> None:
    [jid] = await sidekiq.push(job("FlakyJob", "default"))

    async def in_retry() -> bool:
        return jid in await sidekiq.jids_in("retry")

    await sidekiq.wait_until(in_retry, "the first failure to reach the retry set")
    page = (await supervisor.get("/api/v1/retries")).json()
    [entry] = [item for item in page["items"] if item["jid"] == jid]
    assert entry["error_class"] == "Boom"

    answers = await asyncio.gather(
        *(
            supervisor.post(
                "/api/v1/retries/actions", json={"action": "retry", "keys": [entry["key"]]}
            )
            for _ in range(4)
        )
    )
    assert sorted(a.json()["done"] for a in answers) == [0, 0, 0, 1]
    await sidekiq.wait_done(jid)  # the second run succeeds
    assert await sidekiq.jids_in("retry") == set()
    runs = await sidekiq.redis.get(f"supervisor-test:runs:{jid}")
    assert runs == b"2", "pushed once: exactly one more run"
    assert orjson.loads(page["items"][0]["raw"])["jid"] == jid
