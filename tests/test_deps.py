"""Same-origin check: every state-changing route, API and GUI, refuses a request another site's
page sent, whatever credential the browser attached; requests with no Origin still work."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator

import pytest
from fastapi.routing import APIRoute
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import SupervisorApp, create_app
from app.web import busy, dashboard, ledger, metrics_page, queues, routes, sets
from tests.conftest import make_settings

INGEST = {
    "/api/v1/jobs",
    "/api/v1/jobs/{job_id}/started",
    "/api/v1/jobs/{job_id}/complete",
    "/api/v1/jobs/{job_id}/failed",
    "/api/v1/events",
}
FILLED = {"{signal}": "quiet", "{set_name}": "retries"}
ADMIN_BASIC = "Basic " + base64.b64encode(b"alice:alice-pw").decode()
FOREIGN = ("https://evil.example", "http://supervisor.test:8080", "null")
SAME = (None, "http://supervisor.test", "http://SUPERVISOR.test:80", "https://supervisor.test")


def _fill(path: str) -> str:
    for name, value in FILLED.items():
        path = path.replace(name, value)
    return re.sub(r"\{[^}]+\}", "x", path)


def state_changing_paths(application: SupervisorApp) -> list[str]:
    """Every non-GET route but ingest: the API's from its schema, the GUI's from its routers."""
    api = [
        _fill(path)
        for path, operations in application.openapi()["paths"].items()
        if path not in INGEST and set(operations) - {"get", "head", "options"}
    ]
    gui = [
        _fill(prefix + route.path)
        for module, prefix in [(routes, "")]
        + [(page, "/sidekiq") for page in (dashboard, busy, queues, sets, ledger, metrics_page)]
        for route in module.router.routes
        if isinstance(route, APIRoute) and (route.methods or set()) - {"GET", "HEAD", "OPTIONS"}
    ]
    return api + gui


@pytest.fixture
async def guarded(
    database_url: str, engine: AsyncEngine, redis: Redis
) -> AsyncIterator[SupervisorApp]:
    users = {"alice": {"password": "alice-pw", "role": "admin"}}
    application = create_app(make_settings(database_url, ADMIN_TOKEN="admin-tok", USERS=users))
    async with application.router.lifespan_context(application):
        yield application


@pytest.mark.parametrize("credential", [ADMIN_BASIC, "Bearer admin-tok"])
async def test_every_state_changing_route_refuses_another_sites_origin(
    guarded: SupervisorApp, redis: Redis, credential: str
) -> None:
    paths = state_changing_paths(guarded)
    assert {"/api/v1/processes/quiet", "/api/v1/drain", "/sidekiq/login"} <= set(paths)
    form = {"name": "alice", "password": "alice-pw", "signal": "stop"}
    async with http(guarded, credential) as client:
        for path in paths:
            for origin in FOREIGN:
                refused = await client.post(path, data=form, headers={"Origin": origin})
                assert refused.status_code == 403, (path, origin)
                assert "another site" in refused.text, (path, origin)
        for own in SAME:  # this site's own pages, and curl, the CLI or a preStop hook
            headers = {"Origin": own} if own else {}
            acted = await client.post("/api/v1/processes/quiet", headers=headers)
            assert acted.status_code == 200, own
        # Ingest takes a bearer token a browser never attaches by itself: Origin is no matter.
        job = {"job_id": "a" * 24, "arguments": [1], "job_class": "HardJob", "queue": "q"}
        ingested = await client.post("/api/v1/jobs", json=job, headers={"Origin": FOREIGN[0]})
        assert ingested.status_code == 201


async def test_an_open_service_refuses_another_sites_origin_too(
    client: AsyncClient, redis: Redis
) -> None:
    refused = await client.post("/api/v1/processes/stop", headers={"Origin": FOREIGN[0]})
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"


def http(application: SupervisorApp, credential: str) -> AsyncClient:
    transport = ASGITransport(app=application)
    headers = {"Authorization": credential}
    return AsyncClient(transport=transport, base_url="http://supervisor.test", headers=headers)
