"""Bad input gets a 4xx naming the field and the problem, and nothing is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api.test_ingest import FARADAY, job_row

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


async def stored_rows(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        jobs = (await conn.execute(text("SELECT COUNT(*) FROM jobs"))).scalar_one()
        events = (await conn.execute(text("SELECT COUNT(*) FROM job_events"))).scalar_one()
    return jobs, events


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "field", "words"),
    [
        ("/api/v1/jobs", b"arguments=%5B%5D&job_class=A&queue=q", FORM, 422, "job_id", "required"),
        ("/api/v1/jobs", b"job_id=&arguments=%5B%5D", FORM, 422, "job_id", "at least 1"),
        ("/api/v1/jobs", b"job_id=" + b"a" * 256, FORM, 422, "job_id", "at most 255"),
        ("/api/v1/jobs/" + "a" * 256 + "/started", b"", FORM, 422, "job_id", "1-255"),
        ("/api/v1/jobs", b"job_id=j1&queue=\xff", FORM, 400, None, "UTF-8"),
        ("/api/v1/jobs", b'{"job_id": "j1"', JSON, 400, None, "not valid JSON"),
        ("/api/v1/jobs", b'["j1"]', JSON, 400, None, "must be an object"),
        ("/api/v1/jobs", b"<job/>", {"Content-Type": "application/xml"}, 415, None, "Content-Type"),
        ("/api/v1/jobs", b"job_id=j1", {}, 415, None, "Content-Type"),
        ("/api/v1/jobs/j1/started", b"at=yesterday", FORM, 422, "at", "ISO 8601"),
        ("/api/v1/jobs/j1/started", b"at=1e300", FORM, 422, "at", "epoch"),
        ("/api/v1/jobs", b"job_id=j1%20", FORM, 422, "job_id", "not end with a space"),
        ("/api/v1/jobs/j1%20/started", b"", FORM, 422, "job_id", "not end with a space"),
        ("/api/v1/jobs/x%FF/started", b"", FORM, 400, None, "not valid UTF-8"),
        ("/api/v1/jobs/j1/started", b"at=yesterday&retry_count=x", FORM, 422, "at", "ISO 8601"),
        ("/api/v1/events", b'[{"event": "queued", "job_id": "a "}]', JSON, 422, "[0].job_id", ""),
        (
            "/api/v1/events",
            b'[{"event": "queued", "job_id": "j", "at": "x"}]',
            JSON,
            422,
            "[0].at",
            "",
        ),
        ("/api/v1/events", b'[{"event": "exploded", "job_id": "j1"}]', JSON, 422, "[0].event", ""),
        ("/api/v1/events", b'[{"event": "queued"}]', JSON, 422, "[0].job_id", "required"),
        ("/api/v1/events", b'[{"event": "queued", "job_id": "ok"}, 7]', JSON, 422, "[1]", "object"),
        ("/api/v1/events", b'{"event": "queued"}', JSON, 400, None, "array"),
        ("/api/v1/events", b"event=queued", FORM, 415, None, "application/json"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_stored(
    client: AsyncClient,
    engine: AsyncEngine,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    field: str | None,
    words: str,
) -> None:
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    payload = response.json()
    assert words in payload["detail"]
    if field is not None:
        assert field in payload["fields"]
    assert await stored_rows(engine) == (0, 0)


async def test_body_over_the_hard_cap_is_413(client: AsyncClient, engine: AsyncEngine) -> None:
    body = b"job_id=j1&arguments=%5B%22" + b"x" * (1024 * 1024) + b"%22%5D"
    response = await client.post("/api/v1/jobs", content=body, headers=FARADAY)
    assert response.status_code == 413
    assert "1048576-byte limit" in response.json()["detail"]
    assert await stored_rows(engine) == (0, 0)


async def test_chunked_body_over_the_cap_is_413_while_reading(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 65536

    response = await client.post("/api/v1/events", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert await stored_rows(engine) == (0, 0)


async def test_batch_over_the_event_limit_is_refused(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    events = [{"event": "queued", "job_id": f"j{n}"} for n in range(1001)]
    response = await client.post("/api/v1/events", content=orjson.dumps(events), headers=JSON)
    assert response.status_code == 422
    assert "at most 1000 events" in response.json()["detail"]
    assert await stored_rows(engine) == (0, 0)


async def test_arguments_over_the_soft_limit_are_kept_truncated(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    arguments = orjson.dumps(["é" * 40_000]).decode()  # 80,000 bytes of UTF-8
    response = await client.post("/api/v1/jobs", json={"job_id": "big", "arguments": arguments})
    assert response.status_code == 201
    row = await job_row(engine, "big")
    assert row is not None
    assert row["arguments_truncated"]
    assert len(row["arguments"].encode()) <= 65_536
    assert arguments.startswith(row["arguments"])


async def test_unknown_fields_are_ignored_and_blank_values_are_null(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    body = b"job_id=j1&arguments=%5B%5D&queue&job_class=&color=blue"
    response = await client.post("/api/v1/jobs", content=body, headers=FARADAY)
    assert response.status_code == 201
    row = await job_row(engine, "j1")
    assert row is not None
    assert (row["queue"], row["job_class"], row["arguments"]) == (None, None, "[]")


async def test_hostile_strings_are_stored_verbatim(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    """Quotes, backslashes, NUL and SQL fragments survive the hand-rendered MySQL statement."""
    nasty = "it's \\' \"; DROP TABLE jobs; -- \x00 \x1a \n\r % _ 日本"
    arguments = orjson.dumps([nasty]).decode()
    body = {"job_id": "nasty", "arguments": arguments, "job_class": nasty[:200], "queue": "q'"}
    assert (await client.post("/api/v1/jobs", json=body)).status_code == 201
    row = await job_row(engine, "nasty")
    assert row is not None
    assert (row["arguments"], row["job_class"], row["queue"]) == (arguments, nasty[:200], "q'")
