"""GUI fixtures: the app on MariaDB in-process (httpx) and as a live server (for Chromium)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.db import create_engine
from tests.conftest import make_settings
from tests.live import LiveSupervisor, run_supervisor
from tests.web.browser import chromium

TABLES = ("jobs", "job_events", "sidekiq_samples", "queue_samples")


@pytest.fixture
async def mysql_engine(mysql_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the session's MariaDB database, emptied before the test."""
    engine = create_engine(make_settings(mysql_url), name="supervisor-web-tests")
    async with engine.begin() as conn:
        for table in TABLES:
            await conn.execute(text(f"DELETE FROM {table}"))
    yield engine
    await engine.dispose()


@pytest.fixture
def live_gui(mysql_url: str, mysql_engine: AsyncEngine, tmp_path: Path) -> Iterator[LiveSupervisor]:
    """The real service over loopback TCP, open (no credentials), on MariaDB and test Redis."""
    with run_supervisor(mysql_url, tmp_path) as live:
        yield live


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as found:
        yield found
