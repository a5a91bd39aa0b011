"""Paged reads of the retry/schedule/dead sets and queue lists, and job-entry parsing, against
entries written as Sidekiq 6.4.1 (float seconds) and 8.x (integer milliseconds) write them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.sidekiq import browse
from app.sidekiq.browse import (
    NOT_AN_OBJECT,
    NOT_JSON,
    format_score,
    glob_escape,
    parse_job,
    read_queue_page,
    read_set_page,
    search_set,
)
from app.sidekiq.commands import EntryKey
from app.sidekiq.errors import SidekiqUnavailable, redis_unavailable
from app.sidekiq.keys import Keys
from tests.sidekiq.layouts import NOW, V641, V812, Version, job, push, stamp


def failed_job(
    version: Version,
    *,
    failed_at: float,
    retry_count: int = 0,
    error: str = "boom",
    cls: str = "HardJob",
    args: list[Any] | None = None,
) -> dict[str, Any]:
    """A payload as JobRetry writes it into `retry` or `dead`."""
    payload = job(version, "default", enqueued_at=failed_at - 10, cls=cls)
    payload |= {
        "error_message": error,
        "error_class": "RuntimeError",
        "failed_at": stamp(version, failed_at),
        "retry_count": retry_count,
    }
    if retry_count > 0:
        payload["retried_at"] = stamp(version, failed_at + 60 * retry_count)
    if args is not None:
        payload["args"] = args
    return payload


async def add_entries(redis: Redis, key: str, entries: list[tuple[float, dict[str, Any]]]) -> None:
    """ZADD score -> compact job JSON, as Sidekiq does."""
    await redis.zadd(key, {orjson.dumps(payload): score for score, payload in entries})


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


@pytest.mark.parametrize(
    ("score", "text"),
    [
        (1_750_000_030.0, "1750000030.0"),
        (1_750_000_030.123456, "1750000030.123456"),
        (0.5, "0.5"),
        (1e16, "1.0e+16"),
        (1.5e-05, "1.5e-05"),
        (-2.0, "-2.0"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
    ],
)
def test_scores_are_written_as_ruby_writes_floats(score: float, text: str) -> None:
    assert format_score(score) == text


@pytest.mark.parametrize("version", [V641, V812], ids=lambda v: v.name)
def test_a_retry_payload_is_read_field_by_field(version: Version) -> None:
    payload = failed_job(version, failed_at=NOW - 100.5, retry_count=2, error="kaput")
    raw = orjson.dumps(payload)
    record = parse_job(raw)
    assert record.raw == raw
    assert record.problem is None
    assert (record.jid, record.job_class, record.queue) == (payload["jid"], "HardJob", "default")
    assert record.args == [1, "two"]
    assert (record.retry_count, record.error_class, record.error_message) == (
        2,
        "RuntimeError",
        "kaput",
    )
    assert record.failed_at == at(NOW - 100.5)
    assert record.retried_at == at(NOW - 100.5 + 120)
    assert record.enqueued_at == at(NOW - 110.5)
    assert record.created_at == at(NOW - 111.5)


def test_an_activejob_shows_its_wrapped_class() -> None:
    payload = job(V812, "mailers", enqueued_at=NOW, cls="Sidekiq::ActiveJob::Wrapper")
    record = parse_job(orjson.dumps(payload | {"wrapped": "WelcomeMailer"}))
    assert record.job_class == "WelcomeMailer"


@pytest.mark.parametrize(
    ("raw", "problem"), [(b"{not json", NOT_JSON), (b"[1,2]", NOT_AN_OBJECT), (b"\xff", NOT_JSON)]
)
def test_a_payload_that_is_not_a_job_keeps_its_raw_bytes(raw: bytes, problem: str) -> None:
    record = parse_job(raw)
    assert (record.raw, record.problem, record.jid, record.args) == (raw, problem, None, None)


def test_odd_field_types_are_left_out() -> None:
    record = parse_job(b'{"jid":7,"class":["X"],"retry_count":true,"failed_at":1e300}')
    assert (record.jid, record.job_class, record.retry_count, record.failed_at) == (
        None,
        None,
        None,
        None,
    )


async def test_a_set_page_by_rank_in_either_direction(redis: Redis) -> None:
    keys = Keys()
    entries = [(NOW + n, failed_job(V641, failed_at=NOW - n)) for n in range(7)]
    await add_entries(redis, keys.retry, entries)
    jids = [payload["jid"] for _, payload in entries]

    first = await read_set_page(redis, keys.retry, offset=0, limit=3, newest_first=False)
    second = await read_set_page(redis, keys.retry, offset=3, limit=3, newest_first=False)
    last = await read_set_page(redis, keys.retry, offset=6, limit=3, newest_first=False)
    beyond = await read_set_page(redis, keys.retry, offset=10, limit=3, newest_first=False)
    newest = await read_set_page(redis, keys.retry, offset=0, limit=2, newest_first=True)

    def page_jids(page: browse.SetPage) -> list[str | None]:
        return [entry.job.jid for entry in page.entries]

    assert page_jids(first) == jids[0:3]
    assert page_jids(second) == jids[3:6]
    assert page_jids(last) == jids[6:]
    assert page_jids(beyond) == []
    assert page_jids(newest) == [jids[6], jids[5]]
    assert {first.total, beyond.total} == {7}
    assert first.entries[1].score == NOW + 1
    assert first.entries[1].key == f"{NOW + 1}-{jids[1]}"
    # The control actions address entries by this key: it must parse back exactly.
    parsed = EntryKey.parse(first.entries[1].key)
    assert (parsed.score, parsed.jid) == (NOW + 1, jids[1])
    assert first.entries[1].at == at(NOW + 1)


async def test_a_missing_set_is_an_empty_page(redis: Redis) -> None:
    page = await read_set_page(redis, "dead", offset=0, limit=10, newest_first=True)
    assert (page.entries, page.total, page.scan_complete) == ([], 0, True)


async def test_search_matches_plain_substrings_in_order(redis: Redis) -> None:
    keys = Keys()
    entries = [
        (NOW + 3, failed_job(V812, failed_at=NOW, error="disk full")),
        (NOW + 1, failed_job(V812, failed_at=NOW, error="Disk full")),
        (NOW + 2, failed_job(V812, failed_at=NOW, error="disk full again")),
        (NOW + 4, failed_job(V812, failed_at=NOW, error="a*b?[c]")),
        (NOW + 5, failed_job(V812, failed_at=NOW, error="aXbY[c]")),
    ]
    await add_entries(redis, keys.dead, entries)

    found = await search_set(redis, keys.dead, "disk full", offset=0, limit=10, newest_first=True)
    assert [e.score for e in found.entries] == [NOW + 3, NOW + 2]
    assert (found.total, found.scan_complete) == (2, True)
    paged = await search_set(redis, keys.dead, "disk full", offset=1, limit=10, newest_first=False)
    assert [e.score for e in paged.entries] == [NOW + 3]
    literal = await search_set(redis, keys.dead, "a*b?[c]", offset=0, limit=10, newest_first=True)
    assert [e.score for e in literal.entries] == [NOW + 4]
    none = await search_set(redis, keys.dead, "nowhere", offset=0, limit=10, newest_first=True)
    assert (none.entries, none.total, none.scan_complete) == ([], 0, True)


def test_glob_specials_are_escaped() -> None:
    assert glob_escape("a*b?[c]\\d") == "a\\*b\\?\\[c\\]\\\\d"


async def test_search_says_when_its_budget_ran_out(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large set (hashtable encoded) scanned with a budget of two small ZSCAN calls."""
    keys = Keys()
    await add_entries(
        redis, keys.retry, [(NOW + n, failed_job(V641, failed_at=NOW)) for n in range(300)]
    )
    monkeypatch.setattr(browse, "SCAN_COUNT", 10)
    monkeypatch.setattr(browse, "SCAN_CALLS", 2)
    found = await search_set(redis, keys.retry, "boom", offset=0, limit=500, newest_first=False)
    assert not found.scan_complete
    assert 0 < found.total < 300
    assert found.total == len(found.entries)


async def test_search_stops_at_the_match_cap(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = Keys()
    await add_entries(
        redis, keys.retry, [(NOW + n, failed_job(V641, failed_at=NOW)) for n in range(300)]
    )
    monkeypatch.setattr(browse, "SCAN_COUNT", 10)
    monkeypatch.setattr(browse, "MAX_MATCHES", 5)
    found = await search_set(redis, keys.retry, "boom", offset=0, limit=3, newest_first=False)
    assert not found.scan_complete
    assert len(found.entries) == 3
    assert 5 <= found.total < 300


async def test_a_queue_page_newest_or_oldest_first(redis: Redis) -> None:
    keys = Keys()
    await push(redis, keys, V812, "default", 50, 40, 30, 20, 10)  # LPUSHed oldest first
    oldest_jid = orjson.loads(await redis.lindex(keys.queue("default"), -1) or b"{}")["jid"]

    newest = await read_queue_page(
        redis, keys.queue("default"), offset=0, limit=2, oldest_first=False
    )
    second = await read_queue_page(
        redis, keys.queue("default"), offset=2, limit=2, oldest_first=False
    )
    oldest = await read_queue_page(
        redis, keys.queue("default"), offset=0, limit=2, oldest_first=True
    )
    tail = await read_queue_page(redis, keys.queue("default"), offset=4, limit=2, oldest_first=True)
    beyond = await read_queue_page(
        redis, keys.queue("default"), offset=9, limit=2, oldest_first=True
    )

    def ages(page: browse.QueuePage) -> list[float]:
        return [NOW - (entry.job.enqueued_at or at(0)).timestamp() for entry in page.entries]

    assert (ages(newest), [e.position for e in newest.entries]) == ([10, 20], [5, 4])
    assert (ages(second), [e.position for e in second.entries]) == ([30, 40], [3, 2])
    assert (ages(oldest), [e.position for e in oldest.entries]) == ([50, 40], [1, 2])
    assert (ages(tail), [e.position for e in tail.entries]) == ([10], [5])
    assert (beyond.entries, beyond.total) == ([], 5)
    assert oldest.entries[0].job.jid == oldest_jid
    assert newest.total == 5


async def test_redis_errors_become_unavailable() -> None:
    """What a read of an unreachable Redis raises is what the app's handler translates."""
    down = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        with pytest.raises(RedisError) as raised:
            await read_set_page(down, "retry", offset=0, limit=5, newest_first=False)
    finally:
        await down.aclose()
    answer = redis_unavailable(raised.value, retry_after_seconds=7)
    assert isinstance(answer, SidekiqUnavailable)
    assert (answer.status, answer.error) == (503, "redis_unavailable")
    assert answer.headers == {"Retry-After": "7"}
    assert "Redis did not answer" in answer.detail
