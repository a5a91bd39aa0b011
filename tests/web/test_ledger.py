"""The Jobs pages in-process on MariaDB and SQLite: every filter, keyset paging, durations, a
job's page, requeue (dry run, real, one job), roles and CSRF, the audit line, and escaping."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.domain import EventName, JobEvent
from app.main import create_app
from app.sidekiq.keys import Keys
from app.web.render import NOTHING
from tests.conftest import make_settings
from tests.sidekiq.layouts import V7, process
from tests.web.ledger_pages import csrf_of, listed_jobs, notice_of, table_rows
from tests.web.ledger_seed import CLOCK, life, lost, seed

KEYS = Keys()
STUCK_AFTER = 3600
SLOW_CLASS_AFTER = 4 * 3600


@pytest.fixture(autouse=True)
def _fresh_clock() -> None:
    CLOCK.reset()


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Small pages, and a longer stuck threshold for SlowJob than for the rest."""
    return make_settings(
        database_url,
        PAGE_SIZE=3,
        STUCK_AFTER_SECONDS=STUCK_AFTER,
        STUCK_AFTER_BY_CLASS={"SlowJob": SLOW_CLASS_AFTER},
    )


async def pages(client: AsyncClient, **params: str) -> list[str]:
    """The list's pages for these filters, following Next links to the end."""
    response = await client.get("/sidekiq/jobs", params=params)
    assert response.status_code == 200, response.text
    found = [response.text]
    while 'rel="next"' in response.text:
        link = response.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
        response = await client.get(link.replace("&amp;", "&"))
        found.append(response.text)
    return found


async def shown(client: AsyncClient, **params: str) -> list[str]:
    """Every jid the list shows for these filters, newest activity first."""
    return [jid for page in await pages(client, **params) for jid in listed_jobs(page)]


async def test_filters_by_status_queue_class_and_time(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    await seed(
        engine,
        life("waiting", ago=100, queue="mail", job_class="Mailer"),
        life("running", ago=90, wait=1, queue="mail", job_class="Mailer"),
        life("done", ago=80, wait=1, run=2),
        life("broke", ago=70, wait=1, run=2, end=EventName.FAILED, queue="critical"),
        life("gone", ago=60, wait=1, run=2, end=EventName.DEAD),
        lost("vanished", ago=50),
    )
    assert await shown(client) == ["vanished", "gone", "broke", "done", "running", "waiting"]
    assert await shown(client, status="queued") == ["waiting"]
    assert await shown(client, status="started") == ["running"]
    assert await shown(client, status="complete") == ["done"]
    assert await shown(client, status="failed") == ["broke"]
    assert await shown(client, status="dead") == ["gone"]
    assert await shown(client, status="lost") == ["vanished"]
    assert await shown(client, queue="mail") == ["running", "waiting"]
    assert await shown(client, job_class="Mailer", status="queued") == ["waiting"]
    assert await shown(client, status="failed", queue="critical") == ["broke"]
    assert await shown(client, status="failed", queue="mail") == []
    # datetime-local values, UTC: last activity in [now - 78 s, now - 55 s)
    since = (CLOCK.now - timedelta(seconds=78)).strftime("%Y-%m-%dT%H:%M:%S")
    until = (CLOCK.now - timedelta(seconds=55)).strftime("%Y-%m-%dT%H:%M:%S")
    assert await shown(client, since=since, until=until) == ["gone", "broke", "done"]
    # Blank fields (a form submitted without JavaScript) mean "any".
    assert await shown(client, status="", queue="", since="", job_class="Mailer") == [
        "running",
        "waiting",
    ]


async def test_stuck_follows_each_class_threshold(client: AsyncClient, engine: AsyncEngine) -> None:
    hour = 3600
    await seed(
        engine,
        life("fast-old", ago=2 * hour, wait=1, job_class="FastJob"),
        life("fast-new", ago=600, wait=1, job_class="FastJob"),
        life("slow-mid", ago=2 * hour + 60, wait=1, job_class="SlowJob"),
        life("slow-old", ago=5 * hour, wait=1, job_class="SlowJob"),
        life("fast-done", ago=3 * hour, wait=1, run=5, job_class="FastJob"),
    )
    assert await shown(client, status="stuck") == ["fast-old", "slow-old"]
    assert await shown(client, status="stuck", job_class="SlowJob") == ["slow-old"]
    rows = {
        row[4].split()[0]: row[0]
        for page in await pages(client, status="started")
        for row in table_rows(page, "jobs")[1:]
    }
    assert rows == {
        "fast-new": "started",
        "slow-mid": "started",
        "fast-old": "started stuck",
        "slow-old": "started stuck",
    }


@pytest.mark.parametrize(
    ("needle", "expected"),
    [("50%", ["percent"]), ("a_b", ["underscore"]), ("%", ["percent"]), ("_", ["underscore"])],
)
async def test_argument_substring_is_plain_text(
    client: AsyncClient, engine: AsyncEngine, needle: str, expected: list[str]
) -> None:
    await seed(
        engine,
        life("percent", ago=30, arguments='["50% off"]'),
        life("underscore", ago=20, arguments='["a_b"]'),
        life("plain", ago=10, arguments='["aXb 50X off"]'),
    )
    assert await shown(client, arguments=needle) == expected


async def test_pages_follow_the_cursor_newest_first(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    await seed(engine, *(life(f"job{n}", ago=100 - n) for n in range(8)))
    first = await client.get("/sidekiq/jobs")
    assert listed_jobs(first.text) == ["job7", "job6", "job5"]
    assert "cursor=" in first.text
    assert await shown(client) == [f"job{n}" for n in reversed(range(8))]
    bad = await client.get("/sidekiq/jobs", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400
    assert "text/html" in bad.headers["content-type"]


async def test_durations_and_percentiles_are_shown(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    await seed(
        engine,
        life("a", ago=300, wait=1, run=10),
        life("b", ago=200, wait=2, run=20),
        life("c", ago=100, wait=3, run=30),
        life("queued", ago=50),
    )
    html = (await client.get("/sidekiq/jobs")).text
    percentiles = {row[0]: row[1:] for row in table_rows(html, "percentiles")[1:]}
    #                   jobs  p50      p90      p95      p99      max
    assert percentiles["Wait"] == ["3", "2.0 s", "3.0 s", "3.0 s", "3.0 s", "3.0 s"]
    assert percentiles["Run"] == ["3", "20.0 s", "30.0 s", "30.0 s", "30.0 s", "30.0 s"]
    assert percentiles["Total"] == ["3", "22.0 s", "33.0 s", "33.0 s", "33.0 s", "33.0 s"]
    rows = {row[4].split()[0]: row for row in table_rows(html, "jobs")[1:]}
    # status, class, queue, args, job, enqueued, wait, run, total, attempts, error
    assert rows["b"][6:10] == ["2.0 s", "20.0 s", "22.0 s", "1"]
    assert rows["queued"][6:9] == [NOTHING] * 3
    narrowed = (await client.get("/sidekiq/jobs", params={"queue": "nowhere"})).text
    assert table_rows(narrowed, "percentiles")[1][1] == "0"


async def test_argument_search_asks_before_computing_percentiles(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    await seed(engine, life("a", ago=100, wait=1, run=4, arguments='["needle"]'))
    html = (await client.get("/sidekiq/jobs", params={"arguments": "needle"})).text
    assert table_rows(html, "percentiles") == []
    assert "durations=1" in html
    asked = await client.get("/sidekiq/jobs", params={"arguments": "needle", "durations": "1"})
    assert table_rows(asked.text, "percentiles")[2][:3] == ["Run", "1", "4.0 s"]


async def test_job_page_has_every_field_and_the_timeline(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    failed_run = life("r1", ago=100, wait=1, run=2, end=EventName.FAILED)
    now = CLOCK.now
    retried = JobEvent("r1", EventName.STARTED, now - timedelta(seconds=50), now, retry_count=0)
    done = JobEvent(
        "r1", EventName.COMPLETE, now - timedelta(seconds=45), now, process="w:2", retry_count=0
    )
    await seed(engine, [*failed_run, retried, done])
    response = await client.get("/sidekiq/jobs/r1")
    assert response.status_code == 200
    html = response.text
    timeline = table_rows(html, "timeline")
    assert [row[0] for row in timeline[1:]] == [
        "queued",
        "started",
        "failed",
        "started",
        "complete",
    ]
    assert [row[3] for row in timeline[1:]] == ["", "1", "1", "2", "2"]
    assert "RuntimeError" in timeline[3][5]
    assert "boom" in timeline[3][5]
    assert "<dt>Attempts</dt><dd>2</dd>" in html
    assert '<pre class="arguments">[\n  1,\n  &#34;two&#34;\n]</pre>' in html
    assert "5.0 s" in html  # run: the latest start to completion
    missing = await client.get("/sidekiq/jobs/nobody")
    assert missing.status_code == 404
    assert "text/html" in missing.headers["content-type"]
    assert "nobody" in missing.text


async def test_job_page_says_where_sidekiq_has_it(
    client: AsyncClient, engine: AsyncEngine, redis: Redis
) -> None:
    failed, dead, running = "f" * 24, "d" * 24, "r" * 24
    await seed(
        engine,
        life(failed, ago=100, wait=1, run=1, end=EventName.FAILED),
        life(dead, ago=100, wait=1, run=1, end=EventName.DEAD),
        life(running, ago=100, wait=1),
        lost("l" * 24, ago=100),
    )

    def entry(jid: str) -> bytes:
        return orjson.dumps({"class": "HardJob", "args": [], "queue": "default", "jid": jid})

    await redis.zadd(KEYS.retry, {entry(failed): time.time() + 600})
    await redis.zadd(KEYS.dead, {entry(dead): time.time() - 60})
    await process(
        redis, KEYS, V7, hostname="w", concurrency=5, queues=["default"],
        busy=[(running, "default", time.time() - 30)], beat=time.time() - 2,
    )  # fmt: skip
    in_retry = (await client.get(f"/sidekiq/jobs/{failed}")).text
    assert "In the retry set, next retry in 9m" in in_retry
    assert f'href="/sidekiq/retries?substr={failed}"' in in_retry
    assert "In the dead set since" in (await client.get(f"/sidekiq/jobs/{dead}")).text
    on_process = (await client.get(f"/sidekiq/jobs/{running}")).text
    assert "Running now on <code>w:" in on_process
    assert "Not in Sidekiq's retry or dead set" in on_process
    assert "Running now" not in (await client.get(f"/sidekiq/jobs/{'l' * 24}")).text


async def test_bad_filters_answer_a_422_page(client: AsyncClient) -> None:
    for params in ({"since": "yesterday"}, {"status": "bogus"}, {"queue": "q" * 300}):
        response = await client.get("/sidekiq/jobs", params=params)
        assert response.status_code == 422, params
        assert "text/html" in response.headers["content-type"]


async def queued_payloads(redis: Redis, queue: str = "default") -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in await redis.lrange(KEYS.queue(queue), 0, -1)]


async def test_requeue_confirms_then_pushes_and_audits(
    client: AsyncClient, engine: AsyncEngine, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await seed(
        engine,
        life("s" * 24, ago=600, wait=1),
        life("r" * 24, ago=500, wait=1),  # running now on a live process: skipped
        lost("l" * 24, ago=400),
        life("c" * 24, ago=300, wait=1, run=1),  # complete: never a candidate
    )
    await process(
        redis, KEYS, V7, hostname="w", concurrency=5, queues=["default"],
        busy=[("r" * 24, "default", time.time() - 30)], beat=time.time() - 2,
    )  # fmt: skip
    listing = (await client.get("/sidekiq/jobs")).text
    assert 'href="/sidekiq/jobs/requeue"' in listing
    confirm = await client.get("/sidekiq/jobs/requeue")
    assert confirm.status_code == 200
    assert "<b>2</b> jobs will be pushed into their queues" in confirm.text
    assert "<b>1</b> skipped" in confirm.text
    outcomes = {row[4]: row[6] for row in table_rows(confirm.text, "requeue-list")[1:]}
    assert outcomes["s" * 24] == outcomes["l" * 24] == "will be pushed"
    assert outcomes["r" * 24].startswith("running now on w:")
    assert await queued_payloads(redis) == []  # the dry run pushed nothing

    caplog.set_level(logging.INFO, logger="app.audit")
    done = await client.post("/sidekiq/jobs/requeue", data={"csrf": csrf_of(confirm.text)})
    assert done.status_code == 303
    assert done.headers["location"] == "/sidekiq/jobs?done=requeued&n=2&skipped=1"
    assert sorted(p["requeued_from"] for p in await queued_payloads(redis)) == ["l" * 24, "s" * 24]
    back = await client.get(done.headers["location"])
    assert notice_of(back.text) == "Requeued 2 jobs (1 skipped)"
    # Each requeue is dated when it was pushed: started jobs first, so the lost one is newer.
    assert await shown(client, status="requeued") == ["l" * 24, "s" * 24]
    [line] = [r.getMessage() for r in caplog.records if r.name == "app.audit"]
    assert "action=requeue" in line
    assert 'target="all"' in line
    assert line.endswith("count=2")


async def test_requeue_keeps_the_filter(
    client: AsyncClient, engine: AsyncEngine, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await seed(
        engine,
        life("s" * 24, ago=600, wait=1, queue="mail"),
        lost("l" * 24, ago=400),
        life("t" * 24, ago=300, wait=1),
    )
    confirm = await client.get("/sidekiq/jobs/requeue", params={"status": "started"})
    assert "<b>2</b> jobs will be pushed" in confirm.text
    assert '<input type="hidden" name="status" value="started">' in confirm.text
    caplog.set_level(logging.INFO, logger="app.audit")
    form = {"csrf": csrf_of(confirm.text), "status": "started", "queue": "mail"}
    done = await client.post("/sidekiq/jobs/requeue", data=form)
    assert (
        done.headers["location"]
        == "/sidekiq/jobs?status=started&queue=mail&done=requeued&n=1&skipped=0"
    )
    assert [p["requeued_from"] for p in await queued_payloads(redis, "mail")] == ["s" * 24]
    assert await queued_payloads(redis) == []
    [line] = [r.getMessage() for r in caplog.records if r.name == "app.audit"]
    assert 'target="status=started&queue=mail"' in line


async def test_requeue_one_job_from_its_page(
    client: AsyncClient, engine: AsyncEngine, redis: Redis
) -> None:
    await seed(engine, lost("a" * 24, ago=400), lost("b" * 24, ago=300))
    page = (await client.get(f"/sidekiq/jobs/{'a' * 24}")).text
    assert f'href="/sidekiq/jobs/requeue?jid={"a" * 24}"' in page
    confirm = await client.get("/sidekiq/jobs/requeue", params={"jid": "a" * 24})
    assert "<b>1</b> job will be pushed" in confirm.text
    form = {"csrf": csrf_of(confirm.text), "jid": "a" * 24}
    done = await client.post("/sidekiq/jobs/requeue", data=form)
    assert done.headers["location"] == f"/sidekiq/jobs/{'a' * 24}?done=requeued&n=1&skipped=0"
    [payload] = await queued_payloads(redis)
    assert payload["requeued_from"] == "a" * 24
    again = await client.post("/sidekiq/jobs/requeue", data=form)
    assert again.headers["location"].endswith("n=0&skipped=0")  # no longer lost
    assert len(await queued_payloads(redis)) == 1
    after = (await client.get(done.headers["location"])).text
    assert notice_of(after) == "Requeued 1 job (0 skipped)"
    assert f'href="/sidekiq/jobs/{payload["jid"]}"' in after
    assert "requeue?jid=" not in after  # requeued: nothing left to requeue


async def test_forged_post_without_csrf_is_refused(
    client: AsyncClient, engine: AsyncEngine, redis: Redis
) -> None:
    await seed(engine, lost("a" * 24, ago=400))
    for form in ({}, {"csrf": "forged"}):
        response = await client.post("/sidekiq/jobs/requeue", data=form)
        assert response.status_code == 403
    cross = await client.post(
        "/sidekiq/jobs/requeue",
        data={"csrf": csrf_of((await client.get("/sidekiq/jobs/requeue")).text)},
        headers={"origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    assert await queued_payloads(redis) == []


@pytest.fixture
async def reader(database_url: str, engine: AsyncEngine) -> AsyncIterator[AsyncClient]:
    """A client signed in (basic auth) with the read-only token."""
    settings = make_settings(database_url, ADMIN_TOKEN="admin-secret", READ_TOKEN="read-secret")
    application = create_app(settings)
    credentials = base64.b64encode(b"rita:read-secret").decode()
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(
            transport=transport,
            base_url="http://supervisor.test",
            headers={"Authorization": f"Basic {credentials}"},
        ) as http:
            yield http


async def test_read_only_sees_no_requeue_and_is_refused(
    reader: AsyncClient, engine: AsyncEngine, redis: Redis
) -> None:
    await seed(engine, lost("a" * 24, ago=400))
    listing = await reader.get("/sidekiq/jobs", params={"status": "lost"})
    assert listed_jobs(listing.text) == ["a" * 24]
    assert "Requeue" not in listing.text
    assert "Requeue…" not in (await reader.get(f"/sidekiq/jobs/{'a' * 24}")).text
    confirm = await reader.get("/sidekiq/jobs/requeue")
    assert 'action="/sidekiq/jobs/requeue"' not in confirm.text
    token = confirm.text.split('data-csrf="')[1].split('"')[0]
    refused = await reader.post("/sidekiq/jobs/requeue", data={"csrf": token})
    assert refused.status_code == 403
    assert await queued_payloads(redis) == []


async def test_arguments_and_class_names_are_escaped(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    await seed(
        engine,
        life(
            "evil",
            ago=100,
            wait=1,
            run=1,
            end=EventName.FAILED,
            job_class="<b>Bold</b>Job",
            arguments='["<script>alert(1)</script>"]',
        ),
    )
    for path in ("/sidekiq/jobs", "/sidekiq/jobs/evil", "/sidekiq/jobs?status=failed"):
        html = (await client.get(path)).text
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<b>Bold</b>" not in html
        assert "&lt;b&gt;Bold&lt;/b&gt;Job" in html
