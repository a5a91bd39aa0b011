"""Liveness, readiness, the offline OpenAPI page and the metrics endpoint."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from httpx import ASGITransport, AsyncClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api import ingest
from app.main import create_app
from tests.conftest import make_settings


async def test_healthz_and_readyz(client: AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"]["ok"] is True
    assert ready.json()["checks"]["redis"]["ok"] is True


async def test_readyz_is_503_naming_the_dependency_that_is_down(
    database_url: str, engine: AsyncEngine
) -> None:
    settings = make_settings(database_url, REDIS_URL="redis://127.0.0.1:1/0")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        async with AsyncClient(transport=ASGITransport(app=application), base_url="http://t") as c:
            ready = await c.get("/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["redis"]["ok"] is False
    assert checks["database"]["ok"] is True


async def test_docs_page_loads_only_assets_the_service_serves(client: AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls, "the page references its script and stylesheet"
    assert all(url.startswith("/") for url in urls), urls
    assert "validatorUrl" in page.text
    assets = {url: await client.get(url) for url in urls}
    assert all(asset.status_code == 200 and asset.content for asset in assets.values())
    bundle = next(asset for url, asset in assets.items() if url.endswith(".js"))
    assert "SwaggerUIBundle" in bundle.text
    spec = (await client.get("/openapi.json")).json()
    for path in (
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}/started",
        "/api/v1/jobs/{job_id}/complete",
        "/api/v1/jobs/{job_id}/failed",
        "/api/v1/events",
        "/api/v1/jobs/durations",
    ):
        assert path in spec["paths"], path
    queued_body = spec["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(queued_body) == {"application/x-www-form-urlencoded", "application/json"}


async def test_metrics_count_ingested_events(client: AsyncClient) -> None:
    await client.post("/api/v1/jobs", data={"job_id": "m1", "arguments": "[]"})
    await client.post("/api/v1/jobs/m1/started", data={})
    text = (await client.get("/prometheus/metrics")).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    ingested = {
        sample.labels["event"]: sample.value
        for sample in families["supervisor_events_ingested"].samples
        if sample.name.endswith("_total")
    }
    assert ingested == {"queued": 1.0, "started": 1.0}
    assert (await client.get("/metrics")).text.startswith("# HELP")


async def test_unknown_routes_answer_json(client: AsyncClient) -> None:
    response = await client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_the_documented_ingest_posts_are_the_ones_the_fast_lane_serves() -> None:
    """The ingest POSTs have no FastAPI routes: the document describes exactly what the fast
    lane answers, with the error table and schemas that resolve."""
    spec = create_app(make_settings("sqlite:///:memory:")).openapi()
    documented = {
        path
        for path, operations in spec["paths"].items()
        if operations.get("post", {}).get("tags") == ["ingest"]
    }
    assert documented == {op.path for op in ingest.OPERATIONS}
    for path in documented:
        concrete = path.replace("{job_id}", "j1")
        assert ingest.match(concrete) is not None, path
        responses = spec["paths"][path]["post"]["responses"]
        assert set(responses) == {"201", *(str(status) for status in ingest.ERRORS)}
    assert ingest.match("/api/v1/jobs/j1/exploded") is None
    assert "get" in spec["paths"]["/api/v1/jobs"], "the listing shares the queued POST's path"
    schemas = spec["components"]["schemas"]
    for ref in set(_refs(spec)):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
