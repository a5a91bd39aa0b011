"""clients/ruby/sidekiq_supervisor.rb inside real Sidekiq 6.4.1, against a live supervisor over
loopback TCP: the ledger rows and job metrics of jobs that succeed, fail and retry, die, are
scheduled, or are pushed from inside a job; the same jobs with the supervisor refusing
connections or hung (they run, pushes do not raise, and the time our middleware adds per event
stays bounded); a forked client; and the original Faraday middleware, verbatim, still recorded.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.live import LiveSupervisor, hung_supervisor, refused_url, run_supervisor
from tests.sidekiq.real_sidekiq import RealSidekiq, job, run_ruby, start_sidekiq

pytestmark = pytest.mark.slow

RUBY = Path(__file__).resolve().parent / "ruby"
SUPERVISED, JOBS, TIMING = RUBY / "supervised.rb", RUBY / "jobs.rb", RUBY / "timing.rb"
ORIGINAL, FORK_PUSH = RUBY / "original.rb", RUBY / "fork_push.rb"
INGEST_TOKEN = secrets.token_hex(16)
ADMIN_TOKEN = secrets.token_hex(16)

SCHEDULE_AHEAD_SECONDS = 2.0
FLUSH_INTERVAL_SECONDS = "0.05"  # the sender's gathering pause: short, so tests settle fast
OPEN_TIMEOUT_SECONDS = 1.0  # the middleware's defaults
READ_TIMEOUT_SECONDS = 2.0
SHUTDOWN_TIMEOUT_SECONDS = 2.0
# No hang: a background-mode event never waits for the network, so it costs far less than one
# network timeout; an inline-mode event costs at most one connect and one read timeout. Loose
# enough for a slow machine, far below a hang (the original middleware blocks 60 s per call).
BACKGROUND_BOUND_SECONDS = OPEN_TIMEOUT_SECONDS
INLINE_BOUND_SECONDS = OPEN_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS + 1.0
# A push process: Ruby's start, the push, and the flush at exit (at most its timeout, plus one
# request still in flight).
PUSH_BOUND_SECONDS = 10.0
LEDGER_TIMEOUT_SECONDS = 30.0
JOBS_TIMEOUT_SECONDS = 40.0
OVERHEAD = "supervisor-test:overhead:"
CHILDREN = "supervisor-test:children"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Measurements per set of lifecycles: seven runs (one a retry), eight pushes (three by the
# server: the retry, the scheduled job when due, ParentJob's child), one death.
EXPECTED_COUNTS = {"server": 7, "client": 8, "death": 1}


@dataclass(frozen=True, slots=True)
class Pushed:
    """The jids of one set of lifecycles (see push_lifecycles)."""

    quick: str
    flaky: str
    explode: str
    scheduled: str
    parent: str
    scheduled_at: float
    push_seconds: float


@dataclass(frozen=True, slots=True)
class Overhead:
    """Seconds our middleware added, per event, as timing.rb measured them inside Ruby."""

    client: list[float]  # each push (one event: queued or scheduled)
    server: list[float]  # each run, halved (two events: started, then complete or failed)
    death: list[float]  # each death handler call (one event: dead)

    @property
    def worst(self) -> float:
        return max(self.client + self.server + self.death)

    def describe(self) -> str:
        parts = (f"{name} n={len(v)} max={max(v) * 1000:.2f} ms" for name, v in self.lists())
        return "; ".join(parts)

    def lists(self) -> Iterator[tuple[str, list[float]]]:
        yield from (("client", self.client), ("server", self.server), ("death", self.death))


def middleware_env(
    url: str, *, token: str | None = None, mode: str = "background"
) -> dict[str, str]:
    requires = ":".join(str(path) for path in (SUPERVISED, JOBS, TIMING))
    env = {
        "SIDEKIQ_TEST_REQUIRE": requires,
        "SIDEKIQ_SUPERVISOR_URL": url,
        "SIDEKIQ_SUPERVISOR_MODE": mode,
        "SIDEKIQ_SUPERVISOR_FLUSH_INTERVAL_SECONDS": FLUSH_INTERVAL_SECONDS,
    }
    if token is not None:
        env["SIDEKIQ_SUPERVISOR_TOKEN"] = token
    return env


async def push_lifecycles(sidekiq: RealSidekiq) -> Pushed:
    """One job of each kind, pushed through Sidekiq::Client in one Ruby process."""
    at = time.time() + SCHEDULE_AHEAD_SECONDS
    started = time.monotonic()
    quick, flaky, explode, scheduled, parent = await sidekiq.push(
        job("QuickJob", "low", 1, "two"),
        job("FlakyJob", "default"),  # fails once (to `retry`), then succeeds
        job("ExplodeJob", "default", "kaboom", retry=0),  # straight to `dead`
        job("QuickJob", "critical", "later", at=at),
        job("ParentJob", "critical"),  # pushes a QuickJob from inside the job
    )
    return Pushed(quick, flaky, explode, scheduled, parent, at, time.monotonic() - started)


async def run_lifecycles(sidekiq: RealSidekiq, pushed: Pushed) -> str:
    """Waits until every job ran its course in Sidekiq; returns the jid ParentJob pushed."""
    timeout = JOBS_TIMEOUT_SECONDS

    async def in_set(name: str, jid: str) -> bool:
        return jid in await sidekiq.jids_in(name)

    await sidekiq.wait_until(lambda: in_set("retry", pushed.flaky), "FlakyJob in retry", timeout)
    await make_due(sidekiq, pushed.flaky)
    await sidekiq.wait_until(lambda: in_set("dead", pushed.explode), "ExplodeJob dead", timeout)
    children: list[str] = []

    async def child_pushed() -> bool:
        for entry in await sidekiq.redis.lrange(CHILDREN, 0, -1):
            parent, _, child = text(entry).partition(" ")
            if parent == pushed.parent:
                children.append(child)
        return bool(children)

    await sidekiq.wait_until(child_pushed, "ParentJob to push its child", timeout)

    async def all_done() -> bool:
        done = await sidekiq.done()
        return done.issuperset({pushed.quick, pushed.flaky, pushed.scheduled, children[0]})

    await sidekiq.wait_until(all_done, "every job to complete", timeout)
    return children[0]


async def make_due(sidekiq: RealSidekiq, jid: str) -> None:
    """Moves a job's retry to now (its retry is an hour away), for Sidekiq's poller to enqueue."""
    for member in await sidekiq.redis.zrange("retry", 0, -1):
        if isinstance(member, bytes) and orjson.loads(member)["jid"] == jid:
            await sidekiq.redis.zadd("retry", {member: time.time() - 1}, xx=True)
            return
    pytest.fail(f"{jid} is not in the retry set")


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def overhead(sidekiq: RealSidekiq) -> Overhead:
    """The measurements, once every run, push and death has one (each is recorded just after
    its span, which can end after the job's own work was seen done)."""

    async def seconds(kind: str) -> list[float]:
        entries = await sidekiq.redis.lrange(OVERHEAD + kind, 0, -1)
        return [float(entry.split()[1]) for entry in entries]

    async def complete() -> bool:
        counts = [int(await sidekiq.redis.llen(OVERHEAD + kind)) for kind in EXPECTED_COUNTS]
        return counts >= list(EXPECTED_COUNTS.values())

    await sidekiq.wait_until(complete, "every overhead measurement", JOBS_TIMEOUT_SECONDS)
    server = [value / 2 for value in await seconds("server")]
    return Overhead(await seconds("client"), server, await seconds("death"))


def report(case: str, measured: Overhead) -> None:
    """Appends the figures to test-artifacts/middleware-overhead.jsonl (kept out of git)."""
    ARTIFACTS.mkdir(exist_ok=True)
    line = {"case": case, **dict(measured.lists())}
    with (ARTIFACTS / "middleware-overhead.jsonl").open("ab") as out:
        out.write(orjson.dumps(line) + b"\n")


# The ledger, as the read API shows it ----------------------------------------------------


def events(row: dict[str, Any]) -> list[str]:
    return [entry["event"] for entry in row["timeline"]]


def moment(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def settled(
    sidekiq: RealSidekiq, supervisor: LiveSupervisor, expected: dict[str, list[str]]
) -> dict[str, dict[str, Any]]:
    """Each jid's row once its timeline holds the expected events (the sender is asynchronous)."""
    rows: dict[str, dict[str, Any]] = {}

    async def arrived() -> bool:
        for jid, names in expected.items():
            row = await supervisor.job(jid)
            if row is None or len(row["timeline"]) < len(names):
                return False
            rows[jid] = row
        return True

    await sidekiq.wait_until(arrived, "every event in the ledger", LEDGER_TIMEOUT_SECONDS)
    return rows


def expected_timelines(pushed: Pushed, child: str) -> dict[str, list[str]]:
    return {
        pushed.quick: ["queued", "started", "complete"],
        # The retry poller pushes the job again (the server's client middleware: `queued`).
        pushed.flaky: ["queued", "started", "failed", "queued", "started", "complete"],
        pushed.explode: ["queued", "started", "failed", "dead"],
        # The scheduler pushes it when due (the server's client middleware again).
        pushed.scheduled: ["scheduled", "queued", "started", "complete"],
        pushed.parent: ["queued", "started", "complete"],
        child: ["queued", "started", "complete"],
    }


def check_rows(rows: dict[str, dict[str, Any]], pushed: Pushed, child: str, identity: str) -> None:
    quick = rows[pushed.quick]
    assert quick["status"] == "complete"
    assert (quick["job_class"], quick["queue"], quick["arguments"]) == (
        "QuickJob",
        "low",
        '[1,"two"]',
    )
    assert quick["attempts"] == 1
    assert quick["process"] == identity
    assert quick["error_class"] is None
    assert moment(quick["enqueued_at"]) <= moment(quick["started_at"])
    assert moment(quick["started_at"]) <= moment(quick["completed_at"])
    assert quick["wait_seconds"] >= 0
    assert quick["run_seconds"] >= 0

    flaky = rows[pushed.flaky]
    assert flaky["status"] == "complete"
    assert flaky["attempts"] == 2
    assert (flaky["error_class"], flaky["error_message"]) == (
        "Boom",
        f"first run of {pushed.flaky}",
    )
    assert moment(flaky["failed_at"]) < moment(flaky["started_at"]) < moment(flaky["completed_at"])
    retry_counts = [entry["retry_count"] for entry in flaky["timeline"]]
    assert retry_counts == [None, None, None, 0, 0, 0]
    assert [entry["process"] for entry in flaky["timeline"] if entry["event"] == "started"] == [
        identity,
        identity,
    ]

    explode = rows[pushed.explode]
    assert explode["status"] == "dead"
    assert (explode["error_class"], explode["error_message"]) == ("Boom", "kaboom")
    assert explode["attempts"] == 1
    assert [e["error_class"] for e in explode["timeline"]] == [None, None, "Boom", "Boom"]

    scheduled = rows[pushed.scheduled]
    assert scheduled["status"] == "complete"
    assert scheduled["queue"] == "critical"
    scheduled_for = moment(scheduled["scheduled_for"]).timestamp()
    assert scheduled_for == pytest.approx(pushed.scheduled_at, abs=1e-3)
    # Sidekiq's scheduler enqueues a job only once it is due.
    assert moment(scheduled["enqueued_at"]).timestamp() >= scheduled_for - 1e-3

    assert rows[child]["status"] == "complete"
    assert (rows[child]["job_class"], rows[child]["queue"]) == ("QuickJob", "default")


# Metrics -----------------------------------------------------------------------------------


def series(queue: str, worker: str, **extra: str) -> frozenset[tuple[str, str]]:
    return frozenset({("queue", queue), ("worker", worker), *extra.items()})


def expected_metrics() -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    """What the lifecycles of push_lifecycles add up to (a fresh supervisor per test)."""
    quick, scheduled = series("low", "QuickJob"), series("critical", "QuickJob")
    parent, child = series("critical", "ParentJob"), series("default", "QuickJob")
    flaky, explode = series("default", "FlakyJob"), series("default", "ExplodeJob")
    succeeded = {quick: 1.0, scheduled: 1.0, parent: 1.0, child: 1.0, flaky: 1.0}
    executed = {**succeeded, flaky: 2.0, explode: 1.0}
    return {
        "sidekiq_jobs_executed_total": executed,
        "sidekiq_jobs_succeeded_total": succeeded,
        "sidekiq_jobs_failed_total": {
            series("default", "FlakyJob", error_class="Boom"): 1.0,
            series("default", "ExplodeJob", error_class="Boom"): 1.0,
        },
        "sidekiq_jobs_dead_total": {explode: 1.0},
        "sidekiq_job_wait_seconds_count": executed,  # one start per run
        "sidekiq_job_run_seconds_count": executed,
        "sidekiq_job_total_seconds_count": succeeded,
    }


async def check_metrics(sidekiq: RealSidekiq, supervisor: LiveSupervisor) -> None:
    """Polls until the job metrics match (they are counted once each batch commits)."""
    expected = expected_metrics()
    found: dict[str, dict[frozenset[tuple[str, str]], float]] = {}

    async def matches() -> bool:
        for name in expected:
            found[name] = {k: v for k, v in (await supervisor.samples(name)).items() if v}
        return found == expected

    try:
        await sidekiq.wait_until(matches, "the job metrics", LEDGER_TIMEOUT_SECONDS)
    except pytest.fail.Exception:
        assert found == expected  # shows the difference
        raise


# The tests ---------------------------------------------------------------------------------


async def test_every_lifecycle_reaches_the_ledger_and_the_metrics(
    mysql_url: str, tmp_path: Path
) -> None:
    with run_supervisor(
        mysql_url, tmp_path, ingest_token=INGEST_TOKEN, admin_token=ADMIN_TOKEN
    ) as supervisor:
        env = middleware_env(supervisor.url, token=INGEST_TOKEN)
        async with start_sidekiq(tmp_path, extra_env=env) as sidekiq:
            pushed = await push_lifecycles(sidekiq)
            child = await run_lifecycles(sidekiq, pushed)
            expected = expected_timelines(pushed, child)
            rows = await settled(sidekiq, supervisor, expected)
            assert {jid: events(row) for jid, row in rows.items()} == expected
            check_rows(rows, pushed, child, sidekiq.identity)
            await check_metrics(sidekiq, supervisor)
            measured = await overhead(sidekiq)
    report("supervisor up, background", measured)
    assert {kind: len(values) for kind, values in measured.lists()} == EXPECTED_COUNTS
    assert measured.worst < BACKGROUND_BOUND_SECONDS, measured.describe()


@pytest.mark.parametrize(
    ("outage", "mode"),
    [("refused", "background"), ("hung", "background"), ("refused", "inline"), ("hung", "inline")],
)
async def test_jobs_run_and_finish_when_the_supervisor_is_down(
    outage: str, mode: str, tmp_path: Path
) -> None:
    with hung_supervisor() as hung:
        url = hung if outage == "hung" else refused_url()
        async with start_sidekiq(tmp_path, extra_env=middleware_env(url, mode=mode)) as sidekiq:
            pushed = await push_lifecycles(sidekiq)  # would raise if a push raised
            await run_lifecycles(sidekiq, pushed)
            assert await sidekiq.jids_in("retry") == set()
            measured = await overhead(sidekiq)
    report(f"supervisor {outage}, {mode}", measured)
    assert {kind: len(values) for kind, values in measured.lists()} == EXPECTED_COUNTS
    bound = BACKGROUND_BOUND_SECONDS if mode == "background" else INLINE_BOUND_SECONDS
    assert measured.worst < bound, measured.describe()
    assert pushed.push_seconds < PUSH_BOUND_SECONDS


async def test_a_forked_child_reports_its_own_jobs_once(mysql_url: str, tmp_path: Path) -> None:
    with run_supervisor(mysql_url, tmp_path, ingest_token=INGEST_TOKEN) as supervisor:
        env = middleware_env(supervisor.url, token=INGEST_TOKEN)
        async with start_sidekiq(tmp_path, extra_env=env) as sidekiq:
            jids: list[str] = orjson.loads(await run_ruby(FORK_PUSH, sidekiq.env))
            await sidekiq.wait_done(*jids)
            lifecycle = ["queued", "started", "complete"]
            rows = await settled(sidekiq, supervisor, dict.fromkeys(jids, lifecycle))
    assert {jid: events(row) for jid, row in rows.items()} == dict.fromkeys(jids, lifecycle)


async def test_the_original_faraday_middleware_still_records_a_job(
    mysql_url: str, tmp_path: Path
) -> None:
    with run_supervisor(mysql_url, tmp_path) as supervisor:
        env = {
            "SIDEKIQ_TEST_REQUIRE": str(ORIGINAL),
            "SIDEKIQ_SUPERVISOR_HOST": supervisor.url,  # the server middleware's variable
            "SIDEDIQ_SUPERVISOR_HOST": supervisor.url,  # the client's, as the original spells it
        }
        async with start_sidekiq(tmp_path, extra_env=env) as sidekiq:
            [jid] = await sidekiq.push(job("QuickJob", "low", 3, "héllo & co"))
            await sidekiq.wait_done(jid)
            rows = await settled(sidekiq, supervisor, {jid: ["queued", "started", "complete"]})
    row = rows[jid]
    assert events(row) == ["queued", "started", "complete"]
    assert row["status"] == "complete"
    assert (row["job_class"], row["queue"], row["arguments"]) == (
        "QuickJob",
        "low",
        '[3,"héllo & co"]',
    )
    assert moment(row["enqueued_at"]) <= moment(row["started_at"]) <= moment(row["completed_at"])
