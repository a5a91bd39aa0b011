"""kill -9 of a real server under concurrent load: every event it acknowledged (201) is stored.

The server runs as its own process (`python -m app serve`); the test drives the original
middleware's lifecycle calls from many concurrent workers, sends SIGKILL once enough were
acknowledged (so requests are in flight), then counts acknowledged against stored.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import text

from app.store.db import create_engine
from tests.conftest import BACKENDS, make_settings, migrate
from tests.live import run_supervisor

pytestmark = pytest.mark.slow

WORKERS = 24
KILL_AFTER_ACKS = 1_500
MAX_REQUESTS = 20_000  # a bound on the load loop should the kill never come
LOAD_BOUND_SECONDS = 60.0
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
LIFECYCLE = ("started", "complete")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    database_url: str
    log: Path


@dataclass
class Load:
    """What the workers saw: every (jid, event) answered 201, and the state at the kill."""

    prefix: str
    server: subprocess.Popen[bytes]
    acked: set[tuple[str, str]] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0
    sent: int = 0
    in_flight: int = 0
    in_flight_at_kill: int | None = None
    acked_at_kill: int = 0


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """`python -m app serve` on a free port, on MariaDB or a fresh migrated SQLite file."""
    if request.param == "mysql":
        database_url: str = request.getfixturevalue("mysql_url")
    else:
        database_url = f"sqlite:///{tmp_path / 'crash.db'}"
        migrate(database_url)
    with run_supervisor(database_url, tmp_path) as live:
        yield Server(live.process, live.url, database_url, live.log)


async def post(client: httpx.AsyncClient, load: Load, path: str, fields: dict[str, str]) -> bool:
    """One ingest call; True when acknowledged. A transport error (the kill) ends a worker."""
    load.sent += 1
    load.in_flight += 1
    try:
        response = await client.post(path, content=urlencode(fields), headers=FORM)
    finally:
        load.in_flight -= 1
    load.statuses[response.status_code] = load.statuses.get(response.status_code, 0) + 1
    return response.status_code == 201


async def drive(client: httpx.AsyncClient, load: Load, worker: int) -> None:
    """Walk fresh jobs through queued, started and complete until the server is gone."""
    for n in range(MAX_REQUESTS):
        if load.sent >= MAX_REQUESTS:
            return
        jid = f"{load.prefix}-{worker}-{n}"
        fields = {"arguments": "[1]", "job_class": "CrashJob", "queue": "default"}
        try:
            if not await post(client, load, "/api/v1/jobs", {**fields, "job_id": jid}):
                continue
            record(load, jid, "queued")
            for event in LIFECYCLE:
                if not await post(client, load, f"/api/v1/jobs/{jid}/{event}", fields):
                    break
                record(load, jid, event)
        except httpx.TransportError:
            load.transport_errors += 1
            return


def record(load: Load, jid: str, event: str) -> None:
    load.acked.add((jid, event))
    if len(load.acked) >= KILL_AFTER_ACKS and load.in_flight_at_kill is None:
        load.in_flight_at_kill = load.in_flight
        load.acked_at_kill = len(load.acked)
        load.server.send_signal(signal.SIGKILL)


async def stored(database_url: str, prefix: str) -> tuple[set[tuple[str, str]], set[str]]:
    """The (jid, event) timeline rows and the ledger jids with `prefix`, read afresh."""
    engine = create_engine(make_settings(database_url), name="supervisor-tests")
    pattern = {"prefix": prefix + "-%"}
    try:
        async with engine.connect() as conn:
            events = await conn.execute(
                text("SELECT DISTINCT jid, event FROM job_events WHERE jid LIKE :prefix"), pattern
            )
            jobs = await conn.execute(text("SELECT jid FROM jobs WHERE jid LIKE :prefix"), pattern)
            return {(jid, event) for jid, event in events}, {jid for (jid,) in jobs}
    finally:
        await engine.dispose()


async def run_load_and_kill(server: Server, load: Load) -> None:
    limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=10.0) as client:
        async with asyncio.timeout(LOAD_BOUND_SECONDS):
            await asyncio.gather(*(drive(client, load, n) for n in range(WORKERS)))
    # Reaped before reading: no thread of the server may still be writing.
    await asyncio.to_thread(server.process.wait, 10)


async def test_acknowledged_events_survive_kill_9_under_load(server: Server) -> None:
    load = Load(prefix=f"crash-{secrets.token_hex(4)}", server=server.process)
    await run_load_and_kill(server, load)
    events, jobs = await stored(server.database_url, load.prefix)

    lost = sorted(load.acked - events)
    missing_rows = sorted({jid for jid, _ in load.acked} - jobs)
    report = (
        f"acked {len(load.acked)} ({load.acked_at_kill} before the kill), sent {load.sent}, "
        f"in flight at kill {load.in_flight_at_kill}, transport errors {load.transport_errors}, "
        f"statuses {load.statuses}; stored {len(events)} events ({len(events - load.acked)} "
        f"never acked) and {len(jobs)} jobs"
    )
    assert load.in_flight_at_kill is not None, f"the kill never came: {report}"
    assert load.in_flight_at_kill > 0, f"nothing was in flight at the kill: {report}"
    assert server.process.returncode == -signal.SIGKILL, report
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {lost[:5]}: {report}"
    assert not missing_rows, f"{len(missing_rows)} acked jobs have no row: {report}"
    assert set(load.statuses) <= {201, 503}, report
