"""The Busy page: processes and running jobs from Sidekiq's real Redis layout, running jobs
paged oldest first, quiet/stop for one process or all (signals in `<identity>-signals`), the
refusals, the read-only role, the audit log, and the page in real Chromium."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import pytest
from httpx import ASGITransport, AsyncClient
from playwright.async_api import Browser, expect
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.sidekiq.keys import Keys
from tests.conftest import make_settings
from tests.live import LiveSupervisor
from tests.sidekiq import layouts
from tests.web.browser import watched_page
from tests.web.test_queues import csrf_of, jids_on, table_rows

KEYS = Keys()
JID_A, JID_B, JID_C = "a" * 24, "b" * 24, "c" * 24


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """This page reads only Redis: one database backend is enough (the browser test below
    runs the real service on MariaDB)."""
    return sqlite_url


async def fleet(redis: Redis) -> dict[str, str]:
    """Four processes as Sidekiq writes them: a busy 7.x one, a quiet 6.4.1 one, one whose
    heartbeat stopped five minutes ago, and an embedded 8.1 one. Returns name -> identity."""
    now = time.time()
    busy = [(JID_A, "default", now - 90), (JID_B, "a b/<c>", now - 5)]
    return {
        "busy": await layouts.process(
            redis,
            KEYS,
            layouts.V7,
            hostname="host-a",
            concurrency=5,
            queues=["default", "a b/<c>"],
            busy=busy,
            beat=now - 1,
        ),
        "quiet": await layouts.process(
            redis,
            KEYS,
            layouts.V641,
            hostname="host-b",
            concurrency=10,
            queues=["mailers"],
            busy=[(JID_C, "mailers", now - 30)],
            quiet=True,
            rss=50_000,
            beat=now - 2,
        ),
        "stale": await layouts.process(
            redis,
            KEYS,
            layouts.V65,
            hostname="host-c",
            concurrency=3,
            queues=["low"],
            beat=now - 300,
        ),
        "embedded": await embedded_process(redis, now),
    }


async def embedded_process(redis: Redis, now: float) -> str:
    identity = await layouts.process(
        redis, KEYS, layouts.V812, hostname="host-d", concurrency=2, queues=["x"], beat=now - 1
    )
    info = orjson.loads(await redis.hget(KEYS.process(identity), "info") or b"{}")
    await redis.hset(KEYS.process(identity), "info", orjson.dumps(info | {"embedded": True}))
    return identity


def name_of(identity: str) -> str:
    return identity.rsplit(":", 1)[0]


async def signals(redis: Redis, identity: str) -> list[bytes]:
    found = await redis.lrange(KEYS.signals(identity), 0, -1)
    return [item if isinstance(item, bytes) else item.encode() for item in found]


async def test_busy_page_shows_processes(client: AsyncClient, redis: Redis) -> None:
    ids = await fleet(redis)

    page = await client.get("/sidekiq/busy")

    assert page.status_code == 200
    assert 'aria-current="page">Busy<' in page.text
    rows = {row[0].split()[0]: row for row in table_rows(page, "processes")}
    busy = rows[name_of(ids["busy"])]
    assert busy[0] == (f"{name_of(ids['busy'])} app blue queues: default, a b/<c> · Sidekiq 7.3.10")
    assert busy[1].endswith(" ago")
    assert busy[2].endswith(" s ago")
    assert busy[3:7] == ["120 MB", "5", "2", "Quiet Stop"]
    quiet = rows[name_of(ids["quiet"])]
    assert quiet[0] == f"{name_of(ids['quiet'])} app blue quiet queues: mailers"
    assert quiet[3:7] == ["50,000 KB", "10", "1", "Stop"]
    stale = rows[name_of(ids["stale"])]
    assert stale[2] == "5m 0s ago stale"
    assert "stale" not in busy[2]
    embedded = rows[name_of(ids["embedded"])]
    assert "embedded" in embedded[0]
    assert embedded[6] == ""
    assert f'title="{ids["busy"]}"' in page.text
    assert "<c>" not in page.text


async def test_busy_page_shows_running_jobs_oldest_first(client: AsyncClient, redis: Redis) -> None:
    ids = await fleet(redis)

    page = await client.get("/sidekiq/busy")

    rows = table_rows(page, "running")
    assert [row[2] for row in rows] == [JID_A, JID_C, JID_B]
    first = rows[0]
    assert first[0] == name_of(ids["busy"])
    assert first[1] == "tid0"
    assert first[3:6] == ["default", "HardJob", '[ 1, "two" ]']
    assert first[6].endswith(" UTC")
    # run_at is whole seconds (Sidekiq writes Time.now.to_i): 90 s ago, give or take one.
    assert first[7] in ("1m 30s", "1m 31s")
    assert f'href="/sidekiq/jobs/{JID_A}"' in page.text
    assert 'href="/sidekiq/queues/a%20b/%3Cc%3E">a b/&lt;c&gt;</a>' in page.text
    assert "3 running, longest first" in page.text


async def test_running_jobs_are_paged(client: AsyncClient, redis: Redis) -> None:
    now = time.time()
    jids = [f"{n:024x}" for n in range(7)]
    # Thread n started 100 - n seconds ago: jids are in run_at order, oldest first.
    busy = [(jid, "default", now - 100 + n) for n, jid in enumerate(jids)]
    await layouts.process(
        redis, KEYS, layouts.V7, hostname="h", concurrency=10, queues=["default"], busy=busy
    )

    page = await client.get("/sidekiq/busy", params={"offset": 3, "limit": 3})
    last = await client.get("/sidekiq/busy", params={"offset": 6, "limit": 3})

    assert jids_on(page) == jids[3:6]
    assert "4\u20136 of 7" in page.text
    assert 'href="/sidekiq/busy?offset=6&amp;limit=3" rel="next"' in page.text
    assert 'href="/sidekiq/busy?offset=0&amp;limit=3" rel="prev"' in page.text
    assert jids_on(last) == jids[6:]
    assert 'rel="next"' not in last.text


@pytest.mark.parametrize("params", [{"limit": 501}, {"limit": 0}, {"offset": -1}])
async def test_busy_page_refuses_bad_paging(
    client: AsyncClient, redis: Redis, params: dict[str, Any]
) -> None:
    page = await client.get("/sidekiq/busy", params=params)

    assert page.status_code == 422
    assert "That input is not valid" in page.text


async def test_arguments_of_running_jobs_are_escaped(client: AsyncClient, redis: Redis) -> None:
    identity = await layouts.process(
        redis, KEYS, layouts.V7, hostname="h", concurrency=1, queues=["default"]
    )
    evil = {"class": "<b>Bold</b>", "args": ["<script>alert(1)</script>"], "jid": JID_A}
    work = {"queue": "default", "payload": orjson.dumps(evil).decode(), "run_at": int(time.time())}
    await redis.hset(KEYS.work(identity), "t1", orjson.dumps(work))
    corrupt = {"queue": "default", "payload": "{<i>not json", "run_at": int(time.time())}
    await redis.hset(KEYS.work(identity), "t2", orjson.dumps(corrupt))

    page = await client.get("/sidekiq/busy")

    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;Bold&lt;/b&gt;" in page.text
    rows = table_rows(page, "running")
    assert [row[5] for row in rows if row[2] != JID_A] == ["not valid JSON {<i>not json"]


async def test_quiet_one_process(
    client: AsyncClient, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await fleet(redis)
    page = await client.get("/sidekiq/busy")
    caplog.set_level(logging.INFO, logger="app.audit")

    done = await client.post(
        "/sidekiq/busy",
        data={"csrf": csrf_of(page), "signal": "quiet", "identity": ids["busy"]},
    )

    assert done.status_code == 303
    assert done.headers["location"] == "/sidekiq/busy?done=quiet&n=1"
    assert await signals(redis, ids["busy"]) == [b"TSTP"]
    assert 0 < await redis.ttl(KEYS.signals(ids["busy"])) <= 60
    for other in ("quiet", "stale", "embedded"):
        assert await signals(redis, ids[other]) == []
    after = await client.get(done.headers["location"])
    assert "Asked 1 process(es) to quiet (TSTP)" in after.text
    assert [r.getMessage() for r in caplog.records if r.name == "app.audit"] == [
        'audit user="anonymous" role=admin via="no credentials configured" client=127.0.0.1 '
        f'action=quiet target="{ids["busy"]}" count=1'
    ]


@pytest.mark.parametrize(("signal", "sent"), [("quiet", b"TSTP"), ("stop", b"TERM")])
async def test_signal_all_skips_embedded_processes(
    client: AsyncClient, redis: Redis, caplog: pytest.LogCaptureFixture, signal: str, sent: bytes
) -> None:
    ids = await fleet(redis)
    await redis.sadd(KEYS.processes, "gone:1:abcdefabcdef")  # crashed, hash expired
    page = await client.get("/sidekiq/busy")
    caplog.set_level(logging.INFO, logger="app.audit")

    done = await client.post("/sidekiq/busy", data={"csrf": csrf_of(page), "signal": signal})

    assert done.headers["location"] == f"/sidekiq/busy?done={signal}&n=3"
    for name in ("busy", "quiet", "stale"):
        assert await signals(redis, ids[name]) == [sent]
    assert await signals(redis, ids["embedded"]) == []
    assert await signals(redis, "gone:1:abcdefabcdef") == []
    messages = [r.getMessage() for r in caplog.records if r.name == "app.audit"]
    assert len(messages) == 1
    assert messages[0].endswith(f'action={signal} target="all" count=3')


async def test_signal_refuses_unknown_and_embedded_processes(
    client: AsyncClient, redis: Redis
) -> None:
    ids = await fleet(redis)
    page = await client.get("/sidekiq/busy")
    token = csrf_of(page)

    unknown = await client.post(
        "/sidekiq/busy", data={"csrf": token, "signal": "stop", "identity": "nope:1:<x>"}
    )
    embedded = await client.post(
        "/sidekiq/busy", data={"csrf": token, "signal": "stop", "identity": ids["embedded"]}
    )
    bad_signal = await client.post(
        "/sidekiq/busy", data={"csrf": token, "signal": "kill", "identity": ids["busy"]}
    )

    assert unknown.status_code == 404
    assert "no live Sidekiq process &#39;nope:1:&lt;x&gt;&#39;" in unknown.text
    assert embedded.status_code == 422
    assert "embedded Sidekiq, which ignores quiet and stop signals" in embedded.text
    assert bad_signal.status_code == 422
    for identity in [*ids.values(), "nope:1:<x>"]:
        assert await signals(redis, identity) == []


async def test_signal_without_the_csrf_token_is_refused(client: AsyncClient, redis: Redis) -> None:
    ids = await fleet(redis)

    done = await client.post("/sidekiq/busy", data={"signal": "stop", "identity": ids["busy"]})

    assert done.status_code == 403
    assert await signals(redis, ids["busy"]) == []


async def test_a_reader_sees_no_buttons_and_cannot_signal(
    reader: AsyncClient, redis: Redis
) -> None:
    ids = await fleet(redis)

    page = await reader.get("/sidekiq/busy")
    done = await reader.post(
        "/sidekiq/busy", data={"csrf": csrf_of(page), "signal": "stop", "identity": ids["busy"]}
    )

    assert page.status_code == 200
    assert "x · read-only" in page.text
    assert len(table_rows(page, "processes")) == 4
    assert jids_on(page) == [JID_A, JID_C, JID_B]
    for label in ("Quiet", "Stop", 'name="signal"', "Actions"):
        assert label not in page.text
    assert done.status_code == 403
    assert await signals(redis, ids["busy"]) == []


async def test_busy_page_when_redis_does_not_answer(database_url: str, engine: AsyncEngine) -> None:
    settings = make_settings(database_url, REDIS_URL="redis://127.0.0.1:1/0")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://supervisor.test") as http:
            page = await http.get("/sidekiq/busy")

    assert page.status_code == 503
    assert "Sidekiq&#39;s Redis did not answer" in page.text


async def test_busy_page_in_chromium(
    live_gui: LiveSupervisor, browser: Browser, redis: Redis
) -> None:
    ids = await fleet(redis)
    evil = {"class": "EvilJob", "args": ["<script>alert(1)</script>"], "jid": "e" * 24}
    work = {"queue": "default", "payload": orjson.dumps(evil).decode(), "run_at": int(time.time())}
    await redis.hset(KEYS.work(ids["busy"]), "tid9", orjson.dumps(work))
    await layouts.push(redis, KEYS, layouts.V7, "default", 30.0, 10.0)

    async with watched_page(browser, live_gui.url) as watched:
        page = watched.page
        await page.goto("/sidekiq/busy")
        await expect(page.locator("table.running")).to_contain_text(JID_A)
        await expect(page.get_by_text("<script>alert(1)</script>")).to_be_attached()
        await watched.screenshot("busy")
        row = page.locator("table.processes tr", has_text=name_of(ids["busy"]))
        page.once("dialog", lambda dialog: dialog.accept())
        await row.get_by_role("button", name="Quiet", exact=True).click()
        await expect(page.locator(".notice")).to_contain_text("Asked 1 process(es) to quiet")
        watched.assert_clean()

    assert await signals(redis, ids["busy"]) == [b"TSTP"]
    assert await signals(redis, ids["quiet"]) == []
    async with watched_page(browser, live_gui.url, width=390) as watched:
        await watched.page.goto("/sidekiq/busy")
        await expect(watched.page.locator("table.processes")).to_contain_text("host-a")
        await watched.screenshot("busy-phone")
        watched.assert_clean()
