"""The Dashboard in real Chromium: loads clean, the live graph and summary bar follow Redis
without a reload, the history graph draws the sample tables; screenshots light, dark, phone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playwright.async_api import Browser, expect
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.sidekiq.keys import Keys
from tests.live import LiveSupervisor
from tests.sidekiq.layouts import V7, process, push
from tests.web.browser import watched_page
from tests.web.test_dashboard import add_sample

KEYS = Keys()
POLL_DEADLINE_MS = 20_000


async def test_the_live_graph_follows_redis_without_a_reload(
    live_gui: LiveSupervisor, browser: Browser, redis: Redis, mysql_engine: AsyncEngine
) -> None:
    await redis.set(KEYS.processed, 1000)
    await push(redis, KEYS, V7, "default", 3.0)
    await process(redis, KEYS, V7, hostname="worker-1", concurrency=10, queues=["default"])
    now = datetime.now(UTC)
    for minutes, count in ((40, 400), (20, 700), (5, 1000)):
        await add_sample(mysql_engine, now - timedelta(minutes=minutes), count, enqueued=2)
    async with watched_page(browser, live_gui.url) as watched:
        page = watched.page
        await page.goto("/sidekiq")
        await page.select_option("#poll-seconds", "2")
        chart = page.locator("#live-chart")
        await expect(chart).to_have_attribute("data-points", "1", timeout=POLL_DEADLINE_MS)
        await redis.incrby(KEYS.processed, 234)
        processed = page.locator('[data-stat="processed"]')
        await expect(processed).to_have_text("1,234", timeout=POLL_DEADLINE_MS)
        await expect(chart).not_to_have_attribute("data-points", "1", timeout=POLL_DEADLINE_MS)
        await expect(page.locator("#history-chart")).to_have_attribute("data-points", "3")
        await watched.screenshot("dashboard")
        watched.assert_clean()


async def test_the_dashboard_reads_well_dark_and_on_a_phone(
    live_gui: LiveSupervisor, browser: Browser, redis: Redis
) -> None:
    await process(redis, KEYS, V7, hostname="worker-1", concurrency=10, queues=["default"])
    for name, scheme, width in (
        ("dashboard-dark", "dark", 1280),
        ("dashboard-phone", "light", 390),
    ):
        async with watched_page(browser, live_gui.url, color_scheme=scheme, width=width) as watched:
            await watched.page.goto("/sidekiq")
            await expect(watched.page.locator("#live-status")).to_contain_text("updated")
            await watched.screenshot(name)
            watched.assert_clean()
