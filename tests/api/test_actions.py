"""Control routes against Sidekiq's real Redis layout: requeue, set actions, signals, drain."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain import EventName, JobEvent
from app.main import create_app
from app.sidekiq.keys import Keys
from app.store.ledger_writes import write_batch
from tests.sidekiq.layouts import NOW, V7, V812, process, push

KEYS = Keys()
T0 = datetime.now(UTC) - timedelta(minutes=5)


async def started(
    engine: AsyncEngine, jid: str, *, arguments: str = '[1,"two"]', truncated: bool = False
) -> None:
    """A ledger job that was queued and started, never completed."""
    events = [
        JobEvent(
            jid,
            name,
            T0 + timedelta(seconds=offset),
            T0,
            job_class="HardJob",
            queue="default",
            arguments=arguments,
            arguments_truncated=truncated,
        )
        for offset, name in enumerate((EventName.QUEUED, EventName.STARTED))
    ]
    async with engine.connect() as conn:
        await write_batch(conn, events)


async def queued_payloads(redis: Redis, queue: str = "default") -> list[dict[str, object]]:
    return [orjson.loads(raw) for raw in await redis.lrange(KEYS.queue(queue), 0, -1)]


async def test_requeue_dry_run_then_push_once_keeping_history(
    client: AsyncClient, engine: AsyncEngine, redis: Redis
) -> None:
    await started(engine, "a" * 24)
    await started(engine, "b" * 24)
    await started(engine, "c" * 24, arguments='["cut', truncated=True)
    await process(
        redis,
        KEYS,
        V7,
        hostname="w",
        concurrency=5,
        queues=["default"],
        busy=[("b" * 24, "default", NOW)],
        beat=time.time() - 2,  # a live process: requeue never touches what it runs
    )

    dry = (await client.post("/api/v1/jobs/requeue", json={})).json()
    assert dry["dry_run"] is True
    assert (dry["requeued"], dry["skipped"]) == (0, 2)
    reasons = {item["job"]["jid"]: item["skipped"] for item in dry["items"]}
    assert reasons["a" * 24] is None
    assert reasons["b" * 24].startswith("running now on w:")
    assert "truncated" in reasons["c" * 24]
    assert await queued_payloads(redis) == []

    done = (await client.post("/api/v1/jobs/requeue", json={"dry_run": False})).json()
    assert done["requeued"] == 1
    new_jid = next(item["new_jid"] for item in done["items"] if item["new_jid"])
    [payload] = await queued_payloads(redis)
    assert (payload["jid"], payload["class"], payload["args"]) == (new_jid, "HardJob", [1, "two"])
    assert isinstance(payload["enqueued_at"], float)  # a 7.x fleet reads float seconds
    assert payload["requeued_from"] == "a" * 24
    original = (await client.get(f"/api/v1/jobs/{'a' * 24}")).json()
    assert (original["status"], original["requeued_as"]) == ("requeued", new_jid)
    assert [e["event"] for e in original["timeline"]] == ["queued", "started", "requeued"]
    attempt = (await client.get(f"/api/v1/jobs/{new_jid}")).json()
    assert (attempt["status"], attempt["queue"]) == ("queued", "default")

    again = (await client.post("/api/v1/jobs/requeue", json={"dry_run": False})).json()
    assert again["requeued"] == 0
    assert len(await queued_payloads(redis)) == 1


async def test_concurrent_requeues_push_each_job_once(
    client: AsyncClient, engine: AsyncEngine, redis: Redis
) -> None:
    for n in range(5):
        await started(engine, f"{n:024d}")
    await process(redis, KEYS, V812, hostname="w", concurrency=5, queues=["default"])
    answers = await asyncio.gather(
        *(client.post("/api/v1/jobs/requeue", json={"dry_run": False}) for _ in range(4))
    )
    assert sum(answer.json()["requeued"] for answer in answers) == 5
    payloads = await queued_payloads(redis)
    assert sorted(str(p["requeued_from"]) for p in payloads) == [f"{n:024d}" for n in range(5)]
    assert all(isinstance(p["enqueued_at"], int) for p in payloads)  # an 8.x fleet: ms


@pytest.mark.parametrize("dry_run", [0, "no", "off", "f", "false", None])
async def test_dry_run_takes_only_a_json_boolean(
    client: AsyncClient, engine: AsyncEngine, redis: Redis, dry_run: object
) -> None:
    """A fuzzer's `dry_run: 0` once meant "push for real": a switch that acts takes nothing
    but true or false."""
    await started(engine, "a" * 24)
    refused = await client.post("/api/v1/jobs/requeue", json={"dry_run": dry_run})
    assert refused.status_code == 422
    assert "JSON boolean" in refused.json()["fields"]["dry_run"]
    assert await queued_payloads(redis) == []


@pytest.mark.parametrize("everything", [1, "true", "yes"])
async def test_all_takes_only_a_json_boolean(
    client: AsyncClient, redis: Redis, everything: object
) -> None:
    await redis.zadd(KEYS.retry, {retry_entry("d" * 24): NOW})
    body = {"action": "delete", "all": everything}
    refused = await client.post("/api/v1/retries/actions", json=body)
    assert refused.status_code == 422
    assert "JSON boolean" in refused.json()["fields"]["all"]
    assert await redis.zcard(KEYS.retry) == 1


def retry_entry(jid: str, *, queue: str = "default", retry_count: int = 2) -> bytes:
    job = {
        "class": "HardJob", "args": [jid], "retry": True, "queue": queue, "jid": jid,
        "created_at": NOW - 100, "enqueued_at": NOW - 90, "error_message": "boom",
        "error_class": "RuntimeError", "failed_at": NOW - 80, "retry_count": retry_count,
    }  # fmt: skip
    return orjson.dumps(job)


async def test_retry_now_moves_an_entry_once_even_when_raced(
    client: AsyncClient, redis: Redis
) -> None:
    member = retry_entry("r" * 24)
    await redis.zadd(KEYS.retry, {member: NOW + 30})
    key = f"{NOW + 30}-{'r' * 24}"
    answers = await asyncio.gather(
        *(
            client.post("/api/v1/retries/actions", json={"action": "retry", "keys": [key]})
            for _ in range(5)
        )
    )
    assert sorted(a.json()["done"] for a in answers) == [0, 0, 0, 0, 1]
    [payload] = await queued_payloads(redis)
    assert payload["retry_count"] == 1  # as Sidekiq's Web UI: one less
    assert payload["error_class"] == "RuntimeError"
    assert await redis.zcard(KEYS.retry) == 0
    assert await redis.sismember(KEYS.queues, "default")


async def test_kill_delete_and_bulk_actions(client: AsyncClient, redis: Redis) -> None:
    await redis.zadd(KEYS.retry, {retry_entry(f"k{n:023d}"): NOW + n for n in range(5)})
    kill = await client.post(
        "/api/v1/retries/actions", json={"action": "kill", "keys": [f"{NOW}-k{0:023d}", "1.5-nope"]}
    )
    assert kill.json() == {
        "action": "kill",
        "set": "retries",
        "done": 1,
        "missed": ["1.5-nope"],
        "more": False,
    }
    assert await redis.zcard(KEYS.dead) == 1
    some = await client.post(
        "/api/v1/retries/actions", json={"action": "delete", "all": True, "limit": 3}
    )
    assert (some.json()["done"], some.json()["more"]) == (3, True)
    rest = await client.post("/api/v1/retries/actions", json={"action": "retry", "all": True})
    assert (rest.json()["done"], rest.json()["more"]) == (1, False)
    refused = await client.post("/api/v1/dead/actions", json={"action": "kill", "all": True})
    assert refused.status_code == 422
    both = await client.post(
        "/api/v1/dead/actions", json={"action": "delete", "all": True, "keys": ["1-x"]}
    )
    assert both.status_code == 422
    for bad in ("x-abc", "nan-abc", "1.5-"):  # the GUI refuses the same keys
        answer = await client.post("/api/v1/dead/actions", json={"action": "delete", "keys": [bad]})
        assert answer.json()["fields"] == {"keys": f"not a <score>-<jid> entry key: {bad!r}"}


async def test_quiet_and_stop_signals(client: AsyncClient, redis: Redis) -> None:
    one = await process(redis, KEYS, V7, hostname="a", concurrency=1, queues=["q"])
    two = await process(redis, KEYS, V7, hostname="b", concurrency=1, queues=["q"])
    quiet = await client.post("/api/v1/processes/quiet", params={"identity": one})
    assert quiet.json() == {"signal": "quiet", "processes": [one]}
    assert await redis.lrange(KEYS.signals(one), 0, -1) == [b"TSTP"]
    assert 0 < await redis.ttl(KEYS.signals(one)) <= 60
    stop = await client.post("/api/v1/processes/stop")
    assert sorted(stop.json()["processes"]) == sorted([one, two])
    assert await redis.lrange(KEYS.signals(two), 0, -1) == [b"TERM"]
    missing = await client.post("/api/v1/processes/quiet", params={"identity": "ghost:1:aa"})
    assert missing.status_code == 404


async def test_an_embedded_process_takes_no_signal(client: AsyncClient, redis: Redis) -> None:
    """It is live, so not "not found": the call is refused as the GUI refuses it (422), and
    `stop` for every process leaves it out."""
    embedded = await process(redis, KEYS, V812, hostname="e", concurrency=1, queues=["q"])
    info = orjson.loads(await redis.hget(KEYS.process(embedded), "info") or b"{}")
    await redis.hset(KEYS.process(embedded), "info", orjson.dumps(info | {"embedded": True}))
    other = await process(redis, KEYS, V7, hostname="o", concurrency=1, queues=["q"])

    refused = await client.post("/api/v1/processes/stop", params={"identity": embedded})
    everyone = await client.post("/api/v1/processes/stop")

    assert refused.status_code == 422
    assert refused.json()["fields"] == {
        "identity": f"{embedded!r} is an embedded Sidekiq, which ignores quiet and stop signals"
    }
    assert everyone.json()["processes"] == [other]
    assert await redis.lrange(KEYS.signals(embedded), 0, -1) == []


async def test_drain_quiets_the_host_and_waits_for_its_jobs(
    client: AsyncClient, redis: Redis
) -> None:
    busy = await process(
        redis, KEYS, V7, hostname="pod-1", concurrency=2, queues=["default"],
        busy=[("d" * 24, "default", NOW)],
    )  # fmt: skip
    other = await process(redis, KEYS, V7, hostname="pod-2", concurrency=2, queues=["default"])
    first = await client.post("/api/v1/drain", params={"host": "pod-1"})
    assert first.status_code == 503
    assert first.headers["retry-after"] == "2"
    assert (first.json()["quieting"], first.json()["running"]) == (1, 1)
    assert await redis.lrange(KEYS.signals(busy), 0, -1) == [b"TSTP"]
    assert await redis.exists(KEYS.signals(other)) == 0

    # The next heartbeat: quiet, and the job finished.
    await redis.hset(KEYS.process(busy), "quiet", "true")
    await redis.delete(KEYS.work(busy))
    done = await client.post("/api/v1/drain", params={"host": "pod-1"})
    assert done.status_code == 200
    assert done.json()["drained"] is True
    await push(redis, KEYS, V7, "default", 1.0)
    waiting = await client.post("/api/v1/drain", params={"host": "pod-1", "wait_for_queues": True})
    assert (waiting.status_code, waiting.json()["queued_jobs"]) == (503, 1)


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer wrong", 401),
        ("Bearer admin-secret", 200),
        ("Basic " + base64.b64encode(b"ops:admin-secret").decode(), 200),
        ("Basic " + base64.b64encode(b"ops:nope").decode(), 401),
    ],
)
async def test_control_needs_admin_credentials(
    database_url: str, engine: AsyncEngine, redis: Redis, header: str | None, status: int
) -> None:
    from tests.conftest import make_settings

    application = create_app(make_settings(database_url, ADMIN_TOKEN="admin-secret"))
    headers = {"Authorization": header} if header else {}
    async with application.router.lifespan_context(application):
        async with AsyncClient(
            transport=ASGITransport(app=application), base_url="http://t"
        ) as http:
            answer = await http.post("/api/v1/processes/quiet", headers=headers)
    assert answer.status_code == status
