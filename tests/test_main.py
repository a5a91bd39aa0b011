"""The lifespan: what it builds is torn down, also when a step fails half-way."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import Gauge

from app.main import create_app
from tests.conftest import make_settings

WRITER_TASK = "ledger-writer-"


def writer_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith(WRITER_TASK)]


async def test_a_failed_start_closes_what_was_opened_before(mysql_url: str) -> None:
    """The sampler's metrics are registered after the writer started: a registry that already
    exports one of their names makes that step fail, and the writer must not be left running."""
    app = create_app(make_settings(mysql_url))
    Gauge("supervisor_redis_up", "taken already", registry=app.state.registry)

    with pytest.raises(ValueError, match="Duplicated timeseries"):
        async with app.router.lifespan_context(app):
            pytest.fail("the lifespan must not start")

    assert writer_tasks() == []
    assert not hasattr(app.state, "resources")


async def test_a_normal_start_runs_the_writer_until_shutdown(mysql_url: str) -> None:
    app = create_app(make_settings(mysql_url))
    async with app.router.lifespan_context(app):
        assert len(writer_tasks()) == app.state.resources.settings.WRITER_CONNECTIONS
        assert app.state.resources.sampler.latest is None  # the sampler is off in tests
    assert writer_tasks() == []
