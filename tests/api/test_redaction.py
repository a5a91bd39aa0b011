"""SUPERVISOR_REDACT_KEYS / _PATTERNS through the API: ingest (form, JSON, batch) stores no
secret in the ledger row or its timeline and flags the row; Sidekiq's Redis entries are
answered redacted; with both settings empty nothing changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from httpx import AsyncClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.manager import SKIP_REDACTED
from app.sidekiq.keys import Keys
from tests.api.test_ingest import FARADAY, job_row
from tests.conftest import make_settings, serve
from tests.sidekiq.layouts import NOW, V7, process
from tests.sidekiq.test_browse import add_entries, failed_job

SECRETS = ("hunter2", "tok-123", "s3cr3t", "4111 1111 1111 1111", "4111-1111-1111-1111")
CARD = r"\b\d{4}(?:[ -]?\d{4}){3}\b"
REDACTING = {"REDACT_KEYS": "password,*_token,*secret*", "REDACT_PATTERNS": [CARD]}
# Secrets under a matching key at three depths, and a card number inside a plain string.
ARGUMENTS: list[Any] = [
    42,
    {"user": {"name": "ann", "Password": "hunter2"}},
    [{"deep": [{"api_token": "tok-123", "Client_Secret": {"raw": "s3cr3t"}}]}],
    "paid with 4111 1111 1111 1111 today",
]
STORED = (
    '[42,{"user":{"name":"ann","Password":"[REDACTED]"}},'
    '[{"deep":[{"api_token":"[REDACTED]","Client_Secret":"[REDACTED]"}]}],'
    '"paid with [REDACTED] today"]'
)
ERROR = "card 4111-1111-1111-1111 was declined"
KEYS = Keys()


@pytest.fixture
async def redacting(database_url: str, engine: AsyncEngine) -> AsyncIterator[AsyncClient]:
    async for http in serve(make_settings(database_url, **REDACTING)):
        yield http


async def stored_text(engine: AsyncEngine, jid: str) -> str:
    """Everything stored for the job, row and timeline, as one text to search."""
    async with engine.connect() as conn:
        rows = [
            *(await conn.execute(text("SELECT * FROM jobs WHERE jid = :j"), {"j": jid})).all(),
            *(
                await conn.execute(text("SELECT * FROM job_events WHERE jid = :j"), {"j": jid})
            ).all(),
        ]
    assert rows, f"nothing stored for {jid}"
    return repr(rows)


async def assert_redacted(http: AsyncClient, engine: AsyncEngine, jid: str) -> dict[str, Any]:
    row = await job_row(engine, jid)
    assert row is not None
    assert row["arguments"] == STORED
    assert row["arguments_redacted"]
    assert not row["arguments_truncated"]
    everything = await stored_text(engine, jid)
    assert [secret for secret in SECRETS if secret in everything] == []
    answer: dict[str, Any] = (await http.get(f"/api/v1/jobs/{jid}")).json()
    assert (answer["arguments"], answer["arguments_redacted"]) == (STORED, True)
    return answer


async def test_form_ingest_stores_no_secret_and_flags_the_row(
    redacting: AsyncClient, engine: AsyncEngine
) -> None:
    lifecycle = {"arguments": orjson.dumps(ARGUMENTS).decode(), "job_class": "PayJob", "queue": "q"}
    queued = urlencode({**lifecycle, "job_id": "form1"})
    answer = await redacting.post("/api/v1/jobs", content=queued, headers=FARADAY)
    assert answer.status_code == 201, answer.text
    failed = urlencode({**lifecycle, "error_class": "CardError", "error_message": ERROR})
    answer = await redacting.post("/api/v1/jobs/form1/failed", content=failed, headers=FARADAY)
    assert answer.status_code == 201, answer.text
    job = await assert_redacted(redacting, engine, "form1")
    assert job["error_message"] == "card [REDACTED] was declined"
    assert [e["error_message"] for e in job["timeline"]] == [None, "card [REDACTED] was declined"]


async def test_json_ingest_with_arguments_as_an_array_stores_no_secret(
    redacting: AsyncClient, engine: AsyncEngine
) -> None:
    body = {"job_id": "json1", "arguments": ARGUMENTS, "job_class": "PayJob", "queue": "q"}
    assert (await redacting.post("/api/v1/jobs", json=body)).status_code == 201
    await assert_redacted(redacting, engine, "json1")


async def test_batch_ingest_stores_no_secret_in_any_event(
    redacting: AsyncClient, engine: AsyncEngine
) -> None:
    base = {"job_id": "batch1", "arguments": ARGUMENTS, "job_class": "PayJob", "queue": "q"}
    events = [
        {**base, "event": "queued", "at": NOW},
        {**base, "event": "started", "at": NOW + 1},
        {**base, "event": "failed", "at": NOW + 2, "error_message": ERROR},
        {**base, "event": "dead", "at": NOW + 3, "error_message": f"again: {ERROR}"},
    ]
    answer = await redacting.post("/api/v1/events", json=events)
    assert answer.status_code == 201, answer.text
    job = await assert_redacted(redacting, engine, "batch1")
    assert job["error_message"] == "again: card [REDACTED] was declined"


async def test_redaction_off_stores_arguments_and_errors_as_sent(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    arguments = orjson.dumps(ARGUMENTS).decode()
    body = {"job_id": "plain", "arguments": arguments, "job_class": "PayJob", "queue": "q"}
    assert (await client.post("/api/v1/jobs", json=body)).status_code == 201
    failed = {"error_class": "CardError", "error_message": ERROR}
    assert (await client.post("/api/v1/jobs/plain/failed", json=failed)).status_code == 201
    row = await job_row(engine, "plain")
    assert row is not None
    assert (row["arguments"], row["arguments_redacted"]) == (arguments, False)
    assert row["error_message"] == ERROR
    assert (await client.get("/api/v1/jobs/plain")).json()["arguments_redacted"] is False


# Sidekiq's Redis, as the read API answers it ---------------------------------------------------


async def seed_retry(redis: Redis) -> dict[str, Any]:
    payload = failed_job(V7, failed_at=NOW, args=ARGUMENTS, error=ERROR)
    await add_entries(redis, KEYS.retry, [(NOW + 30, payload)])
    return payload


async def test_a_retry_entry_is_answered_redacted(redacting: AsyncClient, redis: Redis) -> None:
    payload = await seed_retry(redis)
    page = (await redacting.get("/api/v1/retries")).json()
    [item] = page["items"]
    assert item["jid"] == payload["jid"]
    assert orjson.dumps(item["args"]).decode() == STORED
    assert item["error_message"] == "card [REDACTED] was declined"
    assert item["redacted"] is True
    assert orjson.loads(item["raw"])["args"] == orjson.loads(STORED)
    answer = orjson.dumps(page).decode()
    assert [secret for secret in SECRETS if secret in answer] == []


async def test_a_filter_does_not_confirm_a_redacted_secret(
    redacting: AsyncClient, redis: Redis
) -> None:
    await seed_retry(redis)
    found = (await redacting.get("/api/v1/retries", params={"substr": "hunter2"})).json()
    assert (found["total"], found["items"]) == (0, [])
    shown = (await redacting.get("/api/v1/retries", params={"substr": "ann"})).json()
    assert shown["total"] == 1


async def test_a_queued_job_is_answered_redacted(redacting: AsyncClient, redis: Redis) -> None:
    payload = {"class": "PayJob", "args": ARGUMENTS, "jid": "q" * 24, "queue": "default"}
    await redis.lpush(KEYS.queue("default"), orjson.dumps(payload))
    page = (await redacting.get("/api/v1/queues/default/jobs")).json()
    [item] = page["items"]
    assert (orjson.dumps(item["args"]).decode(), item["redacted"]) == (STORED, True)
    answer = orjson.dumps(page).decode()
    assert [secret for secret in SECRETS if secret in answer] == []


async def test_redis_entries_are_answered_as_stored_when_off(
    client: AsyncClient, redis: Redis
) -> None:
    payload = await seed_retry(redis)
    [item] = (await client.get("/api/v1/retries")).json()["items"]
    assert (item["args"], item["error_message"], item["redacted"]) == (ARGUMENTS, ERROR, False)
    assert orjson.loads(item["raw"]) == payload


async def test_a_busy_job_is_answered_redacted(redacting: AsyncClient, redis: Redis) -> None:
    running = [("d" * 24, "default", NOW)]
    identity = await process(
        redis, KEYS, V7, hostname="w", concurrency=2, queues=["default"], busy=running
    )
    payload = orjson.dumps({"class": "PayJob", "args": ARGUMENTS, "jid": "d" * 24}).decode()
    work = {"queue": "default", "payload": payload, "run_at": int(NOW)}
    await redis.hset(KEYS.key(identity + V7.work_key), "tid0", orjson.dumps(work))
    answer = (await redacting.get("/api/v1/busy")).json()
    [item] = answer["items"]
    assert orjson.dumps(item["args"]).decode() == STORED
    assert orjson.loads(item["payload"])["args"] == orjson.loads(STORED)
    assert [secret for secret in SECRETS if secret in orjson.dumps(answer).decode()] == []


async def test_requeue_skips_a_job_whose_arguments_were_redacted(
    redacting: AsyncClient, engine: AsyncEngine, redis: Redis
) -> None:
    for jid, arguments in (("r" * 24, ARGUMENTS), ("p" * 24, [1, "plain"])):
        body = {"job_id": jid, "arguments": arguments, "job_class": "PayJob", "queue": "q"}
        assert (await redacting.post("/api/v1/jobs", json=body)).status_code == 201
        assert (await redacting.post(f"/api/v1/jobs/{jid}/started", json={})).status_code == 201

    done = (await redacting.post("/api/v1/jobs/requeue", json={"dry_run": False})).json()

    reasons = {item["job"]["jid"]: item["skipped"] for item in done["items"]}
    assert reasons["r" * 24] == SKIP_REDACTED
    assert reasons["p" * 24] is None
    pushed = [orjson.loads(raw) for raw in await redis.lrange(KEYS.queue("q"), 0, -1)]
    assert [job["args"] for job in pushed] == [[1, "plain"]]
