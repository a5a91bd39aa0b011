"""The Retries, Scheduled and Dead pages in-process: listing, paging, order, filter, one entry in
full, each action for one / the selected / all moving exactly the right Redis members, the
read-only role, CSRF, the audit log and escaping, on Sidekiq 6, 7 and 8 payloads."""

from __future__ import annotations

import base64
import logging
import re
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from httpx import AsyncClient, Response
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.sidekiq.browse import SCAN_CALLS, SCAN_COUNT, format_score
from app.sidekiq.keys import Keys
from app.web import sets
from tests.conftest import make_settings, serve
from tests.sidekiq.layouts import NOW, V7, V641, V812, Version, job, stamp

KEYS = Keys()
VERSIONS = [V641, V7, V812]
SET_KEYS = {"retries": "retry", "scheduled": "schedule", "dead": "dead"}
JID_LINK = re.compile(r'href="/sidekiq/jobs/([0-9a-f]+)"')
CHECKBOX = re.compile(r'type="checkbox" name="key" value="([^"]+)"')
CSRF = re.compile(r'data-csrf="([^"]+)"')
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
BACKTRACE = ["app/jobs/hard_job.rb:12:in `perform'", "lib/sidekiq/processor.rb:196:in `<main>'"]


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """These pages read and write Sidekiq's Redis only: one ledger backend is enough."""
    return sqlite_url


def entry(
    version: Version,
    queue: str = "default",
    *,
    retry_count: int | None = 0,
    failed: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    """A payload as Sidekiq stores it in a set: a failed job (retry, dead) or a scheduled one."""
    payload = job(version, queue, enqueued_at=NOW - 120)
    if failed:
        payload |= {
            "error_class": "RuntimeError",
            "error_message": "boom",
            "failed_at": stamp(version, NOW - 60),
        }
    if retry_count is not None:
        payload["retry_count"] = retry_count
    return payload | fields


async def add(redis: Redis, set_name: str, score: float, payload: dict[str, Any]) -> str:
    """ZADD the payload; returns its Web UI key "<score>-<jid>"."""
    await redis.zadd(KEYS.key(SET_KEYS[set_name]), {orjson.dumps(payload): score})
    return f"{format_score(score)}-{payload['jid']}"


async def fill(
    redis: Redis, set_name: str, version: Version, count: int, **fields: Any
) -> list[dict[str, Any]]:
    """`count` entries scored NOW + 10 s apart (lowest score first in the returned list)."""
    payloads = [entry(version, **fields) for _ in range(count)]
    for n, payload in enumerate(payloads):
        await add(redis, set_name, NOW + 10 * n + 0.25, payload)
    return payloads


def jids_on(page: Response) -> list[str]:
    return JID_LINK.findall(page.text)


def csrf_of(page: Response) -> str:
    found = CSRF.search(page.text)
    assert found is not None
    return found.group(1)


async def members(redis: Redis, set_name: str) -> set[str]:
    raw = await redis.zrange(KEYS.key(SET_KEYS[set_name]), 0, -1)
    return {orjson.loads(member)["jid"] for member in raw if isinstance(member, bytes)}


async def queued(redis: Redis, queue: str = "default") -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in await redis.lrange(KEYS.queue(queue), 0, -1)]


async def act(client: AsyncClient, set_name: str, **form: Any) -> Response:
    """POST an action form with the page's CSRF token, as the browser does."""
    token = csrf_of(await client.get(f"/sidekiq/{set_name}"))
    return await client.post(f"/sidekiq/{set_name}/actions", data={"csrf": token, **form})


async def follow(client: AsyncClient, answer: Response) -> Response:
    assert answer.status_code == 303, answer.text
    return await client.get(answer.headers["location"])


def notice_of(page: Response) -> str:
    found = re.search(r'<p class="notice" role="status">([^<]*)</p>', page.text)
    assert found is not None, "no notice on the page"
    return found.group(1)


@pytest.fixture
async def small_pages(database_url: str, engine: AsyncEngine) -> AsyncIterator[AsyncClient]:
    """The GUI with pages of 2 entries, at most 3."""
    async for http in serve(make_settings(database_url, PAGE_SIZE=2, MAX_PAGE_SIZE=3)):
        yield http


@pytest.fixture
async def reader(database_url: str, engine: AsyncEngine) -> AsyncIterator[AsyncClient]:
    """The GUI with credentials, as the read-only role (basic auth x:r)."""
    settings = make_settings(database_url, READ_TOKEN="r", ADMIN_TOKEN="a")
    async for http in serve(settings):
        http.auth = ("x", "r")
        yield http


# Listing, order, paging, filter ------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
@pytest.mark.parametrize(
    ("set_name", "newest_first"), [("retries", False), ("scheduled", False), ("dead", True)]
)
async def test_a_set_lists_its_entries_in_its_default_order(
    client: AsyncClient, redis: Redis, version: Version, set_name: str, newest_first: bool
) -> None:
    failed = set_name != "scheduled"
    payloads = await fill(redis, set_name, version, 3, failed=failed)
    expected = [p["jid"] for p in payloads]

    page = await client.get(f"/sidekiq/{set_name}")

    assert page.status_code == 200
    assert jids_on(page) == (expected[::-1] if newest_first else expected)
    assert 'aria-current="page">' + set_name.capitalize() in page.text
    assert len(CHECKBOX.findall(page.text)) == 3
    assert "HardJob" in page.text
    assert "2025-06-15 15:06:40 UTC" in page.text  # the lowest score, NOW + 0.25
    if failed:
        assert "RuntimeError" in page.text
        assert "2025-06-15 15:05:40 UTC" in page.text  # failed_at, NOW - 60, in s or ms


async def test_direction_reverses_the_order(client: AsyncClient, redis: Redis) -> None:
    payloads = await fill(redis, "dead", V7, 3)
    page = await client.get("/sidekiq/dead", params={"direction": "asc"})
    assert jids_on(page) == [p["jid"] for p in payloads]
    assert '<b aria-current="true">Oldest first</b>' in page.text
    retries = await fill(redis, "retries", V7, 3)
    page = await client.get("/sidekiq/retries", params={"direction": "desc"})
    assert jids_on(page) == [p["jid"] for p in retries][::-1]


async def test_pages_are_offset_and_limit_with_a_bounded_size(
    small_pages: AsyncClient, redis: Redis
) -> None:
    jids = [p["jid"] for p in await fill(redis, "retries", V812, 5)]

    first = await small_pages.get("/sidekiq/retries")
    assert jids_on(first) == jids[:2]  # PAGE_SIZE
    assert "1\u20132 of 5" in first.text  # an en dash
    assert 'href="/sidekiq/retries?offset=2" rel="next"' in first.text

    second = await small_pages.get("/sidekiq/retries", params={"offset": 2, "limit": 2})
    assert jids_on(second) == jids[2:4]
    assert 'rel="prev"' in second.text

    clamped = await small_pages.get("/sidekiq/retries", params={"limit": 1000})
    assert jids_on(clamped) == jids[:3]  # MAX_PAGE_SIZE

    last = await small_pages.get("/sidekiq/retries", params={"offset": 4})
    assert jids_on(last) == jids[4:]
    assert 'rel="next"' not in last.text


async def test_bad_paging_is_a_422_page(client: AsyncClient) -> None:
    for params in ({"offset": -1}, {"limit": 0}, {"direction": "sideways"}):
        page = await client.get("/sidekiq/retries", params=params)
        assert page.status_code == 422
        assert "That input is not valid" in page.text


async def test_the_filter_finds_a_substring_and_keeps_the_order(
    client: AsyncClient, redis: Redis
) -> None:
    wanted = [entry(V641, args=["needle[1]*", n]) for n in range(3)]
    for n, payload in enumerate(wanted):
        await add(redis, "dead", NOW + n, payload)
    await fill(redis, "dead", V641, 4)

    page = await client.get("/sidekiq/dead", params={"substr": "needle[1]*"})

    assert jids_on(page) == [p["jid"] for p in wanted][::-1]
    assert "3 entries contain “needle[1]*”." in page.text
    assert "stopped early" not in page.text
    assert '<span class="badge" title="entries in the set">7</span>' in page.text
    assert 'name="substr" value="needle[1]*"' in page.text  # the forms return to the filter


async def test_a_filter_on_a_huge_set_says_the_scan_stopped_early(
    client: AsyncClient, redis: Redis
) -> None:
    count = SCAN_CALLS * SCAN_COUNT * 3
    filler = {f'{{"jid":"{n:024x}","class":"X"}}': float(n) for n in range(count)}
    await redis.zadd(KEYS.retry, filler)

    page = await client.get("/sidekiq/retries", params={"substr": "no such text"})

    assert page.status_code == 200
    assert "The search stopped early" in page.text
    assert "Nothing in Retries matches." in page.text


# One entry ---------------------------------------------------------------------------------


def packed_backtrace(lines: list[str], *, strict: bool) -> str:
    """As Sidekiq writes it: Base64(zlib(JSON)); 6.x's encode64 breaks lines every 60 chars."""
    packed = zlib.compress(orjson.dumps(lines))
    return base64.b64encode(packed).decode() if strict else base64.encodebytes(packed).decode()


@pytest.mark.parametrize(("version", "strict"), [(V641, False), (V7, True), (V812, True)])
async def test_an_entry_page_shows_every_field_and_the_decoded_backtrace(
    client: AsyncClient, redis: Redis, version: Version, strict: bool
) -> None:
    long_lines = [*BACKTRACE, *(f"frame {n}" for n in range(40))]  # past one Base64 line
    payload = entry(
        version,
        "mailers",
        retry_count=3,
        retried_at=stamp(version, NOW - 30),
        error_backtrace=packed_backtrace(long_lines, strict=strict),
    )
    key = await add(redis, "retries", NOW + 5.5, payload)

    page = await client.get(f"/sidekiq/retries/{key}")

    assert page.status_code == 200, page.text
    text = page.text
    assert f'href="/sidekiq/jobs/{payload["jid"]}"' in text
    assert 'href="/sidekiq/queues/mailers"' in text
    assert "2025-06-15 15:06:45 UTC" in text  # the score
    assert "2025-06-15 15:06:10 UTC" in text  # retried_at
    assert "<dt>Retry count</dt><dd>3" in text
    assert "app/jobs/hard_job.rb:12:in `perform&#39;\nlib/sidekiq/processor.rb" in text
    assert "frame 39" in text
    assert "&#34;queue&#34;: &#34;mailers&#34;" in text  # the pretty JSON, escaped, in <pre>
    for verb in ("Retry now", "Delete", "Kill"):
        assert f">{verb}</button>" in text


async def test_an_undecodable_backtrace_says_so(client: AsyncClient, redis: Redis) -> None:
    key = await add(redis, "dead", NOW, entry(V7, error_backtrace="not base64 zlib"))
    page = await client.get(f"/sidekiq/dead/{key}")
    assert page.status_code == 200
    assert "could not be decoded" in page.text


async def test_a_plain_backtrace_array_is_shown_too(client: AsyncClient, redis: Redis) -> None:
    key = await add(redis, "dead", NOW, entry(V641, error_backtrace=["a.rb:1", "<b.rb>:2"]))
    page = await client.get(f"/sidekiq/dead/{key}")
    assert '<pre class="entry-backtrace">a.rb:1\n&lt;b.rb&gt;:2</pre>' in page.text


async def test_a_bad_or_gone_entry_key_is_a_404_page(client: AsyncClient, redis: Redis) -> None:
    payload = entry(V7)
    key = await add(redis, "retries", NOW, payload)
    for bad in ("nonsense", "nan-abc", f"{NOW + 1}-{payload['jid']}", f"{NOW}-0000"):
        page = await client.get(f"/sidekiq/retries/{bad}")
        assert page.status_code == 404, bad
        assert "Not found" in page.text
    assert (await client.get(f"/sidekiq/dead/{key}")).status_code == 404  # another set's key


# Actions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
@pytest.mark.parametrize(("set_name", "decrements"), [("retries", True), ("dead", True)])
async def test_retry_now_moves_one_entry_into_its_queue(
    client: AsyncClient, redis: Redis, version: Version, set_name: str, decrements: bool
) -> None:
    moving, staying = entry(version, "low", retry_count=4), entry(version, "low", retry_count=2)
    key = await add(redis, set_name, NOW + 1, moving)
    await add(redis, set_name, NOW + 2, staying)

    page = await follow(client, await act(client, set_name, action="retry", key=key))

    assert notice_of(page) == "Retried 1 job."
    assert await members(redis, set_name) == {staying["jid"]}
    [pushed] = await queued(redis, "low")
    assert pushed["jid"] == moving["jid"]
    assert pushed["retry_count"] == 3  # SortedEntry#retry decrements
    assert isinstance(pushed["enqueued_at"], float)  # no live Sidekiq 8: float seconds
    assert pushed["enqueued_at"] > NOW
    assert {k: v for k, v in pushed.items() if k not in ("enqueued_at", "retry_count")} == {
        k: v for k, v in moving.items() if k not in ("enqueued_at", "retry_count")
    }
    assert await redis.sismember(KEYS.queues, "low")


async def test_add_to_queue_keeps_the_retry_count(client: AsyncClient, redis: Redis) -> None:
    payload = entry(V812, retry_count=2, failed=False)
    del payload["enqueued_at"]  # 7.1.2+ strips it from scheduled entries
    key = await add(redis, "scheduled", NOW + 60, payload)

    page = await follow(client, await act(client, "scheduled", action="retry", key=key))

    assert notice_of(page) == "Added 1 job to its queue."
    assert await members(redis, "scheduled") == set()
    [pushed] = await queued(redis)
    assert (pushed["jid"], pushed["retry_count"]) == (payload["jid"], 2)


async def test_delete_selected_removes_exactly_those(client: AsyncClient, redis: Redis) -> None:
    payloads = [entry(V641) for _ in range(4)]
    keys = [await add(redis, "retries", NOW + n, p) for n, p in enumerate(payloads)]

    answer = await act(client, "retries", action="delete", key=[keys[0], keys[2]])
    page = await follow(client, answer)

    assert notice_of(page) == "Deleted 2 jobs."
    assert await members(redis, "retries") == {payloads[1]["jid"], payloads[3]["jid"]}
    assert await queued(redis) == []


async def test_kill_moves_a_retry_to_dead_with_its_exact_bytes(
    client: AsyncClient, redis: Redis
) -> None:
    payload = entry(V7, retry_count=7)
    key = await add(redis, "retries", NOW, payload)

    page = await follow(client, await act(client, "retries", action="kill", key=key))

    assert notice_of(page) == "Killed 1 job (moved to Dead)."
    assert await members(redis, "retries") == set()
    assert await redis.zcard(KEYS.dead) == 1
    score = await redis.zscore(KEYS.dead, orjson.dumps(payload))  # the exact bytes
    assert score is not None
    assert score > NOW  # the time of death: now


@pytest.mark.parametrize(
    ("set_name", "action", "notice", "target"),
    [
        ("retries", "retry", "Retried 3 jobs.", "queue"),
        ("retries", "kill", "Killed 3 jobs (moved to Dead).", "dead"),
        ("scheduled", "retry", "Added 3 jobs to their queues.", "queue"),
        ("dead", "delete", "Deleted 3 jobs.", None),
    ],
)
async def test_all_acts_on_the_whole_set(
    client: AsyncClient,
    redis: Redis,
    set_name: str,
    action: str,
    notice: str,
    target: str | None,
) -> None:
    jids = {p["jid"] for p in await fill(redis, set_name, V812, 3)}

    page = await follow(client, await act(client, set_name, action=action, all="1"))

    assert notice_of(page) == notice
    assert await members(redis, set_name) == set()
    if target == "queue":
        assert {p["jid"] for p in await queued(redis)} == jids
    if target == "dead":
        assert await members(redis, "dead") == jids


async def test_all_is_bounded_and_says_entries_are_left(
    client: AsyncClient, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sets, "ALL_LIMIT", 2)
    payloads = await fill(redis, "dead", V7, 3)
    listing = await client.get("/sidekiq/dead")
    assert 'data-confirm="Retry all 3 jobs now (each goes to its queue)? Only the first 2' in (
        listing.text
    )

    page = await follow(client, await act(client, "dead", action="retry", all="1"))

    assert notice_of(page).startswith("Retried 2 jobs. Entries are left:")
    assert await members(redis, "dead") == {payloads[2]["jid"]}  # lowest scores go first
    assert len(await queued(redis)) == 2


async def test_the_all_buttons_confirm_with_the_set_size(client: AsyncClient, redis: Redis) -> None:
    await fill(redis, "retries", V7, 3)
    page = await client.get("/sidekiq/retries", params={"substr": "RuntimeError"})
    assert 'data-confirm="Retry all 3 jobs now (each goes to its queue)?"' in page.text
    assert 'data-confirm="Delete all 3 jobs? This cannot be undone."' in page.text
    assert 'data-confirm="Kill all 3 jobs (move them to Dead)?"' in page.text


async def test_a_key_already_gone_is_reported(client: AsyncClient, redis: Redis) -> None:
    here = entry(V641)
    key = await add(redis, "retries", NOW, here)
    gone = f"{format_score(NOW + 9)}-{'f' * 24}"

    page = await follow(client, await act(client, "retries", action="retry", key=[key, gone]))

    assert notice_of(page) == (
        "Retried 1 job. 1 job was already gone (Sidekiq or another user got there first)."
    )
    assert [p["jid"] for p in await queued(redis)] == [here["jid"]]


async def test_an_action_returns_to_the_filtered_list(client: AsyncClient, redis: Redis) -> None:
    key = await add(redis, "dead", NOW, entry(V7))
    answer = await act(client, "dead", action="delete", key=key, substr="Hard Job", direction="asc")
    assert answer.headers["location"] == (
        "/sidekiq/dead?substr=Hard+Job&direction=asc&done=deleted-one&n=1"
    )


async def test_nothing_selected_is_a_notice_not_an_error(client: AsyncClient, redis: Redis) -> None:
    await fill(redis, "retries", V7, 1)
    page = await follow(client, await act(client, "retries", action="delete"))
    assert notice_of(page).startswith("Nothing was selected")
    assert len(await members(redis, "retries")) == 1


async def test_dead_has_no_kill_and_refuses_one(client: AsyncClient, redis: Redis) -> None:
    payload = entry(V7)
    key = await add(redis, "dead", NOW, payload)
    listing = await client.get("/sidekiq/dead")
    one = await client.get(f"/sidekiq/dead/{key}")
    assert 'value="kill"' not in listing.text
    assert ">Kill" not in listing.text + one.text
    assert ">Retry now</button>" in listing.text

    answer = await act(client, "dead", action="kill", key=key)

    assert answer.status_code == 422
    assert "Dead has no &#39;kill&#39; action" in answer.text
    assert await members(redis, "dead") == {payload["jid"]}


async def test_unknown_actions_and_bad_keys_are_refused(client: AsyncClient, redis: Redis) -> None:
    payload = entry(V7)
    key = await add(redis, "retries", NOW, payload)
    assert (await act(client, "retries", action="explode", key=key)).status_code == 422
    bad_key = await act(client, "retries", action="retry", key="not-a-key")
    assert bad_key.status_code == 422  # form input, as the API answers; a bad address is a 404
    assert "not a &lt;score&gt;-&lt;jid&gt; entry key: &#39;not-a-key&#39;" in bad_key.text
    nan = await act(client, "retries", action="retry", key="nan-0123")
    assert nan.status_code == 422
    assert await members(redis, "retries") == {payload["jid"]}


async def test_each_action_is_audited(
    client: AsyncClient, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    keys = [await add(redis, "retries", NOW + n, entry(V7)) for n in range(2)]
    await fill(redis, "dead", V7, 3)
    with caplog.at_level(logging.INFO, logger="app.audit"):
        await act(client, "retries", action="delete", key=keys)
        await act(client, "dead", action="retry", all="1")
    lines = [r.getMessage() for r in caplog.records if r.name == "app.audit"]
    assert len(lines) == 2
    assert 'user="anonymous"' in lines[0]
    assert 'action=delete target="retries" count=2' in lines[0]
    assert 'action=retry_all target="dead" count=3' in lines[1]


# Who may act -------------------------------------------------------------------------------


async def test_a_forged_post_without_csrf_moves_nothing(
    client: AsyncClient, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    payload = entry(V7)
    key = await add(redis, "retries", NOW, payload)
    with caplog.at_level(logging.INFO, logger="app.audit"):
        forged = await client.post("/sidekiq/retries/actions", data={"action": "retry", "key": key})
        wrong = await client.post(
            "/sidekiq/retries/actions", data={"action": "delete", "key": key, "csrf": "guess"}
        )
        token = csrf_of(await client.get("/sidekiq/retries"))
        elsewhere = await client.post(
            "/sidekiq/retries/actions",
            data={"action": "delete", "all": "1", "csrf": token},
            headers={"Origin": "https://evil.example"},
        )
    assert [forged.status_code, wrong.status_code, elsewhere.status_code] == [403, 403, 403]
    assert await members(redis, "retries") == {payload["jid"]}
    assert await queued(redis) == []
    assert [r for r in caplog.records if r.name == "app.audit"] == []


@pytest.mark.parametrize("set_name", ["retries", "scheduled", "dead"])
async def test_the_read_only_role_sees_no_buttons_and_is_refused(
    reader: AsyncClient, redis: Redis, set_name: str
) -> None:
    payload = entry(V7)
    key = await add(redis, set_name, NOW, payload)

    listing = await reader.get(f"/sidekiq/{set_name}")
    one = await reader.get(f"/sidekiq/{set_name}/{key}")

    assert listing.status_code == one.status_code == 200
    assert jids_on(listing) == [payload["jid"]]
    for page in (listing, one):
        assert "x · read-only" in page.text
        assert "/actions" not in page.text
        assert 'type="checkbox"' not in page.text
        assert "Retry now" not in page.text
        assert "Delete" not in page.text
    answer = await reader.post(
        f"/sidekiq/{set_name}/actions",
        data={"action": "delete", "key": key, "csrf": csrf_of(listing)},
    )
    assert answer.status_code == 403
    assert "read-only" in answer.text
    assert await members(redis, set_name) == {payload["jid"]}


async def test_an_admin_with_credentials_acts(
    database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    payload = entry(V7)
    key = await add(redis, "retries", NOW, payload)
    async for http in serve(make_settings(database_url, READ_TOKEN="r", ADMIN_TOKEN="a")):
        http.auth = ("x", "a")
        page = await follow(http, await act(http, "retries", action="retry", key=key))
        assert notice_of(page) == "Retried 1 job."
    assert [p["jid"] for p in await queued(redis)] == [payload["jid"]]


# Escaping ----------------------------------------------------------------------------------


@pytest.mark.parametrize("set_name", ["retries", "dead"])
async def test_arguments_and_errors_are_shown_as_text(
    client: AsyncClient, redis: Redis, set_name: str
) -> None:
    payload = entry(V7, args=[SCRIPT], error_message=IMG, error_class="Evil<b>Error</b>")
    payload["class"] = "Evil<i>Job</i>"
    key = await add(redis, set_name, NOW, payload)

    for page in (
        await client.get(f"/sidekiq/{set_name}"),
        await client.get(f"/sidekiq/{set_name}/{key}"),
        await client.get(f"/sidekiq/{set_name}", params={"substr": SCRIPT}),
    ):
        assert page.status_code == 200
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "&lt;img src=x onerror=alert(2)&gt;" in page.text
        assert "Evil&lt;i&gt;Job&lt;/i&gt;" in page.text
        for raw in (SCRIPT, "<script>alert", IMG, "<img", "<i>Job", "<b>Error"):
            assert raw not in page.text


async def test_a_member_that_is_not_a_job_is_shown_raw(client: AsyncClient, redis: Redis) -> None:
    await redis.zadd(KEYS.retry, {b"<not json>": NOW})
    await redis.zadd(KEYS.schedule, {b"[1, 2]": NOW})
    retries = await client.get("/sidekiq/retries")
    scheduled = await client.get("/sidekiq/scheduled")
    assert "not valid JSON" in retries.text
    assert "&lt;not json&gt;" in retries.text
    assert "<not json>" not in retries.text
    assert "JSON, but not a job object" in scheduled.text
    assert 'form="row-1"' not in retries.text  # no key to act on: only "all" reaches it
