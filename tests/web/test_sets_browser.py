"""The Retries, Scheduled and Dead pages in real Chromium: retry-now on a real Sidekiq 6.4.1 retry
entry moves it to its queue, a `<script>` in arguments is text and runs nothing, select-all and
the confirmed "all" buttons work, and screenshots of each page (phone and dark too)."""

from __future__ import annotations

import base64
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.async_api import Browser, Dialog, Page, expect
from redis.asyncio import Redis

from app.sidekiq.browse import format_score
from app.sidekiq.keys import Keys
from tests.live import LiveSupervisor, run_supervisor
from tests.sidekiq.layouts import V7, job
from tests.sidekiq.real_sidekiq import REDIS_URL as SIDEKIQ_REDIS_URL
from tests.sidekiq.real_sidekiq import RealSidekiq, start_sidekiq
from tests.sidekiq.real_sidekiq import job as real_job
from tests.web.browser import watched_page

pytestmark = pytest.mark.slow

KEYS = Keys()
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
BACKTRACE = [
    "app/jobs/hard_job.rb:12:in `perform'",
    "sidekiq-6.4.1/lib/sidekiq/processor.rb:196:in `execute_job'",
]
PARKED = "parked"  # a queue the real Sidekiq does not serve: a retried job stays there


def failed(queue: str, cls: str, args: list[Any], error: tuple[str, str], count: int) -> bytes:
    now = time.time()
    payload = job(V7, queue, enqueued_at=now - 3600 * (count + 1), cls=cls) | {
        "args": args,
        "error_class": error[0],
        "error_message": error[1],
        "failed_at": now - 3600 * count - 60,
        "retry_count": count,
        "error_backtrace": base64.b64encode(zlib.compress(orjson.dumps(BACKTRACE))).decode(),
    }
    if count:
        payload["retried_at"] = now - 300 * count
    return orjson.dumps(payload)


async def seed(redis: Redis) -> dict[str, str]:
    """Entries like a real app's in all three sets; returns the `<script>` entry's jid and key."""
    now = time.time()
    evil = failed("default", "HardJob", [SCRIPT], ("RuntimeError", IMG), 0)
    rows = [
        evil,
        failed(
            "mailers",
            "UserMailer",
            [42, "welcome"],
            ("Net::SMTPAuthenticationError", "535 5.7.8 Username and Password not accepted"),
            3,
        ),
        failed(
            "default",
            "ImportJob",
            [
                {
                    "file": "s3://bucket/imports/2025-06-15/customers.csv",
                    "dry_run": False,
                    "batch": 500,
                }
            ],
            (
                "ActiveRecord::Deadlocked",
                "Mysql2::Error: Deadlock found when trying to get lock; try restarting transaction",
            ),
            1,
        ),
        failed(
            "critical",
            "ChargeCardJob",
            [1001, 19.99, "EUR"],
            ("Stripe::CardError", "Your card was declined."),
            5,
        ),
        failed(
            "low",
            "ThumbnailJob",
            [77],
            ("Errno::ENOENT", "No such file or directory @ rb_sysopen - /tmp/upload-77.png"),
            0,
        ),
    ]
    await redis.zadd(KEYS.retry, {raw: now + 45 + 600 * n for n, raw in enumerate(rows)})
    scheduled = [
        orjson.dumps(job(V7, q, enqueued_at=now, cls=c) | {"args": a})
        for q, c, a in (
            ("default", "ReminderJob", [12, "tomorrow"]),
            ("mailers", "DigestMailer", ["weekly"]),
            ("low", "CleanupJob", []),
        )
    ]
    await redis.zadd(KEYS.schedule, {raw: now + 3600 * (n + 1) for n, raw in enumerate(scheduled)})
    await redis.zadd(KEYS.dead, {raw: now - 86_400 * (n + 1) for n, raw in enumerate(rows[1:])})
    await redis.zadd(KEYS.dead, {evil: now - 30})
    jid = orjson.loads(evil)["jid"]
    return {"jid": jid, "key": f"{format_score(now + 45)}-{jid}"}


def record_dialogs(page: Page) -> list[str]:
    seen: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        seen.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    page.on("dialog", dismiss)
    return seen


async def test_retry_now_on_a_real_retry_entry_moves_it_to_its_queue(
    mysql_url: str, tmp_path: Path, browser: Browser
) -> None:
    async with start_sidekiq(tmp_path) as sidekiq:
        jid = await _failed_once(sidekiq)
        env = {"SUPERVISOR_REDIS_URL": SIDEKIQ_REDIS_URL}
        with run_supervisor(mysql_url, tmp_path, extra_env=env) as live:
            async with watched_page(browser, live.url) as watched:
                page = watched.page
                await page.goto("/sidekiq/retries")
                row = page.locator("tbody tr", has=page.locator(f'a[href="/sidekiq/jobs/{jid}"]'))
                await expect(row).to_contain_text("Boom")
                await row.get_by_role("button", name="Retry now").click()
                await expect(page.locator(".notice")).to_have_text("Retried 1 job.")
                await expect(page.get_by_text("Retries is empty.")).to_be_visible()
                watched.assert_clean()
        assert await sidekiq.jids_in("retry") == set()
        [pushed] = await sidekiq.redis.lrange(f"queue:{PARKED}", 0, -1)
        assert orjson.loads(pushed)["jid"] == jid
        assert orjson.loads(pushed)["retry_count"] == -1  # 0 after the first failure, minus one


async def _failed_once(sidekiq: RealSidekiq) -> str:
    """A FlakyJob whose first run failed: Sidekiq put it in `retry`, an hour away, queued for
    a queue it does not serve (retry_queue), so it does not run again under the test."""
    [jid] = await sidekiq.push(real_job("FlakyJob", "default", retry_queue=PARKED))

    async def in_retry() -> bool:
        return jid in await sidekiq.jids_in("retry")

    await sidekiq.wait_until(in_retry, "the first failure to reach the retry set")
    return jid


async def test_script_in_arguments_is_text_and_runs_nothing(
    live_gui: LiveSupervisor, browser: Browser, redis: Redis
) -> None:
    evil = await seed(redis)
    async with watched_page(browser, live_gui.url) as watched:
        page = watched.page
        dialogs = record_dialogs(page)
        for path in ("/sidekiq/retries", "/sidekiq/dead", f"/sidekiq/retries/{evil['key']}"):
            response = await page.goto(path)
            assert response is not None
            assert response.status == 200
            await expect(page.get_by_text(SCRIPT).first).to_be_visible()
            await expect(page.get_by_text(IMG).first).to_be_visible()
            assert await page.locator("script:not([src])").count() == 0
            assert await page.locator("main img").count() == 0
        await expect(page.locator("pre.entry-backtrace")).to_have_text("\n".join(BACKTRACE))
        await watched.screenshot("entry")
        assert dialogs == []
        watched.assert_clean()


async def test_set_pages_render_clean(
    live_gui: LiveSupervisor, browser: Browser, redis: Redis
) -> None:
    await seed(redis)
    for width, scheme, pages in (
        (1280, "light", ("retries", "scheduled", "dead")),
        (390, "light", ("retries",)),
        (1280, "dark", ("dead",)),
    ):
        async with watched_page(browser, live_gui.url, width=width, color_scheme=scheme) as watched:
            for name in pages:
                await watched.page.goto(f"/sidekiq/{name}")
                await expect(watched.page.locator("tbody tr").first).to_be_visible()
                suffix = "-phone" if width < 500 else "-dark" if scheme == "dark" else ""
                await watched.screenshot(name + suffix)
            watched.assert_clean()


async def test_select_all_and_the_confirmed_all_buttons(
    live_gui: LiveSupervisor, browser: Browser, redis: Redis
) -> None:
    await seed(redis)
    async with watched_page(browser, live_gui.url) as watched:
        page = watched.page
        await page.goto("/sidekiq/scheduled")
        await page.get_by_label("Select every entry on this page").check()
        await expect(page.locator('tbody input[name="key"]:checked')).to_have_count(3)
        await page.locator(".set-actions").get_by_role("button", name="Delete", exact=True).click()
        await expect(page.locator(".notice")).to_have_text("Deleted 3 jobs.")
        assert await redis.zcard(KEYS.schedule) == 0

        await page.goto("/sidekiq/dead")
        asked: list[str] = []

        async def answer(dialog: Dialog) -> None:
            asked.append(dialog.message)
            await (dialog.dismiss() if len(asked) == 1 else dialog.accept())

        page.on("dialog", answer)
        retry_all = page.get_by_role("button", name="Retry all")
        await retry_all.click()  # dismissed: nothing happens
        assert await redis.zcard(KEYS.dead) == 5
        await retry_all.click()
        await expect(page.locator(".notice")).to_have_text("Retried 5 jobs.")
        assert asked == ["Retry all 5 jobs now (each goes to its queue)?"] * 2
        assert await redis.zcard(KEYS.dead) == 0
        watched.assert_clean()
