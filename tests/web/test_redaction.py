"""SUPERVISOR_REDACT_KEYS / _PATTERNS in the GUI: a retry entry's list row and its own page,
a queue's page (its Delete forms too) and the Busy page show no secret, and a redacted queued
job can still be deleted; the ledger's job page says its arguments were redacted."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from httpx import AsyncClient, Response
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api.test_redaction import ARGUMENTS, ERROR, REDACTING, SECRETS
from tests.conftest import make_settings, serve
from tests.sidekiq.layouts import NOW, V7, process
from tests.sidekiq.test_browse import failed_job
from tests.web.test_sets import KEYS, add

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
TOKEN = re.compile(r'name="job" value="([^"]+)"')
BACKTRACE = ["app/jobs/pay_job.rb:9:in `charge 4111 1111 1111 1111'", "lib/x.rb:1"]


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """These pages read Sidekiq's Redis; one ledger backend is enough."""
    return sqlite_url


@pytest.fixture
async def redacting(database_url: str, engine: AsyncEngine) -> AsyncIterator[AsyncClient]:
    async for http in serve(make_settings(database_url, **REDACTING)):
        yield http


def leaked(page: Response) -> list[str]:
    assert page.status_code == 200, page.text
    return [secret for secret in SECRETS if secret in page.text]


async def test_a_retry_entry_shows_no_secret_in_the_list_or_its_page(
    redacting: AsyncClient, redis: Redis
) -> None:
    payload = failed_job(V7, failed_at=NOW, args=ARGUMENTS, error=ERROR)
    payload["error_backtrace"] = BACKTRACE
    key = await add(redis, "retries", NOW + 30, payload)

    listing = await redacting.get("/sidekiq/retries")
    assert payload["jid"] in listing.text
    assert leaked(listing) == []
    assert "[REDACTED]" in listing.text

    entry = await redacting.get(f"/sidekiq/retries/{key}")
    assert leaked(entry) == []
    assert "card [REDACTED] was declined" in entry.text
    assert "charge [REDACTED]" in entry.text  # the backtrace
    assert "Secrets are shown as [REDACTED]" in entry.text

    searched = await redacting.get("/sidekiq/retries", params={"substr": "s3cr3t"})
    assert payload["jid"] not in searched.text


async def test_a_queue_page_shows_no_secret_and_still_deletes_the_job(
    redacting: AsyncClient, redis: Redis
) -> None:
    secret_job = orjson.dumps({"class": "PayJob", "args": ARGUMENTS, "jid": "a" * 24})
    plain_job = orjson.dumps({"class": "PayJob", "args": [1], "jid": "b" * 24})
    await redis.sadd(KEYS.queues, "default")
    await redis.lpush(KEYS.queue("default"), secret_job, plain_job)

    page = await redacting.get("/sidekiq/queues/default")
    assert leaked(page) == []
    # The Delete form's token must not carry the bytes either (base64 is no protection).
    assert all("4111" not in token and "hunter2" not in token for token in TOKEN.findall(page.text))
    csrf = CSRF.search(page.text)
    assert csrf is not None
    [digest] = [token for token in TOKEN.findall(page.text) if token.startswith("digest:")]
    await redis.lpush(KEYS.queue("default"), b'{"class":"Newer","args":[],"jid":"c"}')

    done = await redacting.post(
        "/sidekiq/queues/default/delete", data={"csrf": csrf.group(1), "job": digest}
    )

    assert done.headers["location"] == "/sidekiq/queues/default?done=deleted&n=1"
    left = await redis.lrange(KEYS.queue("default"), 0, -1)
    assert secret_job not in left
    assert plain_job in left
    # Position 0 would read the whole list; a forged one is refused before any read.
    digest_part = digest.rpartition(":")[2]
    for forged in (f"digest:0:{digest_part}", f"digest:\u00b2:{digest_part}", "digest:1:"):
        refused = await redacting.post(
            "/sidekiq/queues/default/delete", data={"csrf": csrf.group(1), "job": forged}
        )
        assert refused.status_code == 422, forged
    assert len(await redis.lrange(KEYS.queue("default"), 0, -1)) == len(left)


async def test_the_busy_page_shows_no_secret(redacting: AsyncClient, redis: Redis) -> None:
    running = [("d" * 24, "default", NOW)]
    identity = await process(
        redis, KEYS, V7, hostname="w", concurrency=2, queues=["default"], busy=running
    )
    payload = orjson.dumps({"class": "PayJob", "args": ARGUMENTS, "jid": "d" * 24}).decode()
    work: dict[str, Any] = {"queue": "default", "payload": payload, "run_at": int(NOW)}
    await redis.hset(KEYS.key(identity + V7.work_key), "tid0", orjson.dumps(work))

    page = await redacting.get("/sidekiq/busy")
    assert "PayJob" in page.text
    assert leaked(page) == []


async def test_the_job_page_says_the_arguments_were_redacted(
    redacting: AsyncClient, engine: AsyncEngine
) -> None:
    body = {"job_id": "e" * 24, "arguments": ARGUMENTS, "job_class": "PayJob", "queue": "q"}
    assert (await redacting.post("/api/v1/jobs", json=body)).status_code == 201
    page = await redacting.get(f"/sidekiq/jobs/{'e' * 24}")
    assert leaked(page) == []
    assert "Secrets in the stored arguments were replaced by [REDACTED]" in page.text
