"""Sign-in, roles and CSRF in real Chromium against a live supervisor with credentials: the
login form, a read-only user who sees no action anywhere, and forged POSTs (no token, or from
another origin) that are refused and change nothing in Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from playwright.async_api import Browser, Page, expect
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.sidekiq.keys import Keys
from tests.live import LiveSupervisor, run_supervisor
from tests.sidekiq.layouts import V7, job, process, push
from tests.web.browser import watched_page

pytestmark = pytest.mark.slow

KEYS = Keys()
USERS = '{"alice": {"password": "alice-pw", "role": "admin"}, "bob": {"password": "bob-pw"}}'
READ_ONLY_PAGES = (
    "/sidekiq",
    "/sidekiq/busy",
    "/sidekiq/queues",
    "/sidekiq/queues/default",
    "/sidekiq/retries",
    "/sidekiq/dead",
    "/sidekiq/jobs",
    "/sidekiq/metrics",
)


@pytest.fixture
def guarded_gui(
    mysql_url: str, mysql_engine: AsyncEngine, tmp_path: Path
) -> Iterator[LiveSupervisor]:
    env = {"SUPERVISOR_USERS": USERS, "SUPERVISOR_READ_TOKEN": "read-tok"}
    with run_supervisor(mysql_url, tmp_path, admin_token="admin-tok", extra_env=env) as live:
        yield live


async def seed(redis: Redis) -> bytes:
    """A queue, a process and one retry entry; returns the retry entry's exact bytes."""
    await push(redis, KEYS, V7, "default", 5.0)
    await process(redis, KEYS, V7, hostname="worker-1", concurrency=5, queues=["default"])
    entry = orjson.dumps(job(V7, "default", enqueued_at=time.time() - 60) | {"retry_count": 1})
    await redis.zadd(KEYS.key("retry"), {entry: time.time() + 600})
    return entry


async def sign_in(page: Page, name: str, password: str) -> None:
    await page.goto("/sidekiq/retries")
    await expect(page).to_have_url("/sidekiq/login?next=/sidekiq/retries")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await expect(page).to_have_url("/sidekiq/retries")


async def test_a_read_only_user_sees_no_action_anywhere(
    guarded_gui: LiveSupervisor, browser: Browser, redis: Redis
) -> None:
    await seed(redis)
    async with watched_page(browser, guarded_gui.url) as watched:
        page = watched.page
        await page.goto("/sidekiq")
        await watched.screenshot("login")
        await sign_in(page, "bob", "bob-pw")
        for path in READ_ONLY_PAGES:
            await page.goto(path)
            await expect(page.locator(".who")).to_contain_text("bob · read-only")
            posting = page.locator("main form[method=post]")
            await expect(posting).to_have_count(0)
            await expect(page.locator("main input[type=checkbox]")).to_have_count(0)
            if path == "/sidekiq/retries":
                await watched.screenshot("retries-read-only")
        watched.assert_clean()


async def test_forged_posts_are_refused_and_change_nothing(
    guarded_gui: LiveSupervisor, browser: Browser, redis: Redis
) -> None:
    entry = await seed(redis)
    action = f"{guarded_gui.url}/sidekiq/retries/actions"
    async with watched_page(browser, guarded_gui.url) as watched:
        page = watched.page
        await sign_in(page, "alice", "alice-pw")
        await expect(page.get_by_role("button", name="Delete all")).to_be_visible()
        # Same browser, same session cookie, but no CSRF token: what a script injected
        # into another tab could send.
        forged = await page.request.post(action, form={"action": "delete", "all": "true"})
        assert forged.status == 403
        assert "CSRF token" in await forged.text()
        # A page from elsewhere posting a form at us (its origin is not ours).
        await page.set_content(
            f'<form method="post" action="{action}"><input name="action" value="delete">'
            '<input name="all" value="true"><button>win a prize</button></form>'
        )
        async with page.expect_response(action) as answer:
            await page.click("text=win a prize")
        assert (await answer.value).status in (303, 403)  # no session cookie, or refused
    assert await redis.zrange(KEYS.key("retry"), 0, -1) == [entry]
