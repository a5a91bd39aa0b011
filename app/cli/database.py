"""The ledger database as the command line meets it: a missing MySQL/MariaDB database is created
before migrating, and a database the command cannot reach is one line naming its URL."""

from __future__ import annotations

import asyncio
import sqlite3

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.config import Settings
from app.store.db import DatabaseUnavailable, is_outage

# MySQL/MariaDB error codes. A missing database reads 1049 (unknown database) to a user who
# could create it and 1044 (access denied to that database) to one who could not; 1227 is a
# missing global privilege.
MISSING_DATABASE = frozenset({1044, 1049})
NO_PRIVILEGE = frozenset({1044, 1227})
CREATE_DATABASE = "CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4"
CREATED = "created database {name} at {url}"
CANNOT_CREATE = (
    "{user} may not use or create database {name} at {url}: have an administrator run "
    "CREATE DATABASE `{name}` CHARACTER SET utf8mb4; GRANT ALL PRIVILEGES ON `{name}`.* TO "
    "'{user}'@'%'; or point SUPERVISOR_DATABASE_URL at a database {user} may use"
)
UNREACHABLE = "cannot use the database at {url}: {reason}"


class DatabaseError(Exception):
    """A start-up failure to reach or prepare the database; its message is one line."""


def shown_url(settings: Settings) -> str:
    """The database URL as it may be printed: the password hidden."""
    return settings.database_url.render_as_string(hide_password=True)


def is_unreachable(exc: BaseException) -> bool:
    """The database could not be reached or used at all (not a bad statement of ours)."""
    return isinstance(exc, DatabaseUnavailable) or is_outage(exc)


def describe_failure(settings: Settings, exc: BaseException) -> str:
    """One line: which database, and the first line of what went wrong."""
    return UNREACHABLE.format(url=shown_url(settings), reason=_reason(exc))


def ensure_database(settings: Settings) -> str | None:
    """Create the MySQL/MariaDB database named in the URL when it does not exist (utf8mb4).
    Returns a line to print when it created one; None when there was nothing to do (SQLite
    creates its file itself; it is only opened here). Raises DatabaseError when it cannot."""
    if settings.is_sqlite:
        _open_sqlite(settings)
        return None
    return asyncio.run(_ensure(settings))


def _open_sqlite(settings: Settings) -> None:
    """Open (or create) the SQLite file with the standard driver first: a file that cannot be
    opened then fails here in one line, before aiosqlite's worker thread could print a second
    traceback about the event loop Alembic's run already closed."""
    path = settings.database_url.database
    if not path or path == ":memory:":
        return
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        raise DatabaseError(describe_failure(settings, exc)) from exc


async def _ensure(settings: Settings) -> str | None:
    url = settings.database_url
    try:
        await _execute(settings, url, "SELECT 1")
        return None
    except DBAPIError as exc:
        if _code(exc) not in MISSING_DATABASE:
            raise DatabaseError(describe_failure(settings, exc)) from exc
    # Connect to the server alone: the database is what is missing.
    name = str(url.database)
    try:
        await _execute(
            settings, url._replace(database=None), CREATE_DATABASE.format(name=_quoted(name))
        )
    except DBAPIError as exc:
        if _code(exc) in NO_PRIVILEGE:
            user = url.username or "the user"
            message = CANNOT_CREATE.format(name=name, url=shown_url(settings), user=user)
            raise DatabaseError(message) from exc
        raise DatabaseError(describe_failure(settings, exc)) from exc
    return CREATED.format(name=name, url=shown_url(settings))


async def _execute(settings: Settings, url: URL, statement: str) -> None:
    timeout = max(1, int(settings.DB_TIMEOUT_SECONDS))
    engine = create_async_engine(
        url,
        poolclass=NullPool,
        connect_args={"connect_timeout": timeout, "charset": "utf8mb4"},
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _code(exc: DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0][:300] if lines else type(cause).__name__
