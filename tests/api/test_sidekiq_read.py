"""The Sidekiq read API against real Redis layouts: stats, queues, processes, busy jobs, paged
sets and queues (bounded reads, proven by recording every command), and sample history."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Connection, Redis
from redis.typing import EncodableT
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.domain import QueueStats, Snapshot
from app.main import SupervisorApp, create_app
from app.sampler.runner import Sampler
from app.sidekiq import browse
from app.sidekiq.keys import Keys
from app.store.db import create_sessionmaker
from app.store.samples import add_samples
from tests.conftest import REDIS_URL, make_settings
from tests.sidekiq.layouts import NOW, V641, V812, Version, job, process, push
from tests.sidekiq.test_browse import add_entries, failed_job

Command = tuple[str, list[str]]
SNAPSHOT_ROUTES = ["/api/v1/stats", "/api/v1/queues", "/api/v1/processes", "/api/v1/busy"]
PAGED_ROUTES = ["/api/v1/retries", "/api/v1/scheduled", "/api/v1/dead", "/api/v1/queues/x/jobs"]


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[SupervisorApp, AsyncClient]]:
    """The app with its lifespan running, and a client for it."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://supervisor.test") as http:
            yield application, http


@pytest.fixture
async def served(sqlite_url: str, redis: Redis) -> AsyncIterator[tuple[SupervisorApp, AsyncClient]]:
    """These routes read only Redis, so one database backend is enough."""
    async with serve(make_settings(sqlite_url)) as pair:
        yield pair


@pytest.fixture
def http(served: tuple[SupervisorApp, AsyncClient]) -> AsyncClient:
    return served[1]


async def get(http: AsyncClient, url: str, **params: Any) -> Any:
    response = await http.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# Snapshot routes ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V641, V812], ids=lambda v: v.name)
async def test_stats_queues_processes_and_busy_read_redis_now(
    http: AsyncClient, redis: Redis, version: Version
) -> None:
    keys = Keys()
    now = time.time()
    await redis.set(keys.processed, 1234)
    await redis.set(keys.failed, 56)
    await add_entries(redis, keys.retry, [(NOW + 30, failed_job(version, failed_at=NOW))])
    await add_entries(redis, keys.schedule, [(NOW + 90, job(version, "default", enqueued_at=NOW))])
    await add_entries(
        redis, keys.dead, [(NOW - n, failed_job(version, failed_at=NOW)) for n in range(3)]
    )
    await redis.sadd(keys.queues, "default")
    await redis.lpush(
        keys.queue("default"), orjson.dumps(job(version, "default", enqueued_at=now - 30))
    )
    await push(redis, keys, version, "mailers", 5.0, 1.0)
    running = [("a" * 24, "default", now - 7), ("b" * 24, "mailers", now - 2)]
    alpha = await process(
        redis, keys, version, hostname="alpha", concurrency=10, queues=["default", "mailers"],
        busy=running,
    )  # fmt: skip
    beta = await process(
        redis, keys, version, hostname="beta", concurrency=5, queues=["default"], quiet=True
    )
    await process(redis, keys, version, hostname="gone", concurrency=9, queues=["x"], expired=True)

    stats = await get(http, "/api/v1/stats")
    queues = await get(http, "/api/v1/queues")
    processes = await get(http, "/api/v1/processes")
    busy = await get(http, "/api/v1/busy")

    assert stats["from_sampler"] is False
    assert {k: v for k, v in stats.items() if k not in ("taken_at", "default_latency_seconds")} == {
        "from_sampler": False, "processed": 1234, "failed": 56, "busy": 2, "enqueued": 3,
        "retries": 1, "scheduled": 1, "dead": 3, "processes": 3, "workers": 15,
    }  # fmt: skip
    assert 30 <= stats["default_latency_seconds"] < 40
    assert seconds(stats["taken_at"]) >= now
    assert [(q["name"], q["size"]) for q in queues["items"]] == [("default", 1), ("mailers", 2)]
    assert queues["items"][1]["latency_seconds"] > 5.0

    by_host = {p["hostname"]: p for p in processes["items"]}
    assert sorted(by_host) == ["alpha", "beta"]
    assert by_host["alpha"] | {"pid": None, "started_at": None, "beat": None} == {
        "identity": alpha, "hostname": "alpha", "pid": None, "tag": "app",
        "queues": ["default", "mailers"], "labels": ["blue"], "concurrency": 10, "busy": 2,
        "running": 2, "quiet": False, "rss_kb": 123_456, "beat": None, "started_at": None,
        "version": version.info_version, "embedded": False,
    }  # fmt: skip
    assert seconds(by_host["alpha"]["beat"]) == NOW - 2
    assert seconds(by_host["alpha"]["started_at"]) == NOW - 3600
    assert by_host["alpha"]["pid"] == int(alpha.split(":")[1])
    assert (by_host["beta"]["identity"], by_host["beta"]["quiet"]) == (beta, True)
    assert (by_host["beta"]["busy"], by_host["beta"]["running"]) == (0, 0)

    assert [(b["jid"], b["queue"], b["process"]) for b in busy["items"]] == [
        ("a" * 24, "default", alpha),
        ("b" * 24, "mailers", alpha),
    ]
    first = busy["items"][0]
    assert (first["tid"], first["job_class"], first["args"]) == ("tid0", "HardJob", [1, "two"])
    assert seconds(first["run_at"]) == int(now - 7)
    assert 7 <= first["elapsed_seconds"] < 20
    assert orjson.loads(first["payload"])["jid"] == "a" * 24


def sampled(taken_at: datetime, *, processed: int = 7, queue_size: int = 4) -> Snapshot:
    return Snapshot(
        taken_at=taken_at,
        processed=processed,
        failed=1,
        scheduled=2,
        retries=3,
        dead=4,
        processes_size=0,
        queues=(QueueStats("default", queue_size, 1.5),),
        processes=(),
        busy_jobs=(),
    )


async def test_a_fresh_sampler_snapshot_is_served_and_a_stale_one_is_not(
    served: tuple[SupervisorApp, AsyncClient], redis: Redis
) -> None:
    application, http = served
    # The test plays the sampler's tick: what it read last is its `latest`.
    sampler: Sampler = application.state.resources.sampler
    await redis.set("stat:processed", 99)
    interval = application.state.settings.SAMPLE_INTERVAL_SECONDS

    sampler.latest = sampled(datetime.now(UTC))
    fresh = await get(http, "/api/v1/stats")
    queues = await get(http, "/api/v1/queues")
    sampler.latest = sampled(datetime.now(UTC) - timedelta(seconds=interval + 1))
    stale = await get(http, "/api/v1/stats")

    assert (fresh["from_sampler"], fresh["processed"], fresh["default_latency_seconds"]) == (
        True,
        7,
        1.5,
    )
    assert (queues["from_sampler"], queues["items"]) == (
        True,
        [{"name": "default", "size": 4, "latency_seconds": 1.5}],
    )
    assert (stale["from_sampler"], stale["processed"], stale["enqueued"]) == (False, 99, 0)


# Sorted sets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V641, V812], ids=lambda v: v.name)
async def test_retries_page_soonest_first_with_every_field(
    http: AsyncClient, redis: Redis, version: Version
) -> None:
    keys = Keys()
    entries = [
        (NOW + 30 + n + 0.125, failed_job(version, failed_at=NOW - n, retry_count=n % 3))
        for n in range(12)
    ]
    await add_entries(redis, keys.retry, entries)

    first = await get(http, "/api/v1/retries", limit=5)
    second = await get(http, "/api/v1/retries", limit=5, offset=5)
    last = await get(http, "/api/v1/retries", limit=5, offset=10)
    beyond = await get(http, "/api/v1/retries", limit=5, offset=50)

    def jids(page: dict[str, Any]) -> list[str]:
        return [item["jid"] for item in page["items"]]

    assert jids(first) + jids(second) + jids(last) == [p["jid"] for _, p in entries]
    assert [p["next_offset"] for p in (first, second, last, beyond)] == [5, 10, None, None]
    assert [p["total"] for p in (first, beyond)] == [12, 12]
    assert (beyond["items"], beyond["direction"], first["name"]) == ([], "asc", "retries")
    assert first["score_means"] == "next retry time"
    assert (first["substr"], first["scan_complete"]) == (None, True)

    score, payload = entries[4]
    item = first["items"][4]
    assert item["key"] == f"{score!r}-{payload['jid']}"
    assert (item["score"], seconds(item["at"])) == (score, score)
    assert item["raw"] == orjson.dumps(payload).decode()
    assert (item["raw_base64"], item["problem"]) == (None, None)
    assert (item["job_class"], item["queue"], item["args"]) == ("HardJob", "default", [1, "two"])
    assert (item["retry_count"], item["error_class"], item["error_message"]) == (
        1,
        "RuntimeError",
        "boom",
    )
    assert seconds(item["failed_at"]) == NOW - 4
    assert seconds(item["retried_at"]) == NOW - 4 + 60
    assert seconds(item["enqueued_at"]) == NOW - 14
    assert seconds(item["created_at"]) == NOW - 15
    assert first["items"][0]["retried_at"] is None  # retry_count 0: only failed_at


async def test_dead_is_newest_first_and_scheduled_soonest_first(
    http: AsyncClient, redis: Redis
) -> None:
    keys = Keys()
    dead = [(NOW - n, failed_job(V812, failed_at=NOW - n)) for n in range(4)]
    scheduled = [(NOW + n, job(V812, "default", enqueued_at=NOW)) for n in (30, 10, 20)]
    await add_entries(redis, keys.dead, dead)
    await add_entries(redis, keys.schedule, scheduled)

    morgue = await get(http, "/api/v1/dead")
    oldest_dead = await get(http, "/api/v1/dead", direction="asc", limit=2)
    later = await get(http, "/api/v1/scheduled")
    latest = await get(http, "/api/v1/scheduled", direction="desc", limit=1)

    assert [seconds(i["at"]) for i in morgue["items"]] == [NOW, NOW - 1, NOW - 2, NOW - 3]
    assert (morgue["direction"], morgue["score_means"]) == ("desc", "time of death")
    assert [i["score"] for i in oldest_dead["items"]] == [NOW - 3, NOW - 2]
    assert [i["score"] for i in later["items"]] == [NOW + 10, NOW + 20, NOW + 30]
    assert (later["name"], later["score_means"]) == ("scheduled", "due time")
    assert [i["score"] for i in latest["items"]] == [NOW + 30]


async def test_a_filter_scans_for_a_plain_substring(http: AsyncClient, redis: Redis) -> None:
    keys = Keys()
    await add_entries(
        redis,
        keys.retry,
        [
            (NOW + 1, failed_job(V641, failed_at=NOW, error="Net::ReadTimeout", args=[1])),
            (NOW + 2, failed_job(V641, failed_at=NOW, error="boom", args=["user-42"])),
            (NOW + 3, failed_job(V641, failed_at=NOW, error="Net::ReadTimeout", args=[3])),
            (NOW + 4, failed_job(V641, failed_at=NOW, error="boom", args=["user-7"])),
        ],
    )

    timeouts = await get(http, "/api/v1/retries", substr="ReadTimeout")
    second = await get(http, "/api/v1/retries", substr="ReadTimeout", offset=1, limit=1)
    user = await get(http, "/api/v1/retries", substr='"user-42"')
    wildcard = await get(http, "/api/v1/retries", substr="user-*")

    assert [i["args"] for i in timeouts["items"]] == [[1], [3]]
    assert (timeouts["total"], timeouts["scan_complete"], timeouts["substr"]) == (
        2,
        True,
        "ReadTimeout",
    )
    assert ([i["args"] for i in second["items"]], second["next_offset"]) == ([[3]], None)
    assert [i["args"] for i in user["items"]] == [["user-42"]]
    assert (wildcard["items"], wildcard["total"]) == ([], 0)  # "*" is a character, not a glob


async def test_entries_that_are_not_jobs_are_listed_with_their_raw_text(
    http: AsyncClient, redis: Redis
) -> None:
    keys = Keys()
    good = failed_job(V641, failed_at=NOW)
    await redis.zadd(
        keys.dead, {b"{not json": NOW - 1, b'"just a string"': NOW - 2, b"\xffbin": NOW - 3}
    )
    await add_entries(redis, keys.dead, [(NOW, good)])

    page = await get(http, "/api/v1/dead")

    items = page["items"]
    assert [i["jid"] for i in items] == [good["jid"], None, None, None]
    problems = [None, "not valid JSON", "JSON, but not a job object", "not valid JSON"]
    assert [i["problem"] for i in items] == problems
    assert [i["raw"] for i in items[1:3]] == ["{not json", '"just a string"']
    assert items[1]["key"] == f"{NOW - 1!r}-"
    assert items[3]["raw"] == "\ufffdbin"
    assert items[3]["raw_base64"] == "/2Jpbg=="


# Queues ---------------------------------------------------------------------------------------


async def test_a_queue_pages_newest_first_or_oldest_first(http: AsyncClient, redis: Redis) -> None:
    keys = Keys()
    await push(redis, keys, V812, "critical", 70, 60, 50, 40, 30, 20, 10)
    await redis.rpush(keys.queue("critical"), b"{broken")  # the next job to run, not JSON

    newest = await get(http, "/api/v1/queues/critical/jobs", limit=3)
    following = await get(http, "/api/v1/queues/critical/jobs", limit=3, offset=3)
    oldest = await get(http, "/api/v1/queues/critical/jobs", limit=3, direction="asc")
    tail = await get(http, "/api/v1/queues/critical/jobs", limit=3, offset=6, direction="asc")
    beyond = await get(http, "/api/v1/queues/critical/jobs", offset=100)
    missing = await get(http, "/api/v1/queues/nothing-here/jobs")

    def ages(page: dict[str, Any]) -> list[float | None]:
        return [
            None if i["enqueued_at"] is None else round(NOW - seconds(i["enqueued_at"]))
            for i in page["items"]
        ]

    assert (ages(newest), [i["position"] for i in newest["items"]]) == ([10, 20, 30], [8, 7, 6])
    assert (newest["total"], newest["next_offset"], newest["direction"]) == (8, 3, "desc")
    assert ages(following) == [40, 50, 60]
    assert (ages(oldest), [i["position"] for i in oldest["items"]]) == ([None, 70, 60], [1, 2, 3])
    assert (oldest["items"][0]["raw"], oldest["items"][0]["problem"]) == (
        "{broken",
        "not valid JSON",
    )
    assert (ages(tail), tail["next_offset"], oldest["direction"]) == ([20, 10], None, "asc")
    assert (beyond["items"], beyond["total"], beyond["next_offset"]) == ([], 8, None)
    assert (missing["items"], missing["total"], missing["queue"]) == ([], 0, "nothing-here")
    assert newest["items"][0]["queue"] == "critical"


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"direction": "sideways"}, {"substr": ""}],
)
async def test_bad_paging_parameters_are_refused(http: AsyncClient, params: dict[str, Any]) -> None:
    response = await http.get("/api/v1/retries", params=params)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"


# Namespace, outage, credentials --------------------------------------------------------------


async def test_a_redis_namespace_is_used_for_every_key(sqlite_url: str, redis: Redis) -> None:
    keys, plain = Keys("myapp"), Keys()
    for where, count in ((keys, 2), (plain, 5)):
        await add_entries(
            redis, where.retry, [(NOW + n, failed_job(V641, failed_at=NOW)) for n in range(count)]
        )
        await push(redis, where, V641, "default", *range(1, count + 1))
        await redis.set(where.processed, count)
    await process(redis, keys, V641, hostname="ns", concurrency=3, queues=["default"])
    await process(redis, plain, V641, hostname="bare", concurrency=3, queues=["default"])

    async with serve(make_settings(sqlite_url, REDIS_NAMESPACE="myapp")) as (_, http):
        stats = await get(http, "/api/v1/stats")
        retries = await get(http, "/api/v1/retries")
        jobs = await get(http, "/api/v1/queues/default/jobs")
        processes = await get(http, "/api/v1/processes")

    assert (stats["processed"], stats["retries"], stats["enqueued"]) == (2, 2, 2)
    assert (retries["total"], jobs["total"]) == (2, 2)
    assert [p["hostname"] for p in processes["items"]] == ["ns"]


@pytest.mark.parametrize("route", SNAPSHOT_ROUTES + PAGED_ROUTES + ["/api/v1/dead?substr=x"])
async def test_redis_down_answers_503(sqlite_url: str, route: str) -> None:
    settings = make_settings(sqlite_url, REDIS_URL="redis://127.0.0.1:1/0", RETRY_AFTER_SECONDS=3)
    async with serve(settings) as (_, http):
        response = await http.get(route)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    body = response.json()
    assert body["error"] == "redis_unavailable"
    assert body["detail"].startswith("Sidekiq's Redis did not answer (")


async def test_the_routes_need_the_admin_token_when_one_is_set(sqlite_url: str) -> None:
    async with serve(make_settings(sqlite_url, ADMIN_TOKEN="admin-secret")) as (_, http):
        for route in [*SNAPSHOT_ROUTES, *PAGED_ROUTES, "/api/v1/history"]:
            assert (await http.get(route)).status_code == 401, route
        allowed = await http.get(
            "/api/v1/retries", headers={"Authorization": "Bearer admin-secret"}
        )
    assert allowed.status_code == 200


# Bounded reads --------------------------------------------------------------------------------


def recording_redis(log: list[Command]) -> Redis:
    """A client on the test database that records every command it sends, pipelined or not."""

    class Recording(Connection):
        def pack_command(self, *args: EncodableT) -> list[bytes]:
            words = [a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in args]
            name, *rest = words[0].split() + words[1:]
            log.append((name.upper(), rest))
            return super().pack_command(*args)

    return Redis.from_url(REDIS_URL, connection_class=Recording)


@pytest.fixture
async def recorded(
    served: tuple[SupervisorApp, AsyncClient],
) -> AsyncIterator[list[Command]]:
    """The app's Redis client swapped for a recording one."""
    application, _ = served
    log: list[Command] = []
    client = recording_redis(log)
    original = application.state.resources
    application.state.resources = dataclasses.replace(original, redis=client)
    yield log
    application.state.resources = original
    await client.aclose()


def data_commands(log: list[Command]) -> Iterator[Command]:
    """What was read, without the connection's handshake and the MULTI/EXEC around a page."""
    return (c for c in log if c[0] not in ("HELLO", "AUTH", "CLIENT", "SELECT", "MULTI", "EXEC"))


async def test_pages_never_read_a_whole_set_or_list(
    http: AsyncClient, redis: Redis, recorded: list[Command]
) -> None:
    keys = Keys()
    many = [(NOW + n, failed_job(V641, failed_at=NOW, args=[n])) for n in range(5_000)]
    await add_entries(redis, keys.retry, many)
    await add_entries(redis, keys.dead, many)
    await redis.lpush(keys.queue("big"), *(orjson.dumps({"jid": str(n)}) for n in range(5_000)))
    requests: list[tuple[str, dict[str, Any]]] = [
        ("/api/v1/retries", {"limit": 50}),
        ("/api/v1/retries", {"limit": 20, "offset": 4_990}),
        ("/api/v1/dead", {}),
        ("/api/v1/queues/big/jobs", {"limit": 30, "direction": "asc"}),
        ("/api/v1/queues/big/jobs", {"limit": 30, "offset": 2_000}),
    ]
    ranges: list[tuple[str, int]] = []  # (route, entries the range covered)
    for route, params in requests:
        recorded.clear()
        page = await get(http, route, **params)
        assert len(page["items"]) == min(page["limit"], page["total"] - page["offset"])
        commands = list(data_commands(recorded))
        assert {name for name, _ in commands} <= {"ZCARD", "ZRANGE", "ZREVRANGE", "LLEN", "LRANGE"}
        for name, args in commands:
            if name in ("ZRANGE", "ZREVRANGE", "LRANGE"):
                start, stop = int(args[1]), int(args[2])
                assert 0 < stop - start + 1 <= page["limit"], (route, args)
                ranges.append((route, stop - start + 1))
    assert len(ranges) == 5

    recorded.clear()
    found = await get(http, "/api/v1/dead", substr="[4999]", limit=10)
    assert [i["args"] for i in found["items"]] == [[4999]]
    scans = list(data_commands(recorded))
    assert {name for name, _ in scans} == {"ZSCAN"}
    assert len(scans) <= browse.SCAN_CALLS
    assert all(args[-2:] == ["COUNT", str(browse.SCAN_COUNT)] for _, args in scans)


# History --------------------------------------------------------------------------------------


async def add_history(engine: AsyncEngine, *snapshots: Snapshot) -> None:
    async with create_sessionmaker(engine)() as session:
        for snap in snapshots:
            await add_samples(session, snap)
        await session.commit()


async def test_history_of_totals_and_of_one_queue(client: AsyncClient, engine: AsyncEngine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - timedelta(hours=30)
    recent = [now - timedelta(minutes=m) for m in (30, 20, 10)]
    await add_history(
        engine,
        sampled(old, processed=1),
        *(sampled(t, processed=100 + n, queue_size=n) for n, t in enumerate(recent)),
    )

    default = await get(client, "/api/v1/history")
    ranged = await get(
        client, "/api/v1/history", since=old.isoformat(), until=recent[1].isoformat()
    )
    capped = await get(client, "/api/v1/history", limit=2)
    queue = await get(client, "/api/v1/history", queue="default", since="2000-01-01T00:00:00")
    other = await get(client, "/api/v1/history", queue="other")

    assert [p["processed"] for p in default["totals"]] == [100, 101, 102]
    assert (default["queue"], default["queue_points"], default["truncated"]) == (None, [], False)
    assert seconds(default["until"]) - seconds(default["since"]) == 24 * 3600
    first = default["totals"][0]
    assert first == {
        "sampled_at": first["sampled_at"], "processed": 100, "failed": 1, "enqueued": 0,
        "scheduled": 2, "retry": 3, "dead": 4, "processes": 0, "workers": 0, "busy": 0,
    }  # fmt: skip
    assert seconds(first["sampled_at"]) == recent[0].timestamp()
    assert [p["processed"] for p in ranged["totals"]] == [1, 100]
    assert ([p["processed"] for p in capped["totals"]], capped["truncated"]) == ([100, 101], True)
    assert [p["size"] for p in queue["queue_points"]] == [4, 0, 1, 2]
    assert queue["queue_points"][1] == {
        "sampled_at": queue["queue_points"][1]["sampled_at"],
        "size": 0,
        "latency_seconds": 1.5,
        "busy": 0,
    }
    assert (queue["totals"], queue["queue"]) == ([], "default")
    assert (other["queue_points"], other["totals"]) == ([], [])


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"limit": 10_001},
        {"limit": 0},
        {"since": "yesterday"},
    ],
)
async def test_bad_history_parameters_are_refused(
    client: AsyncClient, params: dict[str, Any]
) -> None:
    response = await client.get("/api/v1/history", params=params)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"
