"""The Jobs and Metrics pages in real Chromium against the live service on MariaDB: requeue
from the Jobs page pushes the job, a job whose arguments hold <script> shows the text and runs
nothing, and every page loads clean on a laptop, a phone and in dark mode (screenshots)."""

from __future__ import annotations

import orjson
import pytest
from playwright.async_api import Browser, Dialog, expect
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain import EventName
from app.sidekiq.keys import Keys
from tests.live import LiveSupervisor
from tests.web.browser import watched_page
from tests.web.ledger_seed import CLOCK, life, lost, seed

KEYS = Keys()
STARTED = "5a7e0d1c2b3a4f5e6d7c8b9a"
EVIL = "e0e1e2e3e4e5e6e7e8e9eaeb"
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture(autouse=True)
def _fresh_clock() -> None:
    CLOCK.reset()


async def seed_ledger(engine: AsyncEngine) -> None:
    """A small, varied ledger: finished jobs of a few classes, one failure, one dead, one lost,
    one started and one queued, so every column and badge shows up."""
    jobs = [
        life(f"c{n:023d}", ago=3000 - n * 60, wait=0.2 * n, run=1.5 + n, job_class=cls, queue=q)
        for n, (cls, q) in enumerate(
            [("ReportJob", "reports"), ("MailerJob", "mailers"), ("HardJob", "default")] * 4
        )
    ]
    await seed(
        engine,
        *jobs,
        life("f" * 24, ago=900, wait=1, run=3, end=EventName.FAILED, job_class="ChargeJob"),
        life("d" * 24, ago=800, wait=1, run=2, end=EventName.DEAD, job_class="ChargeJob"),
        lost("l" * 24, ago=700, job_class="SyncJob"),
        life(STARTED, ago=120, wait=2, job_class="HardJob", arguments='[42,"invoice"]'),
        life("q" * 24, ago=30, job_class="MailerJob", queue="mailers"),
    )


async def test_requeue_from_the_jobs_page_pushes_the_job(
    live_gui: LiveSupervisor, browser: Browser, mysql_engine: AsyncEngine, redis: Redis
) -> None:
    await seed_ledger(mysql_engine)
    async with watched_page(browser, live_gui.url) as watched:
        page = watched.page
        await page.goto("/sidekiq/jobs")
        await expect(page.locator("table.jobs tbody tr")).to_have_count(17)
        await watched.screenshot("jobs")
        await page.get_by_label("Status").select_option("started")
        await page.get_by_role("button", name="Filter").click()
        await expect(page).to_have_url(f"{live_gui.url}/sidekiq/jobs?status=started")
        await expect(page.locator("table.jobs tbody tr")).to_have_count(1)
        await page.get_by_role("link", name="Requeue…").click()
        await expect(page.locator("#requeue-count")).to_contain_text("1 job will be pushed")
        await expect(page.locator("#requeue-count")).to_contain_text("0 skipped")
        await watched.screenshot("requeue-confirm")
        assert await redis.llen(KEYS.queue("default")) == 0
        await page.get_by_role("button", name="Requeue 1 job").click()
        await expect(page.locator("p.notice")).to_have_text("Requeued 1 job (0 skipped)")
        [raw] = await redis.lrange(KEYS.queue("default"), 0, -1)
        pushed = orjson.loads(raw)
        assert (pushed["requeued_from"], pushed["args"]) == (STARTED, [42, "invoice"])
        await expect(page.locator("table.jobs tbody tr")).to_have_count(0)
        watched.assert_clean()


async def test_script_in_arguments_shows_as_text_and_runs_nothing(
    live_gui: LiveSupervisor, browser: Browser, mysql_engine: AsyncEngine
) -> None:
    await seed_ledger(mysql_engine)
    evil = life(
        EVIL, ago=60, wait=1, run=1, end=EventName.FAILED, job_class="<b>Evil</b>Job",
        arguments=orjson.dumps([SCRIPT, {"html": "<img src=x onerror=alert(2)>"}]).decode(),
    )  # fmt: skip
    await seed(mysql_engine, evil)
    dialogs: list[str] = []

    async def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    async with watched_page(browser, live_gui.url) as watched:
        page = watched.page
        page.on("dialog", on_dialog)
        await page.goto("/sidekiq/jobs")
        await expect(page.locator("table.jobs code.args", has_text=SCRIPT)).to_be_visible()
        await expect(page.get_by_text("<b>Evil</b>Job")).to_be_visible()
        await page.get_by_role("link", name=EVIL).click()
        await expect(page.locator("pre.arguments")).to_contain_text(SCRIPT)
        await expect(page.locator("pre.arguments")).to_contain_text("<img src=x onerror=alert(2)>")
        await expect(page.locator("h1 .class-name")).to_have_text("<b>Evil</b>Job")
        await expect(page.locator("table.timeline tbody tr")).to_have_count(3)
        await watched.screenshot("job")
        assert dialogs == []
        watched.assert_clean()


async def test_metrics_and_the_phone_and_dark_layouts(
    live_gui: LiveSupervisor, browser: Browser, mysql_engine: AsyncEngine
) -> None:
    await seed_ledger(mysql_engine)
    async with watched_page(browser, live_gui.url) as watched:
        await watched.page.goto("/sidekiq/metrics")
        await expect(watched.page.locator("table.metrics tbody tr")).to_have_count(4)
        await watched.page.get_by_role("link", name="Failure rate").click()
        first = watched.page.locator("table.metrics tbody tr").first
        await expect(first.locator("td").first).to_have_text("ChargeJob")
        await watched.screenshot("metrics")
        watched.assert_clean()
    async with watched_page(browser, live_gui.url, color_scheme="dark") as watched:
        await watched.page.goto("/sidekiq/metrics?window=7d")
        await expect(watched.page.locator("table.metrics tbody tr")).to_have_count(4)
        await watched.screenshot("metrics-dark")
        watched.assert_clean()
    async with watched_page(browser, live_gui.url, width=390) as watched:
        await watched.page.goto("/sidekiq/jobs")
        await expect(watched.page.locator("table.jobs tbody tr")).to_have_count(17)
        table = await watched.page.locator("table.jobs").bounding_box()
        assert table is not None
        assert table["width"] <= 390  # the narrow layout drops columns rather than overflow
        await watched.screenshot("jobs-phone")
        watched.assert_clean()
