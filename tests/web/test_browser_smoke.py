"""Smoke: the dashboard loads in real Chromium with no console errors and nothing external."""

from __future__ import annotations

from playwright.async_api import Browser, expect
from redis.asyncio import Redis

from tests.live import LiveSupervisor
from tests.web.browser import watched_page


async def test_dashboard_loads_clean(
    live_gui: LiveSupervisor, browser: Browser, redis: Redis
) -> None:
    async with watched_page(browser, live_gui.url) as watched:
        response = await watched.page.goto("/sidekiq")
        assert response is not None
        assert response.status == 200
        # Playwright's locator checks need no eval, so the page's strict CSP stays on.
        chart = watched.page.locator("#live-chart")
        await expect(chart).not_to_have_attribute("data-points", "0", timeout=20_000)
        await watched.screenshot("dashboard")
        watched.assert_clean()
