"""write_events, the one way events reach the ledger: a conflict is retried on a fresh
connection, an outage and refused data come back as the LedgerError that says what to do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.domain import EventName, JobEvent
from app.store.db import create_engine
from app.store.ledger_writes import LedgerRefused, LedgerUnavailable, write_batch, write_events
from tests.api.test_ingest import job_row
from tests.conftest import make_settings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# Nothing listens there: connecting is refused at once.
CLOSED_PORT_URL = "mysql://root@127.0.0.1:1/nowhere"


def queued(jid: str, job_class: str | None = None) -> JobEvent:
    return JobEvent(jid, EventName.QUEUED, NOW, NOW, job_class=job_class, queue="q", arguments="[]")


@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
async def test_a_lock_wait_timeout_is_retried_on_a_fresh_connection(engine: AsyncEngine) -> None:
    """Another transaction holds the row: the first attempt times out waiting (error 1205),
    the retry, once the lock is gone, commits."""
    async with engine.connect() as conn:
        await write_batch(conn, [queued("held")])
    attempts: list[AsyncConnection] = []
    async with engine.connect() as holder:
        await holder.execute(text("SELECT jid FROM jobs WHERE jid = 'held' FOR UPDATE"))

        @asynccontextmanager
        async def connect() -> AsyncIterator[AsyncConnection]:
            if attempts:
                await holder.rollback()  # the lock goes: the retry gets through
            async with engine.connect() as conn:
                attempts.append(conn)
                await conn.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
                yield conn

        started = JobEvent("held", EventName.STARTED, NOW + timedelta(seconds=1), NOW)
        await write_events(connect, [started])
    assert len(attempts) == 2
    row = await job_row(engine, "held")
    assert row is not None
    assert row["status"] == "started"


async def test_an_unreachable_database_is_ledger_unavailable() -> None:
    engine = create_engine(make_settings(CLOSED_PORT_URL, DB_TIMEOUT_SECONDS=1.0))
    try:
        with pytest.raises(LedgerUnavailable):
            await write_events(engine.connect, [queued("nowhere")])
    finally:
        await engine.dispose()


@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
async def test_data_the_database_refuses_is_ledger_refused(engine: AsyncEngine) -> None:
    too_long = queued("long", job_class="C" * 300)
    with pytest.raises(LedgerRefused):
        await write_events(engine.connect, [too_long])
    assert await job_row(engine, "long") is None
