"""The read API: filters, keyset pagination, one job with its timeline, durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.domain import EventName, JobEvent
from app.main import create_app
from app.store.ledger_writes import write_batch
from tests.conftest import make_settings

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def lifecycle(
    jid: str,
    *,
    start: int,
    wait: float | None = None,
    run: float | None = None,
    queue: str = "default",
    job_class: str = "HardJob",
    arguments: str = "[]",
) -> list[JobEvent]:
    """queued at T0+start seconds, then started after `wait`, then complete after `run`."""
    at = T0 + timedelta(seconds=start)
    described: dict[str, Any] = {"job_class": job_class, "queue": queue, "arguments": arguments}
    events = [JobEvent(jid=jid, event=EventName.QUEUED, at=at, received_at=at, **described)]
    if wait is not None:
        at += timedelta(seconds=wait)
        events.append(
            JobEvent(jid=jid, event=EventName.STARTED, at=at, received_at=at, **described)
        )
        if run is not None:
            at += timedelta(seconds=run)
            events.append(
                JobEvent(jid=jid, event=EventName.COMPLETE, at=at, received_at=at, **described)
            )
    return events


async def seed(engine: AsyncEngine, *jobs: list[JobEvent]) -> None:
    async with engine.connect() as conn:
        await write_batch(conn, [event for job in jobs for event in job])


async def test_list_is_newest_first_and_pages_by_cursor(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    await seed(engine, *(lifecycle(f"job{n:02d}", start=n) for n in range(7)))
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/jobs", params=params)).json()
        seen += [item["jid"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"job{n:02d}" for n in reversed(range(7))]


async def test_filters_by_status_queue_class_and_time(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    await seed(
        engine,
        lifecycle("q1", start=0, queue="mail", job_class="Mailer"),
        lifecycle("s1", start=10, wait=1, queue="mail", job_class="Mailer"),
        lifecycle("c1", start=20, wait=1, run=2, queue="critical"),
    )

    async def jids(**params: Any) -> list[str]:
        response = await client.get("/api/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        return [item["jid"] for item in response.json()["items"]]

    assert await jids(status="queued") == ["q1"]
    assert await jids(status=["queued", "started"]) == ["s1", "q1"]
    assert await jids(queue="mail") == ["s1", "q1"]
    assert await jids(job_class="HardJob") == ["c1"]
    assert await jids(since=(T0 + timedelta(seconds=5)).isoformat()) == ["c1", "s1"]
    assert await jids(until=(T0 + timedelta(seconds=5)).isoformat()) == ["q1"]


@pytest.mark.parametrize(
    ("needle", "expected"),
    [
        ("50%", ["percent"]),
        ("a_b", ["underscore"]),
        ("it's", ["quote"]),
        ('"x"', ["dquote"]),
        ("\\", ["backslash"]),
        ("%", ["percent"]),
        ("_", ["underscore"]),
    ],
)
async def test_argument_substring_treats_wildcards_and_quotes_as_text(
    client: AsyncClient, engine: AsyncEngine, needle: str, expected: list[str]
) -> None:
    await seed(
        engine,
        lifecycle("percent", start=1, arguments='["50% off"]'),
        lifecycle("underscore", start=2, arguments='["a_b"]'),
        lifecycle("plain", start=3, arguments='["aXb 50X off"]'),
        lifecycle("quote", start=4, arguments='["it\'s"]'),
        lifecycle("dquote", start=5, arguments='["say","x"]'),
        lifecycle("backslash", start=6, arguments='["C:\\\\dir"]'),
    )
    response = await client.get("/api/v1/jobs", params={"arguments": needle})
    assert [item["jid"] for item in response.json()["items"]] == expected


async def test_job_detail_has_the_timeline_and_durations(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    await seed(engine, lifecycle("d1", start=0, wait=1.5, run=2.25))
    detail = (await client.get("/api/v1/jobs/d1")).json()
    assert [entry["event"] for entry in detail["timeline"]] == ["queued", "started", "complete"]
    assert (detail["wait_seconds"], detail["run_seconds"], detail["total_seconds"]) == (
        1.5,
        2.25,
        3.75,
    )
    missing = await client.get("/api/v1/jobs/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "detail": "no job 'nope' in the ledger"}


async def test_durations_list_completed_jobs_with_percentiles(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    await seed(
        engine,
        *(lifecycle(f"r{n}", start=n * 10, wait=1, run=n + 1) for n in range(10)),
        lifecycle("unfinished", start=200, wait=1),
    )
    body = (await client.get("/api/v1/jobs/durations", params={"limit": 5})).json()
    assert [item["jid"] for item in body["items"]] == ["r9", "r8", "r7", "r6", "r5"]
    assert body["started_to_completed"] == {
        "count": 10,
        "p50": 5.0,
        "p90": 9.0,
        "p95": 10.0,
        "p99": 10.0,
        "max": 10.0,
    }
    assert body["queued_to_completed"]["p50"] == 6.0
    assert body["next_cursor"] is not None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"status": "exploded"}, "status"),
        ({"since": "yesterday"}, "since"),
    ],
)
async def test_bad_query_parameters_are_422_naming_the_field(
    client: AsyncClient, params: dict[str, Any], field: str
) -> None:
    response = await client.get("/api/v1/jobs", params=params)
    assert response.status_code == 422
    assert any(name.startswith(field) for name in response.json()["fields"])


async def test_a_forged_cursor_is_400(client: AsyncClient) -> None:
    response = await client.get("/api/v1/jobs", params={"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert "cursor" in response.json()["detail"]


@pytest.fixture
def admin_settings(database_url: str) -> Settings:
    return make_settings(database_url, ADMIN_TOKEN="admin-secret")


async def test_read_api_needs_the_admin_token_when_set(
    admin_settings: Settings, engine: AsyncEngine
) -> None:
    from httpx import ASGITransport

    application = create_app(admin_settings)
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://t") as http:
            refused = await http.get("/api/v1/jobs")
            allowed = await http.get(
                "/api/v1/jobs", headers={"Authorization": "Bearer admin-secret"}
            )
    assert refused.status_code == 401
    assert allowed.status_code == 200


DIGITS = " UNION ALL ".join(f"SELECT {d} AS d" for d in range(10))
# 100,000 ledger rows with 500-byte arguments, in one portable INSERT ... SELECT.
BULK_ROWS = f"""
INSERT INTO jobs (jid, job_class, queue, arguments, arguments_truncated, status, status_key,
                  first_seen_at, last_event_at, completed_at, attempts)
SELECT CONCAT('bulk', a.d, b.d, c.d, d.d, e.d), 'BulkJob', 'bulk', REPEAT('x', 500), 0,
       'complete', 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 1
FROM ({DIGITS}) a CROSS JOIN ({DIGITS}) b CROSS JOIN ({DIGITS}) c
     CROSS JOIN ({DIGITS}) d CROSS JOIN ({DIGITS}) e
"""


async def test_an_argument_search_past_its_time_limit_answers_stopped(mysql_url: str) -> None:
    """No index serves a substring: on MySQL/MariaDB a search that would read too many rows
    stops at SUPERVISOR_SEARCH_TIMEOUT_SECONDS and says so, and the connection stays usable."""
    from httpx import ASGITransport

    from app.store.db import create_engine

    settings = make_settings(mysql_url, SEARCH_TIMEOUT_SECONDS=0.005)
    engine = create_engine(settings)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("DELETE FROM jobs")
        await conn.exec_driver_sql(BULK_ROWS)
    application = create_app(settings)
    try:
        async with application.router.lifespan_context(application):
            transport = ASGITransport(app=application)
            async with AsyncClient(transport=transport, base_url="http://t") as http:
                stopped = await http.get("/api/v1/jobs", params={"arguments": "no such needle"})
                listed = await http.get("/api/v1/jobs", params={"limit": 2})
                durations = await http.get("/api/v1/jobs/durations", params={"arguments": "zz"})
    finally:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DELETE FROM jobs")
        await engine.dispose()
    assert stopped.status_code == 200
    assert stopped.json()["search_stopped"] is True
    assert stopped.json()["items"] == []
    assert listed.json()["search_stopped"] is False
    assert len(listed.json()["items"]) == 2
    assert durations.json()["search_stopped"] is True
