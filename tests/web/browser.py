"""Real headless Chromium (Debian's `chromium`) driven by Playwright, watching each page for
console errors and for any request that would leave localhost; screenshots go to
test-artifacts/screens/ for people to look at."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import Browser, ConsoleMessage, Page, Route, async_playwright

ROOT = Path(__file__).resolve().parents[2]
SCREENS = ROOT / "test-artifacts" / "screens"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
NO_CHROMIUM = "Debian's chromium is not installed: .ci/run installs it (apt-get install chromium)"


@dataclass
class Watched:
    """A page plus what went wrong on it: console errors, uncaught exceptions, and requests
    that tried to leave localhost (those are blocked, so a CDN reference fails loudly)."""

    page: Page
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.errors == [], f"console errors: {self.errors}"
        assert self.outside == [], f"requests leaving localhost: {self.outside}"

    async def screenshot(self, name: str) -> Path:
        SCREENS.mkdir(parents=True, exist_ok=True)
        path = SCREENS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    assert shutil.which(CHROMIUM), NO_CHROMIUM
    async with async_playwright() as playwright:
        # --no-sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def watched_page(
    browser: Browser,
    base_url: str,
    *,
    color_scheme: str = "light",
    width: int = 1280,
    http_credentials: tuple[str, str] | None = None,
) -> AsyncIterator[Watched]:
    """A fresh browser context (its own cookies) with one watched page."""
    credentials = (
        {"username": http_credentials[0], "password": http_credentials[1]}
        if http_credentials
        else None
    )
    context = await browser.new_context(
        base_url=base_url,
        viewport={"width": width, "height": 900},
        color_scheme=color_scheme,  # type: ignore[arg-type]
        http_credentials=credentials,  # type: ignore[arg-type]
    )
    page = await context.new_page()
    watched = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.errors.append(f"{message.text} ({message.location.get('url', '')})")

    async def keep_local(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            await route.continue_()
        else:
            watched.outside.append(route.request.url)
            await route.abort()

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.errors.append(f"uncaught: {error}"))
    await context.route("**/*", keep_local)
    try:
        yield watched
    finally:
        await context.close()
