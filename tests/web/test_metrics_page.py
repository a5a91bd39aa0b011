"""The Metrics page in-process on MariaDB and SQLite: exact counts, failure rates and percentiles
per class and queue, the window, sorting, the cap on jobs read, and escaping."""

from __future__ import annotations

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.domain import EventName
from tests.conftest import make_settings
from tests.web.ledger_pages import table_rows
from tests.web.ledger_seed import CLOCK, life, seed

HOUR = 3600


@pytest.fixture(autouse=True)
def _fresh_clock() -> None:
    CLOCK.reset()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, METRICS_WINDOW_MAX_JOBS=6)


async def seed_window(engine: AsyncEngine) -> None:
    """Report/reports: 3 succeeded (runs 1, 2, 3 s) and 1 failed (run 4 s), each waiting 0.5 s;
    Mail/mailers: 1 dead; plus a success two days ago and jobs that have not finished."""
    await seed(
        engine,
        life("r1", ago=4 * HOUR, wait=0.5, run=1, queue="reports", job_class="Report"),
        life("r2", ago=3 * HOUR, wait=0.5, run=2, queue="reports", job_class="Report"),
        life("r3", ago=2 * HOUR, wait=0.5, run=3, queue="reports", job_class="Report"),
        life(
            "r4", ago=HOUR + 600, wait=0.5, run=4, end=EventName.FAILED, queue="reports",
            job_class="Report",
        ),
        life("m1", ago=1800, wait=2, run=1, end=EventName.DEAD, queue="mailers", job_class="Mail"),
        life("old", ago=48 * HOUR, wait=1, run=9, queue="reports", job_class="Report"),
        life("waiting", ago=60, queue="reports", job_class="Report"),
        life("running", ago=60, wait=1, queue="reports", job_class="Report"),
    )  # fmt: skip


async def metrics(client: AsyncClient, **params: str) -> tuple[str, list[list[str]]]:
    response = await client.get("/sidekiq/metrics", params=params)
    assert response.status_code == 200, response.text
    return response.text, table_rows(response.text, "metrics")[1:]


async def test_counts_rates_and_percentiles_per_class_and_queue(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    await seed_window(engine)
    html, rows = await metrics(client)
    # class, queue, finished, succeeded, failed, rate, run p50, p95, p99, wait p95
    assert rows == [
        ["Report", "reports", "4", "3", "1", "25.0%", "2.0 s", "4.0 s", "4.0 s", "500 ms"],
        ["Mail", "mailers", "1", "0", "1 (1 dead)", "100.0%", "1.0 s", "1.0 s", "1.0 s", "2.0 s"],
    ]
    assert 'href="/sidekiq/jobs?job_class=Report"' in html
    assert 'href="/sidekiq/jobs?status=failed&amp;job_class=Report"' in html
    assert 'id="metrics-cap"' not in html
    totals = html.split('class="cards metrics-totals"')[1].split("</section>")[0]
    assert ">5<" in totals  # finished
    assert "40.0%" in totals


async def test_window_and_sort(client: AsyncClient, engine: AsyncEngine) -> None:
    await seed_window(engine)
    _, hour = await metrics(client, window="1h")
    assert [row[:3] for row in hour] == [["Mail", "mailers", "1"]]
    _, three_days = await metrics(client, window="3d")
    assert three_days[0][:5] == ["Report", "reports", "5", "4", "1"]
    _, by_class = await metrics(client, sort="class")
    assert [row[0] for row in by_class] == ["Mail", "Report"]
    _, by_rate = await metrics(client, sort="rate")
    assert [row[0] for row in by_rate] == ["Mail", "Report"]
    _, by_run = await metrics(client, sort="p99")
    assert [row[0] for row in by_run] == ["Report", "Mail"]
    for params in ({"window": "2h"}, {"sort": "jid"}):
        response = await client.get("/sidekiq/metrics", params=params)
        assert response.status_code == 422


async def test_reads_at_most_the_cap_of_newest_jobs(
    client: AsyncClient, engine: AsyncEngine
) -> None:
    await seed_window(engine)
    await seed(
        engine, *(life(f"x{n}", ago=600 + n, wait=1, run=1, job_class="X") for n in range(3))
    )
    html, rows = await metrics(client)
    # The 6 newest finished: x0, x1, x2 (10 min ago), m1, r4, r3.
    assert {row[0]: row[2] for row in rows} == {"X": "3", "Mail": "1", "Report": "2"}
    assert 'id="metrics-cap"' in html
    assert "newest 6 jobs of the window" in html


async def test_class_names_are_escaped(client: AsyncClient, engine: AsyncEngine) -> None:
    await seed(engine, life("e", ago=60, wait=1, run=1, job_class="<b>Bold</b>", queue="<i>q"))
    html, rows = await metrics(client)
    assert rows[0][:2] == ["<b>Bold</b>", "<i>q"]
    assert "<b>Bold</b>" not in html
    assert "&lt;b&gt;Bold&lt;/b&gt;" in html
    assert "job_class=%3Cb%3EBold%3C/b%3E" in html
