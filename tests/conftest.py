"""Shared fixtures: a throwaway MariaDB schema and an SQLite file (both migrated with Alembic),
a Redis database flushed per test, and the app with its lifespan running in the test's loop."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncmy
import pytest
from alembic import command
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli.main import alembic_config
from app.config import Settings
from app.main import SupervisorApp, create_app
from app.store.db import create_engine
from tests.ingest.tcp_proxy import TcpProxy

MYSQL_URL = os.environ.get("SUPERVISOR_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("SUPERVISOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BACKENDS = ["mysql", "sqlite"]


async def mysql_admin(sql: str, args: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    """`sql` run as the test server's admin, outside any database; the rows it returned."""
    url = make_url(MYSQL_URL)
    conn = await asyncmy.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
    )
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, args)
            return list(await cursor.fetchall())
    finally:
        conn.close()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "DB_TIMEOUT_SECONDS": 5.0,
        # Sampler tests drive ticks themselves; other tests need no background Redis reads.
        "SAMPLER_ENABLED": False,
        **overrides,
    }
    return Settings(_env_file=None, **values)


def migrate(database_url: str) -> None:
    command.upgrade(alembic_config(make_settings(database_url)), "head")


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A fresh MariaDB/MySQL database for this test session, migrated to head."""
    name = f"supervisor_test_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(mysql_admin(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    url = make_url(MYSQL_URL).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    yield url
    asyncio.run(mysql_admin(f"DROP DATABASE IF EXISTS {name}"))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "supervisor.db"
    url = f"sqlite:///{path}"
    migrate(url)
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that uses it runs once on MariaDB and once on the embedded SQLite default."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine on the test database, emptied before the test."""
    engine = create_engine(settings, name="supervisor-tests")
    async with engine.begin() as conn:
        for table in ("jobs", "job_events", "sidekiq_samples", "queue_samples"):
            await conn.execute(text(f"DELETE FROM {table}"))
    yield engine
    await engine.dispose()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def serve(settings: Settings) -> AsyncIterator[AsyncClient]:
    """A client of an app built from `settings`, its lifespan running (for `async for`)."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://supervisor.test") as http:
            yield http


@pytest.fixture
async def app(settings: Settings, engine: AsyncEngine) -> AsyncIterator[SupervisorApp]:
    """The app with its lifespan running (engine, Redis client, writer)."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: SupervisorApp) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=app)
    async with AsyncClient(transport=transport, base_url="http://supervisor.test") as http:
        yield http


async def _proxy_to(url: str, default_port: int) -> AsyncIterator[TcpProxy]:
    parsed = make_url(url)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or default_port)
    await proxy.start()
    yield proxy
    await proxy.aclose()


@pytest.fixture
async def mysql_proxy(mysql_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the test MariaDB that a test can cut, blackhole and restore."""
    async for proxy in _proxy_to(mysql_url, 3306):
        yield proxy


@pytest.fixture
async def redis_proxy() -> AsyncIterator[TcpProxy]:
    """The same in front of the test Redis."""
    async for proxy in _proxy_to(REDIS_URL, 6379):
        yield proxy


def through(url: str, proxy: TcpProxy) -> str:
    """`url` (database or Redis) pointed at `proxy` instead."""
    return (
        make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    )
