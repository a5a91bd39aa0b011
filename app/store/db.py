"""The database engine and sessions, built by the lifespan (or the CLI), never at import."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from app.config import Settings


def create_engine(settings: Settings, *, name: str = "sidekiq-supervisor") -> AsyncEngine:
    """An engine for the configured database; `name` labels the connections (MySQL)."""
    url = settings.database_url
    if settings.is_sqlite:
        engine = create_async_engine(url, connect_args={"timeout": settings.DB_TIMEOUT_SECONDS})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_POOL_SIZE,
        pool_recycle=3600,
        pool_timeout=settings.DB_TIMEOUT_SECONDS,
        # READ COMMITTED: the upsert takes no gap locks, so concurrent batches rarely wait.
        isolation_level="READ COMMITTED",
        connect_args={
            "connect_timeout": max(1, int(settings.DB_TIMEOUT_SECONDS)),
            "program_name": name,
            "charset": "utf8mb4",
        },
    )


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers run beside the writer; synchronous=FULL keeps every commit on disk.
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=5000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """SELECT 1; raises the driver's error when the database cannot answer."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def describe(engine: AsyncEngine) -> dict[str, Any]:
    """Where the engine points, without the password, for logs and `health`."""
    url = engine.url
    return {"backend": url.get_backend_name(), "url": url.render_as_string(hide_password=True)}
