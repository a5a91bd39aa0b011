"""The `sidekiq-supervisor` command, run as a user would (a real subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain import EventName
from app.sidekiq.keys import Keys
from tests.api.test_jobs_read import lifecycle, seed
from tests.conftest import REDIS_URL
from tests.sidekiq.layouts import NOW, V7, process

# The command runs from another directory, so name this checkout's code (not whichever copy
# the virtualenv was installed from).
ROOT = Path(__file__).resolve().parents[2]


def run(
    *args: str, database_url: str, cwd: Path, stdin: str = "", redis_url: str = REDIS_URL
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SUPERVISOR_DATABASE_URL": database_url,
        "SUPERVISOR_REDIS_URL": redis_url,
        "COLUMNS": "200",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


async def test_health_prints_one_line_per_check_and_exits_0(
    database_url: str, tmp_path: Path
) -> None:
    done = run("health", database_url=database_url, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["ok", "database"], ["ok", "redis"]]


async def test_health_exits_1_when_redis_is_down(database_url: str, tmp_path: Path) -> None:
    done = run("health", database_url=database_url, cwd=tmp_path, redis_url="redis://127.0.0.1:1/0")
    assert done.returncode == 1
    assert done.stdout.splitlines()[1].startswith("FAIL redis")


async def test_jobs_commands_print_tables(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    await seed(
        engine,
        lifecycle("waiting-job", start=0, arguments='["invoice 7"]'),
        lifecycle("running-job", start=1, wait=1, arguments='["invoice 8"]'),
        lifecycle("finished-job", start=2, wait=1, run=3, queue="mail"),
        lifecycle("vanished-job", start=3, wait=1),
    )
    [*_, vanished] = lifecycle("vanished-job", start=3, wait=1)
    await seed(engine, [replace(vanished, event=EventName.LOST)])  # as the reconciler records it
    queued = run("jobs", "queued", database_url=database_url, cwd=tmp_path)
    lost = run("jobs", "lost", database_url=database_url, cwd=tmp_path)
    uncompleted = run("jobs", "uncompleted", "invoice", database_url=database_url, cwd=tmp_path)
    everything = run("jobs", "all", "--limit", "2", database_url=database_url, cwd=tmp_path)
    durations = run("jobs", "durations", "--queue", "mail", database_url=database_url, cwd=tmp_path)
    assert "waiting-job" in queued.stdout
    assert "running-job" not in queued.stdout
    assert "running-job" in uncompleted.stdout
    assert "1 job(s)" in uncompleted.stdout
    assert "vanished-job" in lost.stdout
    assert "vanished-job" not in uncompleted.stdout
    assert "--cursor" in everything.stdout
    assert "finished-job" in durations.stdout
    assert "started→completed  n=1  p50 3.00 s" in durations.stdout


async def test_console_has_a_manager_and_top_level_await(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    await seed(engine, lifecycle("console-job", start=0, wait=1))
    script = (
        "page = await manager.uncompleted_jobs()\nprint('found', [j.jid for j in page.items])\n"
    )
    done = run("console", database_url=database_url, cwd=tmp_path, stdin=script)
    assert done.returncode == 0, done.stderr
    assert "found ['console-job']" in done.stdout


def test_migrate_creates_the_schema_in_a_new_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    migrated = run("migrate", database_url=url, cwd=tmp_path)
    listed = run("jobs", "all", database_url=url, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert listed.returncode == 0, listed.stderr
    assert "0 job(s)" in listed.stdout


async def test_requeue_is_a_dry_run_until_yes(
    database_url: str, engine: AsyncEngine, redis: Redis, tmp_path: Path
) -> None:
    await seed(engine, lifecycle("stuck-job", start=0, wait=1, arguments='["x"]'))
    dry = run("requeue", database_url=database_url, cwd=tmp_path)
    assert "dry run: 1 would be requeued" in dry.stdout, dry.stderr
    assert await redis.llen("queue:default") == 0
    done = run("requeue", "--yes", database_url=database_url, cwd=tmp_path)
    assert "requeued 1, skipped 0" in done.stdout, done.stderr
    assert await redis.llen("queue:default") == 1


async def test_drain_exits_0_for_a_quiet_idle_host_and_1_at_the_timeout(
    database_url: str, redis: Redis, tmp_path: Path
) -> None:
    keys = Keys()
    idle = await process(
        redis, keys, V7, hostname="idle-pod", concurrency=1, queues=["q"], quiet=True
    )
    await process(
        redis,
        keys,
        V7,
        hostname="busy-pod",
        concurrency=1,
        queues=["q"],
        busy=[("j" * 24, "q", NOW)],
    )
    drained = run(
        "drain", "--host", "idle-pod", "--timeout", "0", database_url=database_url, cwd=tmp_path
    )
    stuck = run(
        "drain", "--host", "busy-pod", "--timeout", "0", database_url=database_url, cwd=tmp_path
    )
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert "drained" in drained.stdout
    assert stuck.returncode == 1
    assert "1 running" in stuck.stdout
    assert await redis.exists(f"{idle}-signals") == 0  # already quiet: nothing sent


async def test_drain_of_a_host_with_no_process_says_so_and_exits_0(
    database_url: str, redis: Redis, tmp_path: Path
) -> None:
    await process(redis, Keys(), V7, hostname="other-pod", concurrency=1, queues=["q"])
    done = run(
        "drain", "--host", "no-such-pod", "--timeout", "0", database_url=database_url, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "no Sidekiq process on host no-such-pod: nothing to drain"


def test_the_installed_command_runs_as_documented(tmp_path: Path) -> None:
    # The README writes the command as the project's virtualenv installs it ([project.scripts]),
    # since a fresh clone does not have it on PATH.
    command = Path(sys.executable).parent / "sidekiq-supervisor"
    done = subprocess.run(
        [str(command), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for name in ("serve", "migrate", "health", "jobs", "requeue", "drain", "console"):
        assert name in done.stdout
