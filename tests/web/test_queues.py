"""The Queues pages: every queue with size and latency, one queue's jobs paged in either order,
deleting exactly one job by its bytes, odd queue names, corrupt entries, the read-only role,
and the pages in real Chromium."""

from __future__ import annotations

import base64
import logging
import re
import time
from html.parser import HTMLParser
from typing import Any

import orjson
import pytest
from httpx import ASGITransport, AsyncClient, Response
from playwright.async_api import Browser, expect
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.sidekiq.keys import Keys
from tests.conftest import make_settings
from tests.live import LiveSupervisor
from tests.sidekiq import layouts
from tests.web.browser import watched_page

KEYS = Keys()
ODD = "a b/<c>"
ODD_PATH = "/sidekiq/queues/a%20b/%3Cc%3E"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
TOKEN = re.compile(r'name="job" value="([^"]+)"')
JID_LINK = re.compile(r'href="/sidekiq/jobs/([0-9a-f]{24})"')


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """These pages read only Redis: one database backend is enough (the browser test below
    runs the real service on MariaDB)."""
    return sqlite_url


def a_job(queue: str, n: int, **extra: Any) -> bytes:
    body = {
        "class": "HardJob",
        "args": [n, f"arg-{n}"],
        "retry": True,
        "queue": queue,
        "jid": f"{n:024x}",
        "created_at": time.time() - 100 + n,
        "enqueued_at": time.time() - 100 + n,
        **extra,
    }
    return orjson.dumps(body)


async def fill(redis: Redis, queue: str, count: int) -> list[bytes]:
    """`count` jobs, job 1 pushed first (the oldest, next to run); returns them oldest first."""
    payloads = [a_job(queue, n) for n in range(1, count + 1)]
    await redis.sadd(KEYS.queues, queue)
    for payload in payloads:
        await redis.lpush(KEYS.queue(queue), payload)
    return payloads


class _TableText(HTMLParser):
    """The text of each cell of each row of the first table whose classes include `css`."""

    def __init__(self, css: str) -> None:
        super().__init__()
        self.css = css
        self.state = "before"  # then "inside", then "after"
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if self.state == "before" and tag == "table" and self.css in classes:
            self.state = "inside"
        elif self.state == "inside" and tag == "tr":
            self.rows.append([])
        elif self.state == "inside" and tag == "td":
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if self.state == "inside" and tag == "table":
            self.state = "after"
        elif tag == "td" and self.cell is not None:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def table_rows(page: Response, css: str) -> list[list[str]]:
    """Each body row of the table with class `css` as the text of its cells (the header row,
    which has no <td>, is left out)."""
    parser = _TableText(css)
    parser.feed(page.text)
    return [row for row in parser.rows if row]


def csrf_of(page: Response) -> str:
    found = CSRF.search(page.text)
    assert found is not None, "the page carries no CSRF field"
    return found.group(1)


def jids_on(page: Response) -> list[str]:
    return JID_LINK.findall(page.text)


def token_for(page: Response, payload: bytes) -> str:
    wanted = base64.b64encode(payload).decode()
    assert wanted in TOKEN.findall(page.text)
    return wanted


async def test_queues_page_lists_every_queue_with_size_and_latency(
    client: AsyncClient, redis: Redis
) -> None:
    await layouts.push(redis, KEYS, layouts.V7, "default", 30.0, 20.0, 10.0)
    await fill(redis, ODD, 2)
    await redis.sadd(KEYS.queues, "empty")

    page = await client.get("/sidekiq/queues")

    assert page.status_code == 200
    assert 'aria-current="page">Queues<' in page.text
    assert f'href="{ODD_PATH}">a b/&lt;c&gt;</a>' in page.text
    assert "<c>" not in page.text
    assert 'href="/sidekiq/queues/default">default</a>' in page.text
    assert 'href="/sidekiq/queues/empty">empty</a>' in page.text
    rows = table_rows(page, "queues")
    assert [row[:2] for row in rows] == [[ODD, "2"], ["default", "3"], ["empty", "0"]]
    # layouts.push dates jobs by its fixed clock (mid-2025): the oldest is days old by now.
    assert re.fullmatch(r"\d+d \d+h", rows[1][2])
    assert rows[2][2] == "0 ms"
    assert "3 queues, 5 jobs waiting" in page.text


async def test_queues_page_is_paged(client: AsyncClient, redis: Redis) -> None:
    for name in ("q1", "q2", "q3", "q4", "q5"):
        await fill(redis, name, 1)

    page = await client.get("/sidekiq/queues", params={"limit": 2, "offset": 2})

    names = re.findall(r'href="/sidekiq/queues/(q\d)"', page.text)
    assert names == ["q3", "q4"]
    assert "3\u20134 of 5" in page.text
    assert 'href="/sidekiq/queues?limit=2&amp;offset=4" rel="next"' in page.text


async def test_queue_page_shows_newest_first_by_default(client: AsyncClient, redis: Redis) -> None:
    payloads = await fill(redis, "default", 5)

    page = await client.get("/sidekiq/queues/default")

    assert page.status_code == 200
    expected = [orjson.loads(p)["jid"] for p in reversed(payloads)]
    assert jids_on(page) == expected
    rows = table_rows(page, "queue-jobs")
    assert [row[0] for row in rows] == ["5", "4", "3", "2", "1"]
    assert rows[0][1:4] == ["HardJob", '[ 5, "arg-5" ]', expected[0]]
    assert rows[0][4].endswith(" ago")
    assert rows[0][5] == "Delete"


async def test_queue_page_oldest_first_and_paged(client: AsyncClient, redis: Redis) -> None:
    payloads = await fill(redis, "default", 7)
    jids = [orjson.loads(p)["jid"] for p in payloads]

    oldest = await client.get("/sidekiq/queues/default", params={"direction": "asc", "limit": 3})
    second = await client.get(
        "/sidekiq/queues/default", params={"direction": "asc", "limit": 3, "offset": 3}
    )
    newest = await client.get("/sidekiq/queues/default", params={"limit": 3, "offset": 3})

    assert jids_on(oldest) == jids[:3]
    assert [row[0] for row in table_rows(oldest, "queue-jobs")] == ["1", "2", "3"]
    assert jids_on(second) == jids[3:6]
    assert "4\u20136 of 7" in second.text
    assert "offset=6" in second.text
    assert jids_on(newest) == list(reversed(jids))[3:6]


@pytest.mark.parametrize(
    "params",
    [{"limit": 501}, {"limit": 0}, {"offset": -1}, {"direction": "sideways"}],
)
async def test_queue_page_refuses_bad_paging(
    client: AsyncClient, redis: Redis, params: dict[str, Any]
) -> None:
    page = await client.get("/sidekiq/queues/default", params=params)

    assert page.status_code == 422
    assert "That input is not valid" in page.text


async def test_queue_with_an_odd_name_has_its_page(client: AsyncClient, redis: Redis) -> None:
    payloads = await fill(redis, ODD, 2)

    page = await client.get(ODD_PATH)

    assert page.status_code == 200
    assert '<h1 class="queue-name">a b/&lt;c&gt;</h1>' in page.text
    assert jids_on(page) == [orjson.loads(p)["jid"] for p in reversed(payloads)]
    assert f'action="{ODD_PATH}/delete"' in page.text


async def test_delete_removes_exactly_that_job(
    client: AsyncClient, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    payloads = await fill(redis, "default", 3)
    # A second copy of another job (a double push) must survive the delete.
    await redis.lpush(KEYS.queue("default"), payloads[0])
    page = await client.get("/sidekiq/queues/default")
    target = payloads[1]
    caplog.set_level(logging.INFO, logger="app.audit")

    done = await client.post(
        "/sidekiq/queues/default/delete",
        data={"csrf": csrf_of(page), "job": token_for(page, target)},
    )

    assert done.status_code == 303
    assert done.headers["location"] == "/sidekiq/queues/default?done=deleted&n=1"
    left = await redis.lrange(KEYS.queue("default"), 0, -1)
    assert left == [payloads[0], payloads[2], payloads[0]]
    after = await client.get(done.headers["location"])
    assert "Deleted 1 job from the queue." in after.text
    assert [r.getMessage() for r in caplog.records if r.name == "app.audit"] == [
        'audit user="anonymous" role=admin via="no credentials configured" client=127.0.0.1 '
        'action=delete_queued_job target="default" count=1'
    ]


async def test_deleting_a_job_already_gone_says_so(client: AsyncClient, redis: Redis) -> None:
    payloads = await fill(redis, "default", 2)
    page = await client.get("/sidekiq/queues/default")
    form = {"csrf": csrf_of(page), "job": token_for(page, payloads[0])}
    await redis.rpop(KEYS.queue("default"))  # Sidekiq fetched it meanwhile

    done = await client.post("/sidekiq/queues/default/delete", data=form)

    assert done.headers["location"] == "/sidekiq/queues/default?done=gone&n=0"
    after = await client.get(done.headers["location"])
    assert "no longer in the queue" in after.text
    assert "0 deleted" in after.text
    assert await redis.lrange(KEYS.queue("default"), 0, -1) == [payloads[1]]


async def test_delete_in_an_odd_queue_returns_to_the_same_page(
    client: AsyncClient, redis: Redis
) -> None:
    payloads = await fill(redis, ODD, 4)
    page = await client.get(ODD_PATH, params={"direction": "asc", "offset": 2, "limit": 2})
    assert f'action="{ODD_PATH}/delete?offset=2&amp;direction=asc"' in page.text

    done = await client.post(
        f"{ODD_PATH}/delete?offset=2&direction=asc",
        data={"csrf": csrf_of(page), "job": token_for(page, payloads[2])},
    )

    assert done.headers["location"] == f"{ODD_PATH}?offset=2&direction=asc&done=deleted&n=1"
    assert await redis.lrange(KEYS.queue(ODD), 0, -1) == [payloads[3], payloads[1], payloads[0]]


async def test_unparseable_entries_show_raw_text_and_can_be_deleted(
    client: AsyncClient, redis: Redis
) -> None:
    broken = b'{"class": "<b>Half'
    not_utf8 = b"\xff\xfe<i>binary"
    await redis.sadd(KEYS.queues, "default")
    await redis.lpush(KEYS.queue("default"), broken, b"[1, 2]", not_utf8)

    page = await client.get("/sidekiq/queues/default")

    assert page.text.count("not valid JSON") == 2
    assert "JSON, but not a job object" in page.text
    assert "{&#34;class&#34;: &#34;&lt;b&gt;Half" in page.text
    assert "\ufffd\ufffd&lt;i&gt;binary" in page.text
    assert "<b>Half" not in page.text
    done = await client.post(
        "/sidekiq/queues/default/delete",
        data={"csrf": csrf_of(page), "job": token_for(page, not_utf8)},
    )
    assert done.headers["location"].endswith("done=deleted&n=1")
    assert await redis.lrange(KEYS.queue("default"), 0, -1) == [b"[1, 2]", broken]


async def test_arguments_are_escaped(client: AsyncClient, redis: Redis) -> None:
    await redis.sadd(KEYS.queues, "default")
    evil = a_job("default", 1, args=["<script>alert(1)</script>"], wrapped="<img src=x>")
    await redis.lpush(KEYS.queue("default"), evil)

    page = await client.get("/sidekiq/queues/default")

    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;img src=x&gt;" in page.text
    assert "<img src=x>" not in page.text


@pytest.mark.parametrize("job", ["not base64!", ""])
async def test_delete_refuses_a_bad_job_field(client: AsyncClient, redis: Redis, job: str) -> None:
    payloads = await fill(redis, "default", 1)
    page = await client.get("/sidekiq/queues/default")

    done = await client.post(
        "/sidekiq/queues/default/delete", data={"csrf": csrf_of(page), "job": job}
    )

    assert done.status_code == 422
    assert "That input is not valid" in done.text
    assert await redis.lrange(KEYS.queue("default"), 0, -1) == payloads


async def test_delete_without_the_csrf_token_is_refused(client: AsyncClient, redis: Redis) -> None:
    payloads = await fill(redis, "default", 1)

    done = await client.post(
        "/sidekiq/queues/default/delete",
        data={"job": base64.b64encode(payloads[0]).decode()},
    )

    assert done.status_code == 403
    assert await redis.lrange(KEYS.queue("default"), 0, -1) == payloads


async def test_a_reader_sees_no_delete_buttons_and_cannot_delete(
    reader: AsyncClient, redis: Redis
) -> None:
    payloads = await fill(redis, "default", 2)

    page = await reader.get("/sidekiq/queues/default")
    done = await reader.post(
        "/sidekiq/queues/default/delete",
        data={"csrf": csrf_of(page), "job": base64.b64encode(payloads[0]).decode()},
    )

    assert page.status_code == 200
    assert "x · read-only" in page.text
    assert len(jids_on(page)) == 2
    assert "Delete" not in page.text
    assert 'name="job"' not in page.text
    assert done.status_code == 403
    assert await redis.lrange(KEYS.queue("default"), 0, -1) == list(reversed(payloads))


async def test_pages_say_when_redis_does_not_answer(database_url: str, engine: AsyncEngine) -> None:
    settings = make_settings(database_url, REDIS_URL="redis://127.0.0.1:1/0")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://supervisor.test") as http:
            listing = await http.get("/sidekiq/queues")
            one = await http.get("/sidekiq/queues/default")

    for page in (listing, one):
        assert page.status_code == 503
        assert page.headers["retry-after"] == str(settings.RETRY_AFTER_SECONDS)
        assert "Sidekiq&#39;s Redis did not answer" in page.text


async def test_queue_pages_in_chromium(
    live_gui: LiveSupervisor, browser: Browser, redis: Redis
) -> None:
    await layouts.push(redis, KEYS, layouts.V7, "default", 300.0, 200.0, 100.0)
    await layouts.push(redis, KEYS, layouts.V812, "mailers", 5.0)
    payloads = await fill(redis, ODD, 3)
    evil = a_job(ODD, 9, args=["<script>alert(1)</script>"])
    await redis.lpush(KEYS.queue(ODD), evil)

    async with watched_page(browser, live_gui.url) as watched:
        page = watched.page
        await page.goto("/sidekiq/queues")
        await expect(page.get_by_role("link", name=ODD, exact=True)).to_be_visible()
        await watched.screenshot("queues")
        await page.get_by_role("link", name=ODD, exact=True).click()
        await expect(page.locator("h1")).to_have_text(ODD)
        await expect(page.get_by_text("<script>alert(1)</script>").first).to_be_attached()
        await watched.screenshot("queue")

        row = page.locator("table.queue-jobs tr", has_text=orjson.loads(payloads[1])["jid"])
        page.once("dialog", lambda dialog: dialog.accept())
        await row.get_by_role("button", name="Delete").click()
        await expect(page.locator(".notice")).to_have_text("Deleted 1 job from the queue.")
        watched.assert_clean()

    assert await redis.lrange(KEYS.queue(ODD), 0, -1) == [evil, payloads[2], payloads[0]]
    async with watched_page(browser, live_gui.url, color_scheme="dark") as watched:
        await watched.page.goto("/sidekiq/queues")
        await expect(watched.page.get_by_role("link", name="mailers")).to_be_visible()
        await watched.screenshot("queues-dark")
        watched.assert_clean()
