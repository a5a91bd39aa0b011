"""Writing events: the ledger upsert and the timeline insert, in one statement each per batch.

This is the one dialect-specific spot. The upsert merges an event into its row so that any order
or repetition of a job's events settles on the same row: every column is a max/min or is taken
from the event with the greatest key (event time in µs * 8 + lifecycle rank).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import RANK, EventName, JobEvent, RunTimes
from app.errors import Unavailable
from app.store.tables import read_time

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

INSERT_COLUMNS = (
    "jid job_class queue arguments arguments_truncated arguments_redacted info_key status "
    "status_key enqueued_at scheduled_for started_at completed_at failed_at first_seen_at "
    "last_event_at attempts error_class error_message process requeued_as"
).split()

# Two events of one run can carry the same start (or failure) time with different details (a
# `complete` without a process, a `failed` with one): on a tie the greatest non-null value wins,
# so the row does not depend on arrival order.
# Assignment order matters on MySQL/MariaDB: a later expression sees the columns already
# assigned, so each key column (status_key, info_key, started_at, failed_at) comes after the
# columns whose choice depends on it. SQLite evaluates all against the old row; both agree.
UPSERT_ASSIGNMENTS = """
status = CASE WHEN {new[status_key]} > status_key THEN {new[status]} ELSE status END,
job_class = CASE WHEN {new[info_key]} > COALESCE(info_key, -1)
    THEN {new[job_class]} ELSE job_class END,
queue = CASE WHEN {new[info_key]} > COALESCE(info_key, -1) THEN {new[queue]} ELSE queue END,
arguments = CASE WHEN {new[info_key]} > COALESCE(info_key, -1)
    THEN {new[arguments]} ELSE arguments END,
arguments_truncated = CASE WHEN {new[info_key]} > COALESCE(info_key, -1)
    THEN {new[arguments_truncated]} ELSE arguments_truncated END,
arguments_redacted = CASE WHEN {new[info_key]} > COALESCE(info_key, -1)
    THEN {new[arguments_redacted]} ELSE arguments_redacted END,
info_key = COALESCE({greatest}(info_key, {new[info_key]}), info_key, {new[info_key]}),
process = CASE WHEN {new[started_at]} IS NULL THEN process
    WHEN started_at IS NULL OR {new[started_at]} > started_at THEN {new[process]}
    WHEN {new[started_at]} = started_at
    THEN COALESCE({greatest}(process, {new[process]}), process, {new[process]})
    ELSE process END,
error_class = CASE WHEN {new[failed_at]} IS NULL THEN error_class
    WHEN failed_at IS NULL OR {new[failed_at]} > failed_at THEN {new[error_class]}
    WHEN {new[failed_at]} = failed_at
    THEN COALESCE({greatest}(error_class, {new[error_class]}), error_class, {new[error_class]})
    ELSE error_class END,
error_message = CASE WHEN {new[failed_at]} IS NULL THEN error_message
    WHEN failed_at IS NULL OR {new[failed_at]} > failed_at THEN {new[error_message]}
    WHEN {new[failed_at]} = failed_at THEN COALESCE(
        {greatest}(error_message, {new[error_message]}), error_message, {new[error_message]})
    ELSE error_message END,
enqueued_at = COALESCE({least}(enqueued_at, {new[enqueued_at]}), enqueued_at, {new[enqueued_at]}),
scheduled_for = COALESCE(
    {greatest}(scheduled_for, {new[scheduled_for]}), scheduled_for, {new[scheduled_for]}),
started_at = COALESCE({greatest}(started_at, {new[started_at]}), started_at, {new[started_at]}),
completed_at = COALESCE(
    {greatest}(completed_at, {new[completed_at]}), completed_at, {new[completed_at]}),
failed_at = COALESCE({greatest}(failed_at, {new[failed_at]}), failed_at, {new[failed_at]}),
first_seen_at = {least}(first_seen_at, {new[first_seen_at]}),
last_event_at = {greatest}(last_event_at, {new[last_event_at]}),
attempts = {greatest}(attempts, {new[attempts]}),
requeued_as = CASE WHEN {new[requeued_as]} IS NOT NULL
    AND (requeued_as IS NULL OR {new[status_key]} > status_key)
    THEN {new[requeued_as]} ELSE requeued_as END,
status_key = {greatest}(status_key, {new[status_key]})
"""

TIMELINE_COLUMNS = (
    "jid event at received_at queue job_class process retry_count error_class error_message"
).split()


def _upsert(dialect: str, values: str) -> str:
    columns = ", ".join(INSERT_COLUMNS)
    if dialect == "sqlite":
        new = {c: f"excluded.{c}" for c in INSERT_COLUMNS}
        tail = "ON CONFLICT (jid) DO UPDATE SET" + UPSERT_ASSIGNMENTS.format(
            new=new, greatest="max", least="min"
        )
    else:
        # VALUES(col) rather than a row alias: MariaDB has no row alias.
        new = {c: f"VALUES({c})" for c in INSERT_COLUMNS}
        tail = "ON DUPLICATE KEY UPDATE" + UPSERT_ASSIGNMENTS.format(
            new=new, greatest="GREATEST", least="LEAST"
        )
    return f"INSERT INTO jobs ({columns}) VALUES {values} {tail}"


def _timeline(values: str) -> str:
    return f"INSERT INTO job_events ({', '.join(TIMELINE_COLUMNS)}) VALUES {values}"


SQLITE_UPSERT = _upsert("sqlite", "(" + ", ".join("?" * len(INSERT_COLUMNS)) + ")")
SQLITE_TIMELINE = _timeline("(" + ", ".join("?" * len(TIMELINE_COLUMNS)) + ")")
# MySQL statements keep a {values} hole for the rendered multi-row VALUES list.
MYSQL_UPSERT = _upsert("mysql", "{values}")
MYSQL_TIMELINE = _timeline("{values}")


@dataclass(frozen=True, slots=True)
class Encoding:
    """How row values reach the driver: as parameters (SQLite) or as SQL literals (MySQL)."""

    text: Callable[[str | None], Any]
    time: Callable[[datetime | None], Any]
    number: Callable[[int | None], Any]


def _same(value: Any) -> Any:
    return value


def _sqlite_time(moment: datetime | None) -> str | None:
    # The text form SQLAlchemy's SQLite DateTime reads and writes (always with microseconds),
    # so stored times compare correctly as strings. Event times are always UTC.
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S.%f")


SQLITE_ENCODING = Encoding(text=_same, time=_sqlite_time, number=_same)


FAILURES = frozenset({EventName.FAILED, EventName.DEAD})


def event_key(event: JobEvent) -> int:
    """Orders events: later time first, then later lifecycle stage. Fits a signed BIGINT.

    Ranks run 1..8: rank 8 of one microsecond equals rank 0 of the next, which no event has,
    so keys stay unique and ordered.
    """
    return ((event.at - EPOCH) // MICROSECOND) * 8 + RANK[event.event]


def _ledger_row(event: JobEvent, enc: Encoding) -> tuple[Any, ...]:
    """The upsert's values, in INSERT_COLUMNS order."""
    key = event_key(event)
    name = event.event
    at = enc.time(event.at)
    null = enc.number(None)
    started_at = event.at if name is EventName.STARTED else event.started_at
    return (
        enc.text(event.jid),
        enc.text(event.job_class),
        enc.text(event.queue),
        enc.text(event.arguments),
        enc.number(int(event.arguments_truncated)),
        enc.number(int(event.arguments_redacted)),
        enc.number(key if event.job_class is not None else None),
        enc.text(name.value),
        enc.number(key),
        at if name is EventName.QUEUED else enc.time(event.enqueued_at),
        enc.time(event.scheduled_at) if name is EventName.SCHEDULED else null,
        enc.time(started_at),
        at if name is EventName.COMPLETE else null,
        at if name in FAILURES else null,
        at,
        at,
        enc.number(event.attempt),
        enc.text(event.error_class),
        enc.text(event.error_message),
        enc.text(event.process) if started_at is not None else null,
        enc.text(event.requeued_as),
    )


def _timeline_row(event: JobEvent, enc: Encoding) -> tuple[Any, ...]:
    """The timeline insert's values, in TIMELINE_COLUMNS order."""
    return (
        enc.text(event.jid),
        enc.text(event.event.value),
        enc.time(event.at),
        enc.time(event.received_at),
        enc.text(event.queue),
        enc.text(event.job_class),
        enc.text(event.process),
        enc.number(event.retry_count),
        enc.text(event.error_class),
        enc.text(event.error_message),
    )


class LedgerError(Exception):
    """A batch was not written; the subclass says whether retrying can help."""


class LedgerUnavailable(LedgerError):
    """The database cannot be reached or lost the connection: nothing was committed."""


class LedgerConflict(LedgerError):
    """A deadlock or lock wait timeout rolled the batch back: safe to retry at once."""


class LedgerRefused(LedgerError):
    """The database refused the data itself: retrying the same rows will fail again."""


# A conflict rolls the whole batch back; past this many retries the database is too busy now.
MAX_CONFLICT_RETRIES = 3
# What getting or keeping a connection raises when the database (not our data) is the problem:
# SQLAlchemy's wrapper of a refused connect, an empty pool, a bounded session's 503, a deadline.
UNREACHABLE = (DBAPIError, PoolTimeout, Unavailable, OSError, TimeoutError)

# MySQL error codes: 1205 lock wait timeout, 1213 deadlock; 2000-2999 are client-side
# connection errors; the rest mean the server is gone, shutting down or refusing connections.
MYSQL_CONFLICTS = {1205, 1213}
MYSQL_SERVER_GONE = {1040, 1053, 1077, 1152, 1158, 1159, 1160, 1161}


def _translated(conn: AsyncConnection, exc: Exception) -> Exception:
    """The driver's error as a LedgerError; anything else unchanged."""
    dbapi = conn.dialect.loaded_dbapi
    if isinstance(exc, OSError | TimeoutError) or not isinstance(exc, dbapi.Error):
        return exc
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if code in MYSQL_CONFLICTS:
        return LedgerConflict(str(exc))
    connection_lost = code is not None and (2000 <= code < 3000 or code in MYSQL_SERVER_GONE)
    lost_types = tuple(
        getattr(dbapi, name, OSError) for name in ("OperationalError", "InterfaceError")
    )
    if connection_lost or isinstance(exc, lost_types):
        return LedgerUnavailable(str(exc))
    return LedgerRefused(str(exc))


async def write_batch(conn: AsyncConnection, events: Sequence[JobEvent]) -> None:
    """Merge events into the ledger, append them to the timeline, and commit.

    Raises LedgerError subclasses (or OSError/TimeoutError) when nothing was committed.
    """
    try:
        await _write_batch(conn, events)
    except Exception as exc:
        translated = _translated(conn, exc)
        if translated is exc:
            raise
        raise translated from exc


Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection]]


async def write_events(connect: Connect, events: Sequence[JobEvent]) -> None:
    """The one way events reach the ledger: `write_batch` on a connection from `connect` (a
    fresh block per attempt), a conflict (deadlock, lock wait timeout) retried at once, up to
    MAX_CONFLICT_RETRIES times.

    Raises LedgerUnavailable when the database cannot take them now (unreachable, connection
    lost, out of time, still in conflict): nothing was committed, retry later. Raises
    LedgerRefused when the database refused the data itself.
    """
    for attempt in range(MAX_CONFLICT_RETRIES + 1):
        try:
            async with connect() as conn:
                await write_batch(conn, events)
            return
        except LedgerConflict as exc:
            if attempt == MAX_CONFLICT_RETRIES:
                raise LedgerUnavailable(str(exc)) from exc
        except UNREACHABLE as exc:
            raise LedgerUnavailable(_first_line(exc)) from exc


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0][:200] if lines else type(cause).__name__


async def _write_batch(conn: AsyncConnection, events: Sequence[JobEvent]) -> None:
    """Merge events into the ledger, append them to the timeline, and commit.

    The ingest hot path, so it talks to the driver directly and owns its transaction: on
    MySQL each statement is one multi-row INSERT rendered here, strings escaped by the driver
    (a cursor's own parameter substitution cost more than the database's work); on SQLite,
    executemany with parameters.
    Rows go in jid order so concurrent batches lock rows in the same order.
    """
    if not events:
        return
    ordered = sorted(events, key=lambda e: e.jid)
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None, "an open connection always has its driver connection"
    if conn.dialect.name == "sqlite":
        await driver.executemany(SQLITE_UPSERT, [_ledger_row(e, SQLITE_ENCODING) for e in ordered])
        await driver.executemany(
            SQLITE_TIMELINE, [_timeline_row(e, SQLITE_ENCODING) for e in ordered]
        )
    else:
        enc = _mysql_encoding(driver)
        upserts = _rendered(MYSQL_UPSERT, [_ledger_row(e, enc) for e in ordered])
        inserts = _rendered(MYSQL_TIMELINE, [_timeline_row(e, enc) for e in ordered])
        async with driver.cursor() as cursor:
            for statement in (*upserts, *inserts):
                await cursor.execute(statement)
    await driver.commit()


RUN_TIMES = "SELECT jid, enqueued_at, started_at, attempts FROM jobs WHERE jid IN ({marks})"
# jids per read-back statement: one statement for any default-sized batch, and far below
# SQLite's bound-parameter limit and MySQL's packet size.
RUN_TIMES_CHUNK = 1000


async def run_times(conn: AsyncConnection, jids: Collection[str]) -> dict[str, RunTimes]:
    """The ledger rows' run times for `jids`, read by primary key; jids without a row are absent.

    For the writer, on its own connection right after a commit. On MySQL the read transaction
    is rolled back at once, so no read view outlives the call. Raises what the driver raises.
    """
    unique = sorted(set(jids))
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None, "an open connection always has its driver connection"
    rows: list[Any] = []
    for start in range(0, len(unique), RUN_TIMES_CHUNK):
        chunk = unique[start : start + RUN_TIMES_CHUNK]
        if conn.dialect.name == "sqlite":
            marks = ",".join("?" * len(chunk))
            async with driver.execute(RUN_TIMES.format(marks=marks), chunk) as cursor:
                rows.extend(await cursor.fetchall())
        else:
            quote = _mysql_encoding(driver).text
            marks = ",".join(quote(jid) for jid in chunk)
            async with driver.cursor() as cursor:
                await cursor.execute(RUN_TIMES.format(marks=marks))
                rows.extend(await cursor.fetchall())
    if unique and conn.dialect.name != "sqlite":
        await driver.rollback()
    return {
        jid: RunTimes(_read_time(enqueued_at), _read_time(started_at), attempts)
        for jid, enqueued_at, started_at, attempts in rows
    }


def _read_time(value: datetime | str | None) -> datetime | None:
    # asyncmy returns DATETIME(6) as naive datetimes; the raw SQLite driver returns the text.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return read_time(value)


# MySQL literals -----------------------------------------------------------------------------
# Well under MySQL's and asyncmy's 16 MiB max_allowed_packet, even at 4 bytes a character.
MAX_STATEMENT_CHARS = 2 * 1024 * 1024


def _mysql_encoding(driver: Any) -> Encoding:
    """SQL literals for this connection. Strings go through asyncmy's `escape_string`, which
    follows the connection's sql_mode (quotes doubled under NO_BACKSLASH_ESCAPES, read from the
    last reply's server status; backslash escapes otherwise). Times and numbers need no escaping:
    rendered here, cheaper than the driver's generic `literal`."""
    escape = driver.escape_string

    def text(value: str | None) -> str:
        return "NULL" if value is None else "'" + escape(value) + "'"

    return Encoding(text=text, time=_mysql_time, number=_mysql_number)


def _mysql_time(moment: datetime | None) -> str:
    # Event times are always UTC; DATETIME(6) stores them without a zone.
    return "NULL" if moment is None else "'" + moment.replace(tzinfo=None).isoformat(" ") + "'"


def _mysql_number(value: int | None) -> str:
    return "NULL" if value is None else str(value)


def _rendered(template: str, rows: list[tuple[Any, ...]]) -> Iterator[str]:
    """The statements for rows of literals, each under MAX_STATEMENT_CHARS (max_allowed_packet)."""
    chunk: list[str] = []
    size = 0
    for row in rows:
        rendered = "(" + ",".join(row) + ")"
        if chunk and size + len(rendered) > MAX_STATEMENT_CHARS:
            yield template.format(values=",".join(chunk))
            chunk, size = [], 0
        chunk.append(rendered)
        size += len(rendered) + 1
    if chunk:
        yield template.format(values=",".join(chunk))
