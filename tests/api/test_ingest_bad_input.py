"""Bad input gets a 4xx naming the field and the problem, and nothing is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import orjson
import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from tests.api.test_ingest import FARADAY, job_row
from tests.conftest import make_settings

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


# Quotes, backslashes (alone, before a quote, at the end), NUL, Ctrl-Z, newlines, SQL and LIKE
# fragments, four-byte unicode: each one breaks a literal escaped for the other sql_mode.
NASTY = "it's \\' \"; DROP TABLE jobs; -- \x00 \x1a \n\r\t % _ 日本 🙂 ''\\"
# Printable, so it may be a job id in the path too.
NASTY_JID = "j'\\\"%_日🙂\\"
NO_BACKSLASH_ESCAPES = "CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')"


def with_sql_mode(url: str, mode: str) -> str:
    """The database URL whose connections set sql_mode to `mode` (an SQL expression) when they
    connect: asyncmy runs `SET sql_mode=<mode>` for its `sql_mode` argument."""
    return make_url(url).update_query_dict({"sql_mode": mode}).render_as_string(False)


async def store_hostile_strings(client: AsyncClient, engine: AsyncEngine) -> None:
    """Every text column of both tables gets NASTY (or NASTY_JID) and reads back byte for byte."""
    arguments = orjson.dumps([NASTY]).decode()
    queued = {"job_id": NASTY_JID, "arguments": arguments, "job_class": NASTY, "queue": "q'\\"}
    assert (await client.post("/api/v1/jobs", json=queued)).status_code == 201
    failed = {"error_class": NASTY, "error_message": NASTY, "process": NASTY}
    path = "/api/v1/jobs/" + quote(NASTY_JID, safe="") + "/failed"
    response = await client.post(path, json=failed)
    assert response.status_code == 201, response.text
    assert response.json()["job_id"] == NASTY_JID
    row = await job_row(engine, NASTY_JID)
    assert row is not None
    stored = [row[name] for name in ("jid", "arguments", "job_class", "queue", "error_class")]
    assert stored == [NASTY_JID, arguments, NASTY, "q'\\", NASTY]
    assert row["error_message"] == NASTY
    async with engine.connect() as conn:
        timeline = await conn.execute(
            text(
                "SELECT jid, job_class, queue, process, error_class, error_message "
                "FROM job_events WHERE jid = :jid ORDER BY id"
            ),
            {"jid": NASTY_JID},
        )
        events = [tuple(found) for found in timeline]
    assert events == [
        (NASTY_JID, NASTY, "q'\\", None, None, None),
        (NASTY_JID, None, None, NASTY, NASTY, NASTY),
    ]


async def test_hostile_strings_are_stored_verbatim(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    """Hostile strings survive the hand-rendered MySQL statement (backslash escapes, MariaDB's
    default sql_mode) and SQLite's parameters."""
    await store_hostile_strings(client, engine)


@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
async def test_hostile_strings_are_stored_verbatim_without_backslash_escapes(
    database_url: str, engine: AsyncEngine
) -> None:
    """Under NO_BACKSLASH_ESCAPES a backslash is an ordinary character and only doubled quotes
    escape: the statements follow the connection's sql_mode."""
    settings = make_settings(with_sql_mode(database_url, NO_BACKSLASH_ESCAPES))
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        async with application.state.resources.engine.connect() as conn:
            mode = (await conn.execute(text("SELECT @@SESSION.sql_mode"))).scalar_one()
        assert "NO_BACKSLASH_ESCAPES" in mode.split(",")
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://supervisor.test") as http:
            await store_hostile_strings(http, engine)
