"""Who may use the GUI: the login form, basic auth, the read-only role, signed sessions that
expire and cannot be forged, CSRF and same-origin checks on every form, and the audit log."""

from __future__ import annotations

import base64
import logging
import re
import string
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from httpx import ASGITransport, AsyncClient, Response
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.access import Principal, Role, credential_of
from app.main import SupervisorApp, create_app
from app.web import busy, dashboard, ledger, metrics_page, queues, sets
from app.web.auth import (
    COOKIE,
    SESSION_SALT,
    UNREADABLE,
    cookie_serializer,
    read_session,
    session_cookie,
)
from tests.conftest import make_settings
from tests.live import free_port

USERS = {
    "alice": {"password": "alice-pw", "role": "admin"},
    "bob": {"password": "bob-pw", "role": "read"},
}
CREDENTIALS: dict[str, Any] = {"ADMIN_TOKEN": "admin-tok", "READ_TOKEN": "read-tok", "USERS": USERS}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
URLSAFE_B64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def basic(name: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def guarded(
    database_url: str, engine: AsyncEngine, redis: Redis
) -> AsyncIterator[SupervisorApp]:
    application = create_app(make_settings(database_url, **CREDENTIALS))
    async with application.router.lifespan_context(application):
        yield application


def http(application: SupervisorApp, **options: Any) -> AsyncClient:
    transport = ASGITransport(app=application)
    return AsyncClient(transport=transport, base_url="http://supervisor.test", **options)


async def sign_in(
    client: AsyncClient, name: str, password: str, next_: str = "/sidekiq"
) -> Response:
    return await client.post(
        "/sidekiq/login", data={"name": name, "password": password, "next": next_}
    )


def csrf_of(page: Response) -> str:
    found = CSRF.search(page.text)
    assert found is not None, "the page carries no CSRF field"
    return found.group(1)


async def test_open_mode_is_an_anonymous_admin(client: AsyncClient) -> None:
    page = await client.get("/sidekiq")
    assert page.status_code == 200
    assert "anonymous · admin" in page.text
    assert "Sign out" not in page.text


async def test_pages_send_people_to_the_login_form(guarded: SupervisorApp) -> None:
    async with http(guarded) as client:
        page = await client.get("/sidekiq/queues?x=1")
        assert page.status_code == 303
        assert page.headers["location"] == "/sidekiq/login?next=/sidekiq/queues%3Fx%3D1"
        form = await client.get(page.headers["location"])
    assert form.status_code == 200
    assert 'name="next" value="/sidekiq/queues?x=1"' in form.text


@pytest.mark.parametrize(
    ("name", "password", "shown"),
    [
        ("alice", "alice-pw", "alice · admin"),
        ("bob", "bob-pw", "bob · read-only"),
        ("carol", "admin-tok", "carol · admin"),
        ("dave", "read-tok", "dave · read-only"),
    ],
)
async def test_a_login_opens_a_session_with_its_role(
    guarded: SupervisorApp, name: str, password: str, shown: str
) -> None:
    async with http(guarded) as client:
        signed = await sign_in(client, name, password, "/sidekiq/queues")
        assert (signed.status_code, signed.headers["location"]) == (303, "/sidekiq/queues")
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/sidekiq" in cookie
        page = await client.get("/sidekiq")
    assert page.status_code == 200
    assert shown in page.text


async def test_a_wrong_password_is_refused_and_audited(
    guarded: SupervisorApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.audit")
    async with http(guarded) as client:
        refused = await sign_in(client, "alice", "bob-pw")
        assert refused.status_code == 401
        assert "do not match" in refused.text
        assert COOKIE not in refused.headers.get("set-cookie", "")
        assert (await client.get("/sidekiq")).status_code == 303
    assert 'action=login_failed target="alice" count=0' in caplog.text


async def test_login_never_sends_the_browser_to_another_site(guarded: SupervisorApp) -> None:
    async with http(guarded) as client:
        for target in ("//evil.example/x", "https://evil.example/", "/api/v1/jobs"):
            signed = await sign_in(client, "alice", "alice-pw", target)
            assert signed.headers["location"] == "/sidekiq"


async def test_basic_auth_works_without_a_session(guarded: SupervisorApp) -> None:
    async with http(guarded) as client:
        admin = await client.get("/sidekiq", headers=basic("alice", "alice-pw"))
        reader = await client.get("/sidekiq", headers=basic("x", "read-tok"))
        wrong = await client.get("/sidekiq", headers=basic("alice", "nope"))
    assert (admin.status_code, reader.status_code, wrong.status_code) == (200, 200, 303)
    assert "alice · admin" in admin.text
    assert "x · read-only" in reader.text


async def test_forged_tampered_and_expired_sessions_are_refused(guarded: SupervisorApp) -> None:
    key = guarded.state.resources.session_key
    admin = Principal("alice", Role.ADMIN, "user")
    credential = credential_of(guarded.state.settings, admin) or ""
    good = session_cookie(key, admin, 60, credential=credential)
    payload, _, signature = good.rpartition(".")
    forged = session_cookie(b"another key" * 3, admin, 60, credential=credential)
    expired = session_cookie(key, admin, -1, credential=credential)
    tampered = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + signature
    # Signed with the right key, but for a user no longer configured (or never was).
    nobody = session_cookie(key, Principal("mallory", Role.ADMIN, "user"), 60, credential="x")
    cases = ((good, 200), (forged, 303), (expired, 303), (tampered, 303), (nobody, 303))
    for value, status in cases:
        async with http(guarded, cookies={COOKIE: value}) as client:
            assert (await client.get("/sidekiq")).status_code == status


async def test_replicas_share_sessions_and_a_password_change_ends_them(
    guarded: SupervisorApp, database_url: str
) -> None:
    async with http(guarded) as client:
        await sign_in(client, "alice", "alice-pw")
        cookie = client.cookies[COOKIE]
    twin = create_app(make_settings(database_url, **CREDENTIALS))
    changed = {**CREDENTIALS, "USERS": {**USERS, "alice": {"password": "new", "role": "admin"}}}
    rotated = create_app(make_settings(database_url, **changed))
    for application, status in ((twin, 200), (rotated, 303)):
        async with application.router.lifespan_context(application):
            async with http(application, cookies={COOKIE: cookie}) as client:
                assert (await client.get("/sidekiq")).status_code == status


async def test_sign_out_needs_the_csrf_token_and_ends_the_session(
    guarded: SupervisorApp,
) -> None:
    async with http(guarded) as client:
        await sign_in(client, "bob", "bob-pw")
        page = await client.get("/sidekiq")
        assert (await client.post("/sidekiq/logout")).status_code == 403
        out = await client.post("/sidekiq/logout", data={"csrf": csrf_of(page)})
        assert (out.status_code, out.headers["location"]) == (303, "/sidekiq/login")
        assert 'supervisor_session=""' in out.headers["set-cookie"]


async def _signed_out_cookie(application: SupervisorApp, name: str, password: str) -> str:
    """A session cookie kept from before its owner signed out."""
    async with http(application) as client:
        await sign_in(client, name, password)
        cookie = client.cookies[COOKIE]
        page = await client.get("/sidekiq")
        out = await client.post("/sidekiq/logout", data={"csrf": csrf_of(page)})
        assert out.status_code == 303
    return cookie


async def _status_with(application: SupervisorApp, cookie: str) -> int:
    async with http(application, cookies={COOKIE: cookie}) as client:
        return (await client.get("/sidekiq")).status_code


async def test_a_signed_out_cookie_works_nowhere_any_more(
    guarded: SupervisorApp, database_url: str
) -> None:
    cookie = await _signed_out_cookie(guarded, "alice", "alice-pw")
    twin = create_app(make_settings(database_url, **CREDENTIALS))
    async with twin.router.lifespan_context(twin):
        assert (await _status_with(guarded, cookie), await _status_with(twin, cookie)) == (303, 303)


async def test_with_redis_down_a_sign_out_still_holds_where_it_happened(
    database_url: str, engine: AsyncEngine
) -> None:
    """The documented choice: while Redis cannot be asked, a replica that did not see the
    sign-out accepts the cookie (and logs a warning) rather than sign everybody out."""
    down = make_settings(database_url, **CREDENTIALS, REDIS_URL=f"redis://127.0.0.1:{free_port()}")
    here, there = create_app(down), create_app(down)
    async with here.router.lifespan_context(here), there.router.lifespan_context(there):
        cookie = await _signed_out_cookie(here, "alice", "alice-pw")
        assert (await _status_with(here, cookie), await _status_with(there, cookie)) == (303, 200)


async def test_a_password_role_or_token_change_ends_sessions_under_a_fixed_secret(
    database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """With SUPERVISOR_SESSION_SECRET the signing key survives a password change: the cookie's
    fingerprint of the credential is what ends the session."""
    fixed = {**CREDENTIALS, "SESSION_SECRET": "a fixed secret"}
    before = create_app(make_settings(database_url, **fixed))
    cookies = {}
    async with before.router.lifespan_context(before):
        for name, password in (("alice", "alice-pw"), ("bob", "bob-pw"), ("carol", "admin-tok")):
            async with http(before) as client:
                assert (await sign_in(client, name, password)).status_code == 303
                cookies[name] = client.cookies[COOKIE]
    changes: list[tuple[dict[str, Any], dict[str, int]]] = [
        (
            {"USERS": {**USERS, "alice": {"password": "new", "role": "admin"}}},
            {"alice": 303, "bob": 200, "carol": 200},
        ),
        (
            {"USERS": {**USERS, "alice": {"password": "alice-pw", "role": "read"}}},
            {"alice": 303, "bob": 200, "carol": 200},
        ),
        ({"ADMIN_TOKEN": "rotated"}, {"alice": 200, "bob": 200, "carol": 303}),
    ]
    for change, expected in changes:
        after = create_app(make_settings(database_url, **{**fixed, **change}))
        async with after.router.lifespan_context(after):
            found = {name: await _status_with(after, cookie) for name, cookie in cookies.items()}
        assert found == expected, change


async def test_a_cookie_spelled_differently_is_refused(guarded: SupervisorApp) -> None:
    """The MAC covers the cookie text as sent, checked before anything is decoded: base64's
    unused bits cannot be flipped to make a second valid spelling of one session."""
    for name in (f"carol{'1' * n}" for n in range(12)):  # until a length leaves bits unused
        async with http(guarded) as client:
            await sign_in(client, name, "admin-tok")
            cookie = client.cookies[COOKIE]
        encoded, _, mac = cookie.rpartition(".")
        if len(encoded.removeprefix(".")) % 4:  # a leading "." marks a compressed payload
            break
    else:
        pytest.fail("no cookie left base64 bits unused")
    index = URLSAFE_B64.index(encoded[-1])
    respelled = encoded[:-1] + URLSAFE_B64[index ^ 1]
    assert _unb64(respelled.removeprefix(".")) == _unb64(encoded.removeprefix("."))
    assert await _status_with(guarded, cookie) == 200
    assert await _status_with(guarded, f"{respelled}.{mac}") == 303


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_a_wrong_signature_is_refused_before_the_payload_is_read(
    guarded: SupervisorApp, caplog: pytest.LogCaptureFixture
) -> None:
    """A payload that would make the parser fail (not JSON), sent with a wrong signature, is
    just "not signed in", and the parser never sees it: only the same payload signed with the
    key gets as far as failing to parse (which is logged)."""
    key = guarded.state.resources.session_key
    admin = Principal("alice", Role.ADMIN, "user")
    credential = credential_of(guarded.state.settings, admin) or ""
    payload, _, signature = session_cookie(key, admin, 60, credential=credential).rpartition(".")
    forged = session_cookie(b"another key" * 3, admin, 60, credential=credential)
    foreign = forged.rpartition(".")[2]
    garbage = base64.urlsafe_b64encode(b"{not json").decode().rstrip("=")
    signed_garbage = cookie_serializer(key).make_signer(SESSION_SALT).sign(garbage).decode()
    with caplog.at_level(logging.WARNING, logger="app.web.auth"):
        assert read_session(key, f"{garbage}.{signature}") is None
        assert read_session(key, f"{payload}.{foreign}") is None  # a valid payload
        assert caplog.records == []
        assert read_session(key, signed_garbage) is None
        assert [record.msg for record in caplog.records] == [UNREADABLE]
    for cookie in (f"{garbage}.{signature}", f"{payload}.{foreign}"):
        assert await _status_with(guarded, cookie) == 303
    assert await _status_with(guarded, f"{payload}.{signature}") == 200


def _action_routes() -> list[str]:
    """Every state-changing GUI route (each page module's own router, mounted at /sidekiq),
    with its path parameters filled in."""
    paths = []
    for module in (dashboard, busy, queues, sets, ledger, metrics_page):
        for route in module.router.routes:
            if isinstance(route, APIRoute) and "POST" in (route.methods or set()):
                paths.append("/sidekiq" + re.sub(r"\{[^}]+\}", "x", route.path))
    return paths


async def test_every_action_refuses_forged_cross_site_and_read_only_posts(
    guarded: SupervisorApp, redis: Redis
) -> None:
    actions = _action_routes()
    assert len(actions) >= 4, actions  # busy, queue delete, set actions, requeue
    async with http(guarded) as admin, http(guarded) as reader:
        await sign_in(admin, "alice", "alice-pw")
        await sign_in(reader, "bob", "bob-pw")
        admin_csrf = csrf_of(await admin.get("/sidekiq"))
        reader_csrf = csrf_of(await reader.get("/sidekiq"))
        for path in actions:
            no_token = await admin.post(path, data={"signal": "quiet"})
            wrong = await admin.post(path, data={"csrf": reader_csrf})
            elsewhere = await admin.post(
                path, data={"csrf": admin_csrf}, headers={"Origin": "https://evil.example"}
            )
            read_only = await reader.post(path, data={"csrf": reader_csrf})
            statuses = [r.status_code for r in (no_token, wrong, elsewhere, read_only)]
            assert statuses == [403, 403, 403, 403], path
            assert "read-only role" in read_only.text
    assert await redis.dbsize() == 0  # nothing reached Sidekiq's Redis


async def test_read_only_pages_show_no_action_buttons(guarded: SupervisorApp) -> None:
    async with http(guarded, headers=basic("bob", "bob-pw")) as client:
        for path in ("/sidekiq", "/sidekiq/busy", "/sidekiq/queues", "/sidekiq/retries"):
            page = await client.get(path)
            assert page.status_code == 200, path
            forms = re.findall(r'<form method="post" action="([^"]+)"', page.text)
            assert forms == ["/sidekiq/logout"], (path, forms)


async def test_pages_carry_a_strict_content_security_policy(client: AsyncClient) -> None:
    page = await client.get("/sidekiq")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    ("header", "read", "act"),
    [
        (None, 401, 401),
        ("Bearer read-tok", 200, 403),
        ("Bearer admin-tok", 200, 200),
        ("Basic " + base64.b64encode(b"bob:bob-pw").decode(), 200, 403),
        ("Basic " + base64.b64encode(b"alice:alice-pw").decode(), 200, 200),
    ],
)
async def test_the_api_knows_both_roles(
    guarded: SupervisorApp, header: str | None, read: int, act: int
) -> None:
    headers = {"Authorization": header} if header else {}
    async with http(guarded, headers=headers) as client:
        listed = await client.get("/api/v1/jobs")
        acted = await client.post("/api/v1/processes/quiet")
    assert (listed.status_code, acted.status_code) == (read, act)


async def test_a_password_guesser_is_made_to_wait(
    guarded: SupervisorApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.audit")
    async with http(guarded) as client:
        for attempt in range(10):
            assert (await sign_in(client, "alice", f"guess-{attempt}")).status_code == 401
        waiting = await sign_in(client, "alice", "alice-pw")
    assert waiting.status_code == 429
    assert int(waiting.headers["retry-after"]) > 0
    assert "Too many failed sign-ins" in waiting.text
    assert caplog.text.count("action=login_failed") == 10
