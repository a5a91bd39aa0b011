"""Values real peers send at the edges of the wire format, and bodies that never fully arrive.

Sidekiq's "Retry now" sends `retry_count: -1`; Faraday sends a nil as a bare key; a client can
go away half-way through its body. The run must be recorded (or, for a cut body, nothing)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import SupervisorApp
from tests.api.test_ingest import FARADAY, events_of, job_row
from tests.api.test_ingest_bad_input import stored_rows

AT = 1_700_000_000


async def test_a_run_after_retry_now_is_recorded_on_every_route(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    """retry_count -1 (Sidekiq's own retry lowers it by one) is accepted, not a 422."""
    form = await client.post("/api/v1/jobs/f1/started", content=b"retry_count=-1", headers=FARADAY)
    json = await client.post("/api/v1/jobs/j1/started", json={"retry_count": -1})
    batch = await client.post(
        "/api/v1/events",
        json=[
            {"event": "failed", "job_id": "b1", "at": AT, "error_class": "Boom"},
            {"event": "started", "job_id": "b1", "at": AT + 10, "retry_count": -1},
            {"event": "complete", "job_id": "b1", "at": AT + 11, "retry_count": -1},
        ],
    )
    assert [r.status_code for r in (form, json, batch)] == [201, 201, 201], batch.text
    assert "ignored" not in batch.json()
    row = await job_row(engine, "b1")
    assert row is not None
    assert row["status"] == "complete"
    assert await events_of(engine, "b1") == ["failed", "started", "complete"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/jobs", b"job_id=a&retry_count="),
        ("/api/v1/jobs", b"job_id=a&retry_count"),
        ("/api/v1/jobs/a/started", b"retry_count="),
        ("/api/v1/jobs/a/complete", b"retry_count"),
        ("/api/v1/jobs/a/failed", b"retry_count=&error_class=Boom"),
    ],
)
async def test_a_blank_retry_count_is_no_retry_count(
    client: AsyncClient, engine: AsyncEngine, path: str, body: bytes
) -> None:
    response = await client.post(path, content=body, headers=FARADAY)
    assert response.status_code == 201, response.text
    assert "ignored" not in response.json()
    assert await job_row(engine, "a") is not None


async def test_a_null_retry_count_in_a_batch_is_no_retry_count(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    body = [
        {"event": "started", "job_id": "n1", "at": AT, "retry_count": None},
        {"event": "complete", "job_id": "n1", "at": AT + 1, "retry_count": None},
    ]
    response = await client.post("/api/v1/events", json=body)
    assert response.json() == {"accepted": 2}
    assert await events_of(engine, "n1") == ["started", "complete"]


BAD_OPTIONAL: list[tuple[str, Any]] = [
    ("retry_count", "lots"),
    ("retry_count", -5),
    ("arguments", "[1,"),
    ("queue", "q" * 256),
    ("job_class", ["not", "a", "name"]),
    ("process", {"host": "x"}),
    ("enqueued_at", "last tuesday"),
]


@pytest.mark.parametrize(("name", "value"), BAD_OPTIONAL)
async def test_a_bad_optional_field_costs_that_field_not_the_run(
    client: AsyncClient, engine: AsyncEngine, name: str, value: Any
) -> None:
    body = [
        {"event": "started", "job_id": "o1", "at": AT, "job_class": "Hard", name: value},
        {"event": "complete", "job_id": "o1", "at": AT + 1},
    ]
    response = await client.post("/api/v1/events", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["accepted"] == 2
    assert set(response.json()["ignored"]) == {f"[0].{name}"}
    row = await job_row(engine, "o1")
    assert row is not None
    assert row["status"] == "complete"
    single = await client.post("/api/v1/jobs/o2/started", json={name: value})
    assert single.status_code == 201
    assert set(single.json()["ignored"]) == {name}
    assert await events_of(engine, "o2") == ["started"]


async def test_an_unusable_element_still_refuses_the_whole_batch(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    """The 422 names only the unusable elements (all of them), never one that merely lost a
    field: the middleware drops the elements a 422 names and sends the rest again."""
    body = [
        {"event": "started", "job_id": "u1", "at": AT, "retry_count": "lots"},
        {"event": "started", "job_id": "u2", "at": "not a time"},
        {"event": "complete", "job_id": "u1", "at": AT + 1},
        {"event": "exploded", "job_id": "u3", "at": AT},
    ]
    response = await client.post("/api/v1/events", json=body)
    assert response.status_code == 422
    assert set(response.json()["fields"]) == {"[1].at", "[3].event"}
    assert await stored_rows(engine) == (0, 0)


async def test_jids_differing_by_a_trailing_space_never_share_a_row(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    assert (await client.post("/api/v1/jobs", data={"job_id": "a"})).status_code == 201
    spaced = await client.post("/api/v1/jobs", data={"job_id": "a "})
    assert spaced.status_code == 422
    assert "space" in spaced.json()["fields"]["job_id"]
    assert await events_of(engine, "a") == ["queued"]


async def _post_raw(
    app: SupervisorApp, path: str, declared: int, chunks: list[bytes], *, disconnect: bool
) -> list[dict[str, Any]]:
    """One POST straight through ASGI: `chunks` of a body declared as `declared` bytes, then
    (with `disconnect`) the client going away. Returns what the app sent."""
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks
    ]
    if disconnect:
        messages.append({"type": "http.disconnect"})
    else:
        messages[-1]["more_body"] = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"supervisor.test"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(declared).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    return sent


BODY = b"job_id=half-01&arguments=%5B1%5D&job_class=HardJob&queue=critical&retry_count=10"


async def test_a_body_cut_short_by_a_disconnect_is_never_stored(
    app: SupervisorApp, engine: AsyncEngine
) -> None:
    """80 bytes declared, 60 sent, then the client goes away: it would parse as queue `cri`."""
    assert len(BODY) == 80
    sent = await _post_raw(
        app, "/api/v1/jobs", len(BODY), [BODY[:40], BODY[40:61]], disconnect=True
    )
    assert sent == []
    assert await stored_rows(engine) == (0, 0)


async def test_a_body_shorter_than_its_length_is_refused(
    app: SupervisorApp, engine: AsyncEngine
) -> None:
    sent = await _post_raw(app, "/api/v1/jobs", len(BODY), [BODY[:60]], disconnect=False)
    assert sent[0]["status"] == 400
    assert b"60 of its 80 bytes" in sent[1]["body"]
    assert await stored_rows(engine) == (0, 0)
