"""Who is using the GUI: signed session cookies from the login form (or basic auth), ended
server-side by signing out or a password change, the CSRF token every state-changing form
carries, and the read-only role. The audit log is app.deps.audit, re-exported here.

Signing is itsdangerous's (HMAC-SHA256, a salt per use): it checks a cookie's signature before
it decodes anything, so forged input never reaches a parser."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import Response
from itsdangerous import BadPayload, BadSignature, Signer, URLSafeSerializer

from app.access import OPEN, Principal, Role, credential_of
from app.deps import Resources, check_authorization, refuse_foreign_origin, resources
from app.deps import audit as audit
from app.errors import AppError, Forbidden

COOKIE = "supervisor_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"

BAD_CSRF = "this form's CSRF token is missing or wrong; reload the page and try again"
READ_ONLY = "{name} has the read-only role: actions need an admin"
UNREADABLE = "a session cookie with a valid signature did not parse (%s): a bug, or a leaked key"
# One salt per use, so a value signed for one (a CSRF token) is never valid as another.
SESSION_SALT = "sidekiq-supervisor-session"
CSRF_SALT = "sidekiq-supervisor-csrf"
CREDENTIAL_SALT = "sidekiq-supervisor-credential"
FINGERPRINT_CHARS = 22  # 132 bits of the credential's MAC
log = logging.getLogger(__name__)


class LoginRequired(AppError):
    """No (valid) session: browsers are sent to the login form, then back."""

    status = 303
    error = "login_required"

    def __init__(self, back_to: str) -> None:
        location = f"/sidekiq/login?next={quote(back_to, safe='/')}"
        super().__init__("sign in at " + location, headers={"Location": location})


def cookie_serializer(key: bytes) -> URLSafeSerializer:
    """Cookie values: compact JSON, base64, then `.` and the HMAC-SHA256 of that text."""
    return URLSafeSerializer(
        key, salt=SESSION_SALT, signer_kwargs={"digest_method": hashlib.sha256}
    )


def _signature(key: bytes, salt: str, value: str) -> str:
    return Signer(key, salt=salt, digest_method=hashlib.sha256).get_signature(value).decode()


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: `session_id` is also its CSRF nonce, `credential` the fingerprint
    of the password or token it signed in with."""

    who: Principal
    session_id: str
    expires_at: int
    credential: str


def session_cookie(key: bytes, who: Principal, max_age_seconds: int, *, credential: str) -> str:
    """A signed, expiring cookie value naming the user, role, a fresh session id (the CSRF
    nonce) and a fingerprint of `credential` (see access.credential_of)."""
    body = {
        "n": who.name,
        "r": who.role.value,
        "v": who.via,
        "x": int(time.time()) + max_age_seconds,
        "s": secrets.token_hex(16),
        "c": fingerprint(key, credential),
    }
    return cookie_serializer(key).dumps(body)


def read_session(key: bytes, cookie: str) -> Session | None:
    """The session of a genuine, unexpired cookie; None otherwise. The signature is checked
    before anything of the cookie is decoded, so forged input never reaches a parser."""
    try:
        body: Any = cookie_serializer(key).loads(cookie)
    except BadSignature:  # forged, tampered, or signed with another key: never decoded
        return None
    except BadPayload as exc:
        log.warning(UNREADABLE, exc.original_error or exc)
        return None
    try:
        who = Principal(str(body["n"]), Role(body["r"]), str(body["v"]))
        session = Session(who, str(body["s"]), int(body["x"]), str(body["c"]))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning(UNREADABLE, repr(exc))
        return None
    return session if session.expires_at >= time.time() else None


def fingerprint(key: bytes, credential: str) -> str:
    """A short MAC of a credential: a cookie carries it, never the credential itself."""
    return _signature(key, CREDENTIAL_SALT, credential)[:FINGERPRINT_CHARS]


async def current(request: Request) -> Principal:
    """The GUI's user: from the session cookie, else basic auth, else (no credentials
    configured) the anonymous admin; otherwise the browser goes to the login form."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    found = resources(request)
    if not found.settings.has_credentials:
        who, nonce = OPEN, "open"
    elif (session := await _live_session(found, request.cookies.get(COOKIE, ""))) is not None:
        who, nonce = session.who, session.session_id
        request.state.session = session
    elif (basic := await _basic(request)) is not None:
        who, nonce = basic, "basic|" + basic.name
    else:
        raise LoginRequired(_here(request))
    request.state.principal = who
    request.state.csrf = _signature(found.session_key, CSRF_SALT, nonce)
    return who


async def _live_session(found: Resources, cookie: str) -> Session | None:
    """The cookie's session while its credential is unchanged and nobody signed it out."""
    session = read_session(found.session_key, cookie) if cookie else None
    if session is None:
        return None
    credential = credential_of(found.settings, session.who)
    if credential is None or not hmac.compare_digest(
        session.credential.encode(), fingerprint(found.session_key, credential).encode()
    ):
        return None
    if await found.signins.is_revoked(session.session_id):
        return None
    return session


async def _basic(request: Request) -> Principal | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    return await check_authorization(request, header)


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def csrf_token(request: Request) -> str:
    """The token forms must send back (after `current` ran for this request)."""
    token: str = request.state.csrf
    return token


async def signed_form(request: Request) -> Principal:
    """A form posted from this site with this session's CSRF token, by any role."""
    refuse_foreign_origin(request)
    who = await current(request)
    form = await request.form()
    sent = str(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or "")
    if not hmac.compare_digest(sent.encode(), csrf_token(request).encode()):
        raise Forbidden(BAD_CSRF)
    return who


async def operator(request: Request) -> Principal:
    """State-changing GUI routes: an admin, from this site, with the form's CSRF token."""
    who = await signed_form(request)
    if not who.can_act:
        raise Forbidden(READ_ONLY.format(name=who.name))
    return who


def start_session(request: Request, response: Response, who: Principal) -> None:
    found = resources(request)
    max_age = found.settings.SESSION_MAX_AGE_SECONDS
    credential = credential_of(found.settings, who) or ""
    response.set_cookie(
        COOKIE,
        session_cookie(found.session_key, who, max_age, credential=credential),
        max_age=max_age,
        path="/sidekiq",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def end_session(request: Request, response: Response) -> None:
    """Sign out: the cookie is deleted, and its session refused from now on even if a copy of
    it is sent again (recorded in Redis for its remaining lifetime)."""
    response.delete_cookie(COOKIE, path="/sidekiq")
    session: Session | None = getattr(request.state, "session", None)
    if session is not None:
        remaining = session.expires_at - int(time.time())
        await resources(request).signins.revoke(session.session_id, max(1, remaining))


ViewerDep = Annotated[Principal, Depends(current)]
OperatorDep = Annotated[Principal, Depends(operator)]
SignedFormDep = Annotated[Principal, Depends(signed_form)]
NOBODY = Principal("-", Role.READ, "failed login")
