"""Every HTTP route under an outage: the database refused or blackholed, Redis cut or blackholed.

Each route answers within the deadline (the settings' timeouts, far under 10 s here); a route
that needs what is down answers 503 with Retry-After and names the cause in its body; no route
answers 500. The table below names what each route needs, and a test checks it lists every route
the app serves, so a new route cannot skip this walk.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis

from app.api import ingest
from app.main import SupervisorApp, create_app
from tests.conftest import REDIS_URL, make_settings, through
from tests.ingest.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

# Generous for a loaded CI machine (a route that needs only Redis must not time out on it), and
# still far under the bound.
DB_TIMEOUT_SECONDS = 2.0
REDIS_TIMEOUT_SECONDS = 2.0
# The most a route may take: well past either timeout, and what the settings allow in all.
ANSWER_BOUND_SECONDS = 10.0
CAUSE = {"db": "database", "redis": "redis"}
JID = "0123456789abcdef01234567"
RETRY_KEY = f"1700000000.5-{JID}"
PAYLOAD = orjson.dumps({"jid": JID, "class": "HardJob", "queue": "default", "args": [1]})
FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True)
class Call:
    """One request for a route (its method and path template) and what the route needs."""

    method: str
    template: str
    url: str
    needs: frozenset[str]
    # Pages that still render without it, saying what is missing (the dashboard).
    degrades: frozenset[str] = frozenset()
    json: Any = None
    form: dict[str, Any] | None = None
    csrf: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def _call(method: str, template: str, url: str, needs: str = "", **kwargs: Any) -> Call:
    return Call(method, template, url, frozenset(needs.split()), **kwargs)


CALLS = [
    _call("GET", "/openapi.json", "/openapi.json"),
    _call("GET", "/docs", "/docs"),
    _call("GET", "/healthz", "/healthz"),
    _call("GET", "/readyz", "/readyz", "db redis"),
    _call("GET", "/metrics", "/metrics"),
    _call("GET", "/prometheus/metrics", "/prometheus/metrics"),
    # Ingest.
    _call(
        "POST",
        "/api/v1/jobs",
        "/api/v1/jobs",
        "db",
        form={"job_id": "outage-1", "arguments": "[1]", "job_class": "HardJob", "queue": "q"},
    ),
    *(
        _call("POST", f"/api/v1/jobs/{{job_id}}/{stage}", f"/api/v1/jobs/outage-1/{stage}", "db")
        for stage in ("started", "complete", "failed")
    ),
    _call(
        "POST",
        "/api/v1/events",
        "/api/v1/events",
        "db",
        json=[{"event": "queued", "job_id": "outage-2", "at": 1_700_000_000}],
    ),
    # The ledger.
    _call("GET", "/api/v1/jobs", "/api/v1/jobs", "db"),
    _call("GET", "/api/v1/jobs/durations", "/api/v1/jobs/durations", "db"),
    _call("GET", "/api/v1/jobs/{job_id}", f"/api/v1/jobs/{JID}", "db"),
    _call("GET", "/api/v1/history", "/api/v1/history", "db"),
    _call("POST", "/api/v1/jobs/requeue", "/api/v1/jobs/requeue", "db redis", json={}),
    # Sidekiq's Redis.
    *(
        _call("GET", f"/api/v1/{name}", f"/api/v1/{name}", "redis")
        for name in ("stats", "queues", "processes", "busy", "retries", "scheduled", "dead")
    ),
    _call("GET", "/api/v1/queues/{name}/jobs", "/api/v1/queues/default/jobs", "redis"),
    _call(
        "POST",
        "/api/v1/{set_name}/actions",
        "/api/v1/retries/actions",
        "redis",
        json={"action": "delete", "keys": [RETRY_KEY]},
    ),
    _call("POST", "/api/v1/processes/{signal}", "/api/v1/processes/quiet", "redis"),
    _call("POST", "/api/v1/drain", "/api/v1/drain?host=nowhere", "redis"),
    # The GUI.
    _call("GET", "/sidekiq", "/sidekiq", degrades=frozenset({"redis"})),
    _call("GET", "/sidekiq/stats.json", "/sidekiq/stats.json", "redis"),
    _call("GET", "/sidekiq/history.json", "/sidekiq/history.json", "db"),
    _call("GET", "/sidekiq/busy", "/sidekiq/busy", "redis"),
    _call("POST", "/sidekiq/busy", "/sidekiq/busy", "redis", form={"signal": "quiet"}, csrf=True),
    _call("GET", "/sidekiq/queues", "/sidekiq/queues", "redis"),
    _call("GET", "/sidekiq/queues/{name:path}", "/sidekiq/queues/default", "redis"),
    _call(
        "POST",
        "/sidekiq/queues/{name:path}/delete",
        "/sidekiq/queues/default/delete",
        "redis",
        form={"job": base64.b64encode(PAYLOAD).decode()},
        csrf=True,
    ),
    *(
        _call("GET", f"/sidekiq/{name}", f"/sidekiq/{name}", "redis")
        for name in ("retries", "scheduled", "dead")
    ),
    *(
        _call(
            "POST",
            f"/sidekiq/{name}/actions",
            f"/sidekiq/{name}/actions",
            "redis",
            form={"action": "delete", "key": RETRY_KEY},
            csrf=True,
        )
        for name in ("retries", "scheduled", "dead")
    ),
    *(
        _call("GET", f"/sidekiq/{name}/{{key}}", f"/sidekiq/{name}/{RETRY_KEY}", "redis")
        for name in ("retries", "scheduled", "dead")
    ),
    _call("GET", "/sidekiq/jobs", "/sidekiq/jobs", "db"),
    _call("GET", "/sidekiq/jobs/requeue", "/sidekiq/jobs/requeue?status=started", "db redis"),
    _call(
        "POST",
        "/sidekiq/jobs/requeue",
        "/sidekiq/jobs/requeue",
        "db redis",
        form={"status": "started"},
        csrf=True,
    ),
    _call("GET", "/sidekiq/jobs/{jid}", f"/sidekiq/jobs/{JID}", "db"),
    _call("GET", "/sidekiq/metrics", "/sidekiq/metrics", "db"),
    _call("GET", "/sidekiq/login", "/sidekiq/login"),
    _call("POST", "/sidekiq/login", "/sidekiq/login", form={"name": "a", "password": "b"}),
    _call("POST", "/sidekiq/logout", "/sidekiq/logout", csrf=True),
]


def served_routes(app: SupervisorApp) -> set[tuple[str, str]]:
    """(method, path template) of every route the app serves, HEAD aside: its router's, and
    the ingest POSTs its fast lane answers (those it documents)."""
    found = {("POST", op.path) for op in ingest.OPERATIONS}

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if hasattr(route, "original_router"):
                walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif getattr(route, "methods", None):
                found.update((m, prefix + route.path) for m in route.methods if m != "HEAD")

    walk(app.router.routes, "")
    return found


def test_the_walk_covers_every_route() -> None:
    app = create_app(make_settings("sqlite:///:memory:"))
    assert served_routes(app) == {(call.method, call.template) for call in CALLS}


@pytest.fixture
async def seeded_redis(redis: Redis) -> Redis:
    await redis.sadd("queues", "default")
    await redis.lpush("queue:default", PAYLOAD)
    await redis.zadd("retry", {PAYLOAD: 1_700_000_000.5})
    return redis


@pytest.fixture
async def outage_app(
    mysql_url: str, mysql_proxy: TcpProxy, redis_proxy: TcpProxy, seeded_redis: Redis
) -> AsyncIterator[SupervisorApp]:
    settings = make_settings(
        through(mysql_url, mysql_proxy),
        REDIS_URL=through(REDIS_URL, redis_proxy),
        DB_TIMEOUT_SECONDS=DB_TIMEOUT_SECONDS,
        REDIS_TIMEOUT_SECONDS=REDIS_TIMEOUT_SECONDS,
        INGEST_TIMEOUT_SECONDS=DB_TIMEOUT_SECONDS,
        RETRY_AFTER_SECONDS=1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        try:
            yield app
        finally:
            mysql_proxy.restore()  # the shutdown must not wait on a blackhole
            redis_proxy.restore()


@pytest.fixture
async def gui(outage_app: SupervisorApp) -> AsyncIterator[tuple[AsyncClient, str]]:
    """A client and the GUI's CSRF token, read while everything is up."""
    transport = ASGITransport(app=outage_app)
    async with AsyncClient(transport=transport, base_url="http://supervisor.test") as client:
        page = await client.get("/sidekiq/queues")
        assert page.status_code == 200, page.text
        token = re.search(r'data-csrf="([^"]+)"', page.text)
        assert token is not None, "the queues page carries the CSRF token"
        yield client, token.group(1)


async def _send(client: AsyncClient, call: Call, csrf: str) -> httpx.Response:
    form = dict(call.form or {})
    if call.csrf:
        form["csrf"] = csrf
    async with asyncio.timeout(ANSWER_BOUND_SECONDS):
        if call.json is not None:
            return await client.request(call.method, call.url, json=call.json)
        if form or call.method == "POST":
            return await client.request(call.method, call.url, data=form, headers=FORM_TYPE)
        return await client.request(call.method, call.url)


def _problems(call: Call, response: httpx.Response, down: str) -> list[str]:
    where = f"{call.method} {call.url}: {response.status_code}"
    if down in call.degrades:
        if response.status_code == 200 and CAUSE[down] in response.text.lower():
            return []
        return [f"{where}, expected a page naming the {CAUSE[down]}"]
    if down not in call.needs:
        return [] if response.status_code < 500 else [f"{where} but needs no {down}"]
    if response.status_code != 503:
        return [f"{where}, expected 503 ({down} is down): {response.text[:200]}"]
    found = []
    if "retry-after" not in response.headers:
        found.append(f"{where} without Retry-After")
    if CAUSE[down] not in response.text.lower():
        found.append(f"{where} does not name the {CAUSE[down]}: {response.text[:200]}")
    return found


async def _walk(client: AsyncClient, csrf: str, down: str) -> list[str]:
    """Every call at once (as a real outage meets them), each bounded; the problems found."""
    responses = await asyncio.gather(*(_send(client, call, csrf) for call in CALLS))
    return [
        problem
        for call, response in zip(CALLS, responses, strict=True)
        for problem in _problems(call, response, down)
    ]


async def test_database_refused(gui: tuple[AsyncClient, str], mysql_proxy: TcpProxy) -> None:
    client, csrf = gui
    mysql_proxy.cut()
    problems = await _walk(client, csrf, "db")
    assert problems == [], "\n".join(problems)


async def test_database_blackholed(gui: tuple[AsyncClient, str], mysql_proxy: TcpProxy) -> None:
    client, csrf = gui
    mysql_proxy.blackhole()
    problems = await _walk(client, csrf, "db")
    assert problems == [], "\n".join(problems)


async def test_redis_cut(gui: tuple[AsyncClient, str], redis_proxy: TcpProxy) -> None:
    client, csrf = gui
    redis_proxy.cut()
    problems = await _walk(client, csrf, "redis")
    assert problems == [], "\n".join(problems)


async def test_routes_answer_again_after_the_outage(
    gui: tuple[AsyncClient, str], mysql_proxy: TcpProxy
) -> None:
    """Connections dropped at the deadline are not handed out again once the database is back."""
    client, csrf = gui
    mysql_proxy.blackhole()
    problems = await _walk(client, csrf, "db")
    assert problems == [], "\n".join(problems)
    mysql_proxy.restore()
    async with asyncio.timeout(ANSWER_BOUND_SECONDS):
        for _ in range(3):
            response = await client.get("/api/v1/jobs")
            assert response.status_code == 200, response.text


async def test_redis_blackholed(gui: tuple[AsyncClient, str], redis_proxy: TcpProxy) -> None:
    client, csrf = gui
    redis_proxy.blackhole()
    problems = await _walk(client, csrf, "redis")
    assert problems == [], "\n".join(problems)
