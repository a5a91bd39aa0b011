"""The lifecycle routes: the original Faraday middleware's exact bytes, JSON bodies, batches,
credentials."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from app.store.tables import JobRow
from tests.conftest import make_settings

JID = "2f3a1c9e8b7d6a5f4e3d2c1b"
ARGUMENTS = '[0,"héllo & co=1+2 %20 \\"q\\" / 日本",{"nested":[1,2.5,null,true]}]'
# Byte for byte what Faraday 1.1.0 sends for the original middleware: keys
# sorted, space as +, every other byte outside [A-Za-z0-9.~_-] percent-encoded.
ENCODED_ARGUMENTS = (
    "%5B0%2C%22h%C3%A9llo+%26+co%3D1%2B2+%2520+%5C%22q%5C%22+%2F+%E6%97%A5%E6%9C%AC%22%2C%7B"
    "%22nested%22%3A%5B1%2C2.5%2Cnull%2Ctrue%5D%7D%5D"
)
ORIGINAL_QUEUED = f"arguments={ENCODED_ARGUMENTS}&job_class=HardJob&job_id={JID}&queue=default"
ORIGINAL_LIFECYCLE = f"arguments={ENCODED_ARGUMENTS}&job_class=HardJob&queue=default"
FARADAY = {
    "User-Agent": "Faraday v1.1.0",
    "Content-Type": "application/x-www-form-urlencoded",
    "Accept": "*/*",
}


async def job_row(engine: AsyncEngine, jid: str) -> dict[str, Any] | None:
    # A typed select, so SQLite's text timestamps come back as datetimes too.
    jobs = JobRow.__table__
    async with engine.connect() as conn:
        result = await conn.execute(select(jobs).where(jobs.c.jid == jid))
        row = result.mappings().first()
    return None if row is None else dict(row)


async def events_of(engine: AsyncEngine, jid: str) -> list[str]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT event FROM job_events WHERE jid = :jid ORDER BY at, id"), {"jid": jid}
        )
        return [row[0] for row in result]


async def test_original_middleware_bytes_walk_a_job_through_its_lifecycle(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    queued = await client.post("/api/v1/jobs", content=ORIGINAL_QUEUED, headers=FARADAY)
    assert queued.status_code == 201, queued.text
    assert queued.json() == {"job_id": JID, "event": "queued"}
    row = await job_row(engine, JID)
    assert row is not None
    assert (row["status"], row["job_class"], row["queue"]) == ("queued", "HardJob", "default")
    assert row["arguments"] == ARGUMENTS

    started = await client.post(
        f"/api/v1/jobs/{JID}/started", content=ORIGINAL_LIFECYCLE, headers=FARADAY
    )
    assert started.status_code == 201, started.text
    assert (await job_row(engine, JID) or {})["status"] == "started"

    complete = await client.post(
        f"/api/v1/jobs/{JID}/complete", content=ORIGINAL_LIFECYCLE, headers=FARADAY
    )
    assert complete.status_code == 201, complete.text
    row = await job_row(engine, JID)
    assert row is not None
    assert row["status"] == "complete"
    assert row["enqueued_at"] <= row["started_at"] <= row["completed_at"]
    assert await events_of(engine, JID) == ["queued", "started", "complete"]


async def test_json_bodies_are_accepted_like_forms(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    body = {"job_id": JID, "arguments": [1, "two"], "job_class": "HardJob", "queue": "critical"}
    assert (await client.post("/api/v1/jobs", json=body)).status_code == 201
    lifecycle = {"arguments": '[1,"two"]', "job_class": "HardJob", "queue": "critical"}
    assert (await client.post(f"/api/v1/jobs/{JID}/started", json=lifecycle)).status_code == 201
    assert (await client.post(f"/api/v1/jobs/{JID}/complete", json=lifecycle)).status_code == 201
    row = await job_row(engine, JID)
    assert row is not None
    assert (row["status"], row["queue"], row["arguments"]) == ("complete", "critical", '[1,"two"]')


async def test_started_for_an_unseen_job_creates_it(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    response = await client.post(
        f"/api/v1/jobs/{JID}/started", content=ORIGINAL_LIFECYCLE, headers=FARADAY
    )
    assert response.status_code == 201
    row = await job_row(engine, JID)
    assert row is not None
    assert (row["status"], row["enqueued_at"], row["attempts"]) == ("started", None, 1)


async def test_failed_records_the_error_and_richer_fields(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    started = {"at": 1_700_000_000.25, "process": "worker-1:42:abc", "retry_count": "0"}
    failed = {
        "at": 1_700_000_001_500,  # integer milliseconds, as Sidekiq 8 writes times
        "error_class": "RuntimeError",
        "error_message": "boom",
        "retry_count": "0",
    }
    assert (await client.post(f"/api/v1/jobs/{JID}/started", data=started)).status_code == 201
    assert (await client.post(f"/api/v1/jobs/{JID}/failed", data=failed)).status_code == 201
    row = await job_row(engine, JID)
    assert row is not None
    assert (row["status"], row["error_class"], row["error_message"]) == (
        "failed",
        "RuntimeError",
        "boom",
    )
    assert row["process"] == "worker-1:42:abc"
    assert row["attempts"] == 2  # retry_count 0 is the first retry: the second run
    assert row["started_at"].isoformat() == "2023-11-14T22:13:20.250000"
    assert row["failed_at"].isoformat() == "2023-11-14T22:13:21.500000"


async def test_batch_endpoint_stores_every_event_with_its_own_time(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    events = [
        {"event": "queued", "job_id": "b1", "at": "2026-01-01T00:00:00Z", "job_class": "A"},
        {"event": "started", "jid": "b1", "at": "2026-01-01T00:00:01Z", "job_class": "A"},
        {"event": "complete", "job_id": "b1", "at": "2026-01-01T00:00:03Z", "job_class": "A"},
        {"event": "scheduled", "job_id": "b2", "at": 1767225600.0, "scheduled_at": 1767229200},
    ]
    response = await client.post("/api/v1/events", json=events)
    assert response.status_code == 201, response.text
    assert response.json() == {"accepted": 4}
    first = await job_row(engine, "b1")
    second = await job_row(engine, "b2")
    assert first is not None
    assert second is not None
    assert first["status"] == "complete"
    assert (first["completed_at"] - first["enqueued_at"]).total_seconds() == 3
    assert second["status"] == "scheduled"
    assert second["scheduled_for"].isoformat() == "2026-01-01T01:00:00"


@pytest.fixture
def token_settings(database_url: str) -> Settings:
    return make_settings(database_url, INGEST_TOKEN="s3cret-ingest")


async def test_ingest_token_is_required_when_set(
    token_settings: Settings, engine: AsyncEngine
) -> None:
    application = create_app(token_settings)
    async with application.router.lifespan_context(application):
        async with AsyncClient(
            transport=ASGITransport(app=application), base_url="http://t"
        ) as http:
            missing = await http.post("/api/v1/jobs", content=ORIGINAL_QUEUED, headers=FARADAY)
            wrong = await http.post(
                "/api/v1/jobs",
                content=ORIGINAL_QUEUED,
                headers={**FARADAY, "Authorization": "Bearer nope"},
            )
            right = await http.post(
                "/api/v1/jobs",
                content=ORIGINAL_QUEUED,
                headers={**FARADAY, "Authorization": "Bearer s3cret-ingest"},
            )
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 201)
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "SUPERVISOR_INGEST_TOKEN" in missing.json()["detail"]


async def test_an_invalid_optional_field_is_ignored_and_named(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    """A bad optional field costs that field (named in `ignored`); a bad job id costs the event
    (422 naming every problem)."""
    queued = await client.post("/api/v1/jobs", content=ORIGINAL_QUEUED, headers=FARADAY)
    bad = await client.post("/api/v1/jobs", content="job_id=&arguments=%5B", headers=FARADAY)
    lax = await client.post("/api/v1/jobs", content="job_id=x&arguments=%5B", headers=FARADAY)
    started = await client.post(
        f"/api/v1/jobs/{JID}/started", content=ORIGINAL_LIFECYCLE, headers=FARADAY
    )
    assert queued.json() == {"job_id": JID, "event": "queued"}
    assert bad.status_code == 422
    assert set(bad.json()["fields"]) == {"job_id", "arguments"}
    assert lax.status_code == 201
    assert set(lax.json()["ignored"]) == {"arguments"}
    assert started.status_code == 201
    assert await events_of(engine, JID) == ["queued", "started"]
