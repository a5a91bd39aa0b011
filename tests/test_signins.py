"""The sign-in throttle: form, basic and bearer failures count alike, per account and per client
address (behind trusted proxies only), in Redis shared by every replica with keys that expire,
and in the process alone while Redis cannot be reached."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient, Response
from redis.asyncio import Redis

from app.main import SupervisorApp, create_app
from tests.conftest import make_settings
from tests.live import free_port

USERS = {"alice": {"password": "alice-pw", "role": "admin"}, "bob": {"password": "bob-pw"}}
CREDENTIALS: dict[str, Any] = {"ADMIN_TOKEN": "admin-tok", "READ_TOKEN": "read-tok", "USERS": USERS}
LIMIT = 10
PROXY = "10.9.8.7"


def basic(name: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@asynccontextmanager
async def running(database_url: str, **overrides: Any) -> AsyncIterator[AsyncClient]:
    """A client of one app instance (its own lifespan: its own in-process counts)."""
    settings = make_settings(database_url, **{**CREDENTIALS, **overrides})
    application: SupervisorApp = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application, client=(PROXY, 40000))
        async with AsyncClient(transport=transport, base_url="http://supervisor.test") as client:
            yield client


async def sign_in(
    client: AsyncClient, name: str, password: str, forwarded_for: str | None = None
) -> Response:
    form = {"name": name, "password": password}
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return await client.post("/sidekiq/login", data=form, headers=headers)


async def test_basic_auth_guesses_are_throttled_and_audited(
    sqlite_url: str, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.audit")
    async with running(sqlite_url) as client:
        for attempt in range(LIMIT):
            wrong = await client.get("/api/v1/jobs", headers=basic("alice", f"guess-{attempt}"))
            assert wrong.status_code == 401
        right = await client.get("/api/v1/jobs", headers=basic("alice", "alice-pw"))
    assert right.status_code == 429
    assert right.json()["error"] == "too_many_requests"
    assert 0 < int(right.headers["retry-after"]) <= 300
    failures = [line for line in caplog.messages if "action=login_failed" in line]
    assert len(failures) == LIMIT
    assert 'via="failed basic auth"' in failures[0]
    assert 'target="alice"' in failures[0]


async def test_bearer_token_guesses_are_throttled(sqlite_url: str, redis: Redis) -> None:
    async with running(sqlite_url) as client:
        for attempt in range(LIMIT):
            wrong = await client.get(
                "/api/v1/jobs", headers={"Authorization": f"Bearer guess-{attempt}"}
            )
            assert wrong.status_code == 401
        right = await client.get("/api/v1/jobs", headers={"Authorization": "Bearer read-tok"})
    assert right.status_code == 429
    assert int(right.headers["retry-after"]) > 0


async def test_gui_basic_auth_guesses_are_throttled(sqlite_url: str, redis: Redis) -> None:
    async with running(sqlite_url) as client:
        for attempt in range(LIMIT):
            wrong = await client.get("/sidekiq", headers=basic("alice", f"guess-{attempt}"))
            assert wrong.status_code == 303  # to the login form, as before
        right = await client.get("/sidekiq", headers=basic("alice", "alice-pw"))
    assert right.status_code == 429
    assert right.headers["content-type"].startswith("text/html")
    assert "Too many attempts" in right.text
    assert int(right.headers["retry-after"]) > 0


async def test_two_instances_share_one_count(sqlite_url: str, redis: Redis) -> None:
    async with running(sqlite_url) as first, running(sqlite_url) as second:
        for attempt in range(LIMIT // 2):
            assert (await sign_in(first, "alice", f"a-{attempt}")).status_code == 401
            assert (await sign_in(second, "alice", f"b-{attempt}")).status_code == 401
        waiting = await sign_in(first, "alice", "alice-pw")
    assert waiting.status_code == 429
    assert "Too many failed sign-ins" in waiting.text


async def test_counts_expire_and_live_under_our_prefix_in_the_namespace(
    sqlite_url: str, redis: Redis
) -> None:
    async with running(sqlite_url, REDIS_NAMESPACE="shop") as client:
        await sign_in(client, "alice", "wrong")
    names = sorted(str(key, "utf-8") for key in await redis.keys("*") if isinstance(key, bytes))
    assert len(names) == 2  # one count for the account, one for the address
    assert all(name.startswith("shop:sidekiq-supervisor:sign-in-failures:") for name in names)
    assert "alice" not in "".join(names)  # account names are hashed, not stored
    for name in names:
        assert 0 < await redis.ttl(name) <= 300


async def test_behind_a_trusted_proxy_each_client_counts_alone(
    sqlite_url: str, redis: Redis
) -> None:
    """Behind the proxy every request comes from its address: one guesser must not lock
    everybody out, and a guesser cannot escape by forging X-Forwarded-For on the left."""
    async with running(sqlite_url, TRUSTED_PROXIES="10.0.0.0/8") as client:
        for attempt in range(LIMIT):
            forged = f"192.0.2.{attempt}, 198.51.100.1"  # the proxy appended the real one
            refused = await sign_in(client, f"name-{attempt}", "x", forged)
            assert refused.status_code == 401
        guesser = await sign_in(client, "bob", "bob-pw", "198.51.100.1")
        other = await sign_in(client, "bob", "bob-pw", "203.0.113.5")
    assert guesser.status_code == 429
    assert other.status_code == 303


async def test_an_account_is_throttled_from_any_address(sqlite_url: str, redis: Redis) -> None:
    async with running(sqlite_url, TRUSTED_PROXIES=PROXY) as client:
        for attempt in range(LIMIT):
            spread = f"192.0.2.{attempt}"
            assert (await sign_in(client, "alice", f"g-{attempt}", spread)).status_code == 401
        alice = await sign_in(client, "alice", "alice-pw", "203.0.113.7")
        bob = await sign_in(client, "bob", "bob-pw", "203.0.113.7")
    assert (alice.status_code, bob.status_code) == (429, 303)


async def test_without_redis_the_process_still_throttles(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    caplog.set_level(logging.WARNING, logger="app.signins")
    async with running(sqlite_url, REDIS_URL=closed) as client:
        for attempt in range(LIMIT):
            wrong = await client.get("/api/v1/jobs", headers=basic("alice", f"guess-{attempt}"))
            assert wrong.status_code == 401
        right = await client.get("/api/v1/jobs", headers=basic("alice", "alice-pw"))
        other = await client.get("/sidekiq/login")
    assert right.status_code == 429
    assert other.status_code == 200  # neither failing open nor locking every page
    assert "Redis did not answer" in caplog.text
