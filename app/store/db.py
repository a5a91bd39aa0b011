"""The database engine and sessions, built by the lifespan (or the CLI), never at import.

Sessions carry a deadline: everything done inside `async with sessions() as session:` (connect,
statements, the closing rollback) must finish within it, or the block raises DatabaseUnavailable
(503). So does a lost or refused connection: routes never hang on, or answer 500 for, an outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from app.config import Settings
from app.errors import Unavailable
from app.store.ledger_writes import LedgerUnavailable

NO_ANSWER = "the database did not answer within {seconds:g}s; try again shortly"
UNREACHABLE = "the database is unavailable ({reason}); try again shortly"


class DatabaseUnavailable(Unavailable):
    """The database refused, dropped or did not answer: nothing read or written, retry."""

    error = "database_unavailable"


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


class BoundedSession(AsyncSession):
    """An AsyncSession whose `async with` block has a deadline and answers outages as 503s."""

    def __init__(
        self,
        *args: Any,
        deadline_seconds: float | None = None,
        retry_after_seconds: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._deadline_seconds = deadline_seconds
        self._retry_after_seconds = retry_after_seconds
        self._deadline: asyncio.Timeout | None = None

    async def __aenter__(self) -> BoundedSession:
        if self._deadline_seconds is not None:
            self._deadline = asyncio.timeout(self._deadline_seconds)
            await self._deadline.__aenter__()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        failure = exc
        try:
            await self._release(exc)
        except BaseException as error:
            failure = error
        if self._deadline is not None:
            deadline, self._deadline = self._deadline, None
            try:
                # Turns the deadline's cancellation (in the block or in _release) into
                # TimeoutError; a cancellation from outside goes on unchanged.
                await deadline.__aexit__(type(failure) if failure else None, failure, None)
            except TimeoutError as timeout:
                failure = timeout
        if failure is None:
            return
        self._raise_unavailable(failure)
        if failure is not exc:
            raise failure

    async def _release(self, exc: BaseException | None) -> None:
        """Give the connection back; after a timeout or outage drop it instead, since the
        closing rollback would wait on the same dead network."""
        if exc is not None and (
            isinstance(exc, asyncio.CancelledError | TimeoutError) or is_outage(exc)
        ):
            await self.invalidate()
        else:
            await self.close()

    def _raise_unavailable(self, exc: BaseException) -> None:
        """DatabaseUnavailable from `exc` when it means the database, not our query, failed."""
        retry_after = self._retry_after_seconds
        if isinstance(exc, TimeoutError):
            detail = NO_ANSWER.format(seconds=self._deadline_seconds or 0)
            raise DatabaseUnavailable(detail, retry_after_seconds=retry_after) from exc
        if is_outage(exc):
            raise database_unavailable(exc, retry_after_seconds=retry_after) from exc


def is_outage(exc: BaseException) -> bool:
    """True for a refused, lost or timed-out connection, or a pool with none free (not for a
    bad statement)."""
    if isinstance(exc, PoolTimeout | LedgerUnavailable):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, OSError | ConnectionError)


def database_unavailable(exc: BaseException, *, retry_after_seconds: int) -> DatabaseUnavailable:
    """The 503 for an outage (see is_outage): it names the database and the driver's reason."""
    detail = UNREACHABLE.format(reason=_first_line(exc))
    return DatabaseUnavailable(detail, retry_after_seconds=retry_after_seconds)


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    text_ = str(cause).strip().splitlines()
    return text_[0][:200] if text_ else type(cause).__name__


def create_sessionmaker(
    engine: AsyncEngine,
    *,
    deadline_seconds: float | None = None,
    retry_after_seconds: int = 5,
) -> async_sessionmaker[AsyncSession]:
    """Sessions on `engine`; with `deadline_seconds`, each `async with` block is bounded."""
    return async_sessionmaker(
        engine,
        class_=BoundedSession,
        expire_on_commit=False,
        deadline_seconds=deadline_seconds,
        retry_after_seconds=retry_after_seconds,
    )


@asynccontextmanager
async def session_connection(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncConnection]:
    """The connection of a new session (bounded by its deadline), for `write_events`: given
    back when the block ends, dropped after an outage."""
    async with sessions() as session:
        yield await session.connection()


async def ping(engine: AsyncEngine) -> None:
    """SELECT 1; raises the driver's error when the database cannot answer."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def describe(engine: AsyncEngine) -> dict[str, Any]:
    """Where the engine points, without the password, for logs and `health`."""
    url = engine.url
    return {"backend": url.get_backend_name(), "url": url.render_as_string(hide_password=True)}
