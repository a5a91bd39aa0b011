"""GUI fixtures: the app on MariaDB in-process (httpx) and as a live server (for Chromium)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient
from playwright.async_api import Browser
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
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
async def reader(
    database_url: str, engine: AsyncEngine, redis: Redis
) -> AsyncIterator[AsyncClient]:
    """The GUI with credentials, used by the read-only role (basic auth with its token)."""
    application = create_app(make_settings(database_url, READ_TOKEN="r", ADMIN_TOKEN="a"))
    token = base64.b64encode(b"x:r").decode()
    async with application.router.lifespan_context(application):
        async with AsyncClient(
            transport=ASGITransport(app=application),
            base_url="http://supervisor.test",
            headers={"Authorization": f"Basic {token}"},
        ) as http:
            yield http


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as found:
        yield found
