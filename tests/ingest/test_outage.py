"""A database outage behind a TCP proxy the test cuts or blackholes: 503 with Retry-After while
it lasts (quickly, with a bounded queue), 201 again once it ends without restarting the app, and
nothing that was acknowledged is lost."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlencode

import httpx
import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text

from app.main import SupervisorApp, create_app
from app.store.db import create_engine
from tests.conftest import make_settings, through
from tests.ingest.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# Small batches and a small queue, so a wave of posts overflows the writer while it waits.
BATCH_SIZE = 10
MAX_PENDING = 50
WRITER_CONNECTIONS = 2
RETRY_AFTER_SECONDS = 1
# Generous bounds, enforced with asyncio.timeout: a hang fails the test, slowness does not.
RESPONSE_BOUND_SECONDS = 10.0
RECOVERY_DEADLINE_SECONDS = 30.0
POLL_SECONDS = 0.05
WAVE = 200  # concurrent posts while the database is away: four times MAX_PENDING

Acked = Counter[tuple[str, str]]


@pytest.fixture
async def outage_app(mysql_url: str, mysql_proxy: TcpProxy) -> AsyncIterator[SupervisorApp]:
    settings = make_settings(
        through(mysql_url, mysql_proxy),
        DB_TIMEOUT_SECONDS=1,
        INGEST_TIMEOUT_SECONDS=2,
        RETRY_AFTER_SECONDS=RETRY_AFTER_SECONDS,
        WRITER_BATCH_SIZE=BATCH_SIZE,
        MAX_BATCH_EVENTS=BATCH_SIZE,
        WRITER_MAX_PENDING=MAX_PENDING,
        WRITER_CONNECTIONS=WRITER_CONNECTIONS,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        try:
            yield app
        finally:
            # A failed test must not leave the shutdown waiting on a blackhole.
            mysql_proxy.restore()


@pytest.fixture
async def client(outage_app: SupervisorApp) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=outage_app)
    async with AsyncClient(transport=transport, base_url="http://supervisor.test") as http:
        yield http


def jids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{n}" for n in range(count)]


async def post_queued(client: AsyncClient, jid: str) -> httpx.Response:
    """The original Faraday middleware's enqueue call, bounded: a hang fails the test."""
    body = urlencode(
        {"arguments": "[1]", "job_class": "OutageJob", "job_id": jid, "queue": "default"}
    )
    async with asyncio.timeout(RESPONSE_BOUND_SECONDS):
        return await client.post("/api/v1/jobs", content=body, headers=FORM)


async def post_all(client: AsyncClient, batch: list[str], acked: Acked) -> list[httpx.Response]:
    """Post every jid at once; each one answered 201 is recorded as acknowledged."""
    responses = await asyncio.gather(*(post_queued(client, jid) for jid in batch))
    for jid, response in zip(batch, responses, strict=True):
        if response.status_code == 201:
            acked[(jid, "queued")] += 1
    return list(responses)


def assert_unavailable(responses: list[httpx.Response]) -> None:
    for response in responses:
        assert response.status_code == 503, response.text
        assert response.headers.get("retry-after") == str(RETRY_AFTER_SECONDS)
        body = response.json()
        assert set(body) == {"error", "detail"}, body
        assert body["error"] == "unavailable"


def sample(app: SupervisorApp, name: str) -> float:
    value = app.state.registry.get_sample_value(name)
    assert value is not None, f"{name} is not registered"
    return float(value)


def rejected(app: SupervisorApp, reason: str) -> float:
    # A label set appears on its first increment: absent means none yet.
    value = app.state.registry.get_sample_value(
        "supervisor_events_rejected_total", {"reason": reason}
    )
    return float(value or 0)


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `condition` every POLL_SECONDS until it holds; fail after the recovery deadline."""
    try:
        async with asyncio.timeout(RECOVERY_DEADLINE_SECONDS):
            while True:
                if await condition():
                    return
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        pytest.fail(f"{what}: not within {RECOVERY_DEADLINE_SECONDS:g}s")


async def watch_pending(app: SupervisorApp, seen: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        seen.append(sample(app, "supervisor_writer_pending_events"))
        await asyncio.sleep(0.005)


async def wave_while_down(
    app: SupervisorApp, client: AsyncClient, batch: list[str], acked: Acked
) -> float:
    """WAVE concurrent posts while the database is away; returns the most events ever pending."""
    seen: list[float] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_pending(app, seen, stop))
    try:
        responses = await post_all(client, batch, acked)
    finally:
        stop.set()
        await watcher
    assert_unavailable(responses)
    assert sample(app, "supervisor_writer_pending_events") == 0
    return max(seen)


def accepting(client: AsyncClient, prefix: str, acked: Acked) -> Callable[[], Awaitable[bool]]:
    """A poll that posts a new event each time; True once one is acknowledged."""
    attempts = iter(jids(prefix, 100_000))

    async def accepted() -> bool:
        responses = await post_all(client, [next(attempts)], acked)
        assert responses[0].status_code in (201, 503), responses[0].text
        return responses[0].status_code == 201

    return accepted


async def stored_events(mysql_url: str, prefix: str) -> Acked:
    """(jid, event) -> rows in job_events, read on the real database (not through the proxy)."""
    engine = create_engine(make_settings(mysql_url), name="supervisor-tests")
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT jid, event, COUNT(*) FROM job_events WHERE jid LIKE :prefix "
                    "GROUP BY jid, event"
                ),
                {"prefix": prefix + "-%"},
            )
            return Counter({(jid, event): count for jid, event, count in result})
    finally:
        await engine.dispose()


def take_down(mysql_proxy: TcpProxy, failure: str) -> None:
    if failure == "cut":
        mysql_proxy.cut()
    else:
        mysql_proxy.blackhole()


@pytest.mark.parametrize("failure", ["cut", "blackhole"])
async def test_outage_answers_503_then_recovers_without_restart_or_lost_acks(
    failure: str,
    outage_app: SupervisorApp,
    client: AsyncClient,
    mysql_proxy: TcpProxy,
    mysql_url: str,
) -> None:
    prefix = f"outage-{failure}-{secrets.token_hex(4)}"
    acked: Acked = Counter()
    # Concurrent, so that every flusher holds a connection when the database goes away.
    before = await post_all(client, jids(f"{prefix}-before", 40), acked)
    assert [r.status_code for r in before] == [201] * 40, [r.text for r in before if r.is_error]

    take_down(mysql_proxy, failure)
    await assert_down_then_back(outage_app, client, mysql_proxy, prefix, acked)
    await assert_stored(mysql_url, prefix, acked)


async def test_database_down_from_the_start_answers_503_then_recovers(
    outage_app: SupervisorApp, client: AsyncClient, mysql_proxy: TcpProxy, mysql_url: str
) -> None:
    """No connection was ever opened: the first write fails while connecting."""
    prefix = f"outage-start-{secrets.token_hex(4)}"
    acked: Acked = Counter()
    mysql_proxy.cut()
    await assert_down_then_back(outage_app, client, mysql_proxy, prefix, acked)
    await assert_stored(mysql_url, prefix, acked)


async def assert_down_then_back(
    app: SupervisorApp, client: AsyncClient, mysql_proxy: TcpProxy, prefix: str, acked: Acked
) -> None:
    """With the mysql_proxy down: 503s, refused at the door once known; restored: 201s again."""
    assert_unavailable(await post_all(client, [f"{prefix}-first"], acked))
    assert sample(app, "supervisor_database_up") == 0

    # Once the writer knows the database is down it refuses at the door: nothing is queued.
    refused_before = rejected(app, "database_down")
    await wave_while_down(app, client, jids(f"{prefix}-refused", WAVE), acked)
    assert rejected(app, "database_down") - refused_before == WAVE

    # The outage outlasts several probes (each a new connection): failed probes do not stop it.
    probes_from = mysql_proxy.accepted

    async def probed_thrice() -> bool:
        return mysql_proxy.accepted >= probes_from + 3

    await wait_until(probed_thrice, "the writer kept probing the database")
    assert_unavailable(await post_all(client, [f"{prefix}-still"], acked))
    # Nor do they leak sockets: at most each flusher's connection and the probe in progress.
    assert len(mysql_proxy.links) <= WRITER_CONNECTIONS + 1

    mysql_proxy.restore()

    async def writer_is_back() -> bool:
        return sample(app, "supervisor_database_up") == 1

    await wait_until(writer_is_back, "the writer found the database again")
    # Back means back: no connection from before the outage may fail a post now, one by one
    # (the flusher that found the database idle) nor many at once (every flusher busy).
    for jid in jids(f"{prefix}-next", 3):
        (response,) = await post_all(client, [jid], acked)
        assert response.status_code == 201, response.text
    after = await post_all(client, jids(f"{prefix}-after", 40), acked)
    assert [r.status_code for r in after] == [201] * 40, [r.text for r in after if r.is_error]


async def test_queue_stays_bounded_while_the_database_hangs(
    outage_app: SupervisorApp, client: AsyncClient, mysql_proxy: TcpProxy, mysql_url: str
) -> None:
    """A blackhole is the outage where requests pile up: every flusher waits on a batch until
    its timeout. The queue must stay under WRITER_MAX_PENDING and the overflow answer 503."""
    prefix = f"outage-hang-{secrets.token_hex(4)}"
    acked: Acked = Counter()
    before = await post_all(client, jids(f"{prefix}-before", 10), acked)
    assert [r.status_code for r in before] == [201] * 10, [r.text for r in before if r.is_error]

    mysql_proxy.blackhole()
    most_pending = await wave_while_down(outage_app, client, jids(f"{prefix}-down", WAVE), acked)
    assert 0 < most_pending <= MAX_PENDING
    assert rejected(outage_app, "queue_full") > 0
    assert sample(outage_app, "supervisor_database_up") == 0

    mysql_proxy.restore()
    await wait_until(accepting(client, f"{prefix}-poll", acked), "201 again after the outage")
    await assert_stored(mysql_url, prefix, acked)


async def assert_stored(mysql_url: str, prefix: str, acked: Acked) -> None:
    stored = await stored_events(mysql_url, prefix)
    missing = sorted(key for key in acked if stored[key] < acked[key])
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged events lost: {missing[:5]}"
    assert len(acked) > 0
