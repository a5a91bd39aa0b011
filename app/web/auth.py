"""Who is using the GUI: signed session cookies from the login form (or basic auth), the
CSRF token every state-changing form carries, the read-only role, and the audit log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from typing import Annotated
from urllib.parse import quote, urlsplit

import orjson
from fastapi import Depends, Request
from fastapi.responses import Response

from app.access import OPEN, Principal, Role, from_authorization
from app.deps import resources
from app.errors import AppError, Forbidden

COOKIE = "supervisor_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
audit_log = logging.getLogger("app.audit")

BAD_CSRF = "this form's CSRF token is missing or wrong; reload the page and try again"
CROSS_ORIGIN = "a form from another site ({origin}) may not act here"
READ_ONLY = "{name} has the read-only role: actions need an admin"


class LoginRequired(AppError):
    """No (valid) session: browsers are sent to the login form, then back."""

    status = 303
    error = "login_required"

    def __init__(self, back_to: str) -> None:
        location = f"/sidekiq/login?next={quote(back_to, safe='/')}"
        super().__init__("sign in at " + location, headers={"Location": location})


def _sign(key: bytes, payload: bytes) -> str:
    digest = hmac.new(key, payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def session_cookie(key: bytes, who: Principal, max_age_seconds: int) -> str:
    """A signed, expiring cookie value naming the user, role and a fresh CSRF nonce."""
    body = {
        "n": who.name,
        "r": who.role.value,
        "v": who.via,
        "x": int(time.time()) + max_age_seconds,
        "s": secrets.token_hex(16),
    }
    payload = orjson.dumps(body)
    return f"{_b64(payload)}.{_sign(key, payload)}"


def read_session(key: bytes, cookie: str) -> tuple[Principal, str] | None:
    """The principal and CSRF nonce of a valid, unexpired cookie; None otherwise."""
    encoded, _, signature = cookie.partition(".")
    try:
        payload = _unb64(encoded)
        body = orjson.loads(payload)
        if not hmac.compare_digest(signature, _sign(key, payload)):
            return None
        if int(body["x"]) < time.time():
            return None
        return Principal(str(body["n"]), Role(body["r"]), str(body["v"])), str(body["s"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None


def current(request: Request) -> Principal:
    """The GUI's user: from the session cookie, else basic auth, else (no credentials
    configured) the anonymous admin; otherwise the browser goes to the login form."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    found = resources(request)
    session = read_session(found.session_key, request.cookies.get(COOKIE, ""))
    if session is not None:
        who, nonce = session
    elif (basic := _basic(request)) is not None:
        who, nonce = basic, "basic|" + basic.name
    elif not found.settings.has_credentials:
        who, nonce = OPEN, "open"
    else:
        raise LoginRequired(_here(request))
    request.state.principal = who
    request.state.csrf = _sign(found.session_key, f"csrf|{nonce}".encode())
    return who


def _basic(request: Request) -> Principal | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    return from_authorization(resources(request).settings, header)


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def csrf_token(request: Request) -> str:
    """The token forms must send back (after `current` ran for this request)."""
    token: str = request.state.csrf
    return token


async def signed_form(request: Request) -> Principal:
    """A form posted from this site with this session's CSRF token, by any role."""
    who = current(request)
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.url.netloc:
        raise Forbidden(CROSS_ORIGIN.format(origin=origin))
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


def audit(request: Request, who: Principal, action: str, target: str, count: int) -> None:
    """One line per action: who, from where, what, on what, how many."""
    client = request.client.host if request.client else "-"
    audit_log.info(
        "audit user=%s role=%s via=%s client=%s action=%s target=%s count=%d",
        _quoted(who.name),
        who.role.value,
        _quoted(who.via),
        client,
        action,
        _quoted(target),
        count,
    )


def _quoted(value: str) -> str:
    """Values as JSON strings, so a name with spaces or newlines cannot forge a log field."""
    return orjson.dumps(value).decode()


def start_session(request: Request, response: Response, who: Principal) -> None:
    found = resources(request)
    max_age = found.settings.SESSION_MAX_AGE_SECONDS
    response.set_cookie(
        COOKIE,
        session_cookie(found.session_key, who, max_age),
        max_age=max_age,
        path="/sidekiq",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def end_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/sidekiq")


ViewerDep = Annotated[Principal, Depends(current)]
OperatorDep = Annotated[Principal, Depends(operator)]
SignedFormDep = Annotated[Principal, Depends(signed_form)]
NOBODY = Principal("-", Role.READ, "failed login")
