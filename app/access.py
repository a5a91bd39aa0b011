"""Who is asking and what they may do: the admin and read-only roles, checked against
SUPERVISOR_ADMIN_TOKEN, SUPERVISOR_READ_TOKEN and SUPERVISOR_USERS (bearer, basic or a login)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from pydantic import SecretStr

from app.config import Settings

ANONYMOUS = "anonymous"
OPEN_VIA = "no credentials configured"


class Role(StrEnum):
    ADMIN = "admin"
    READ = "read"


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in caller; `via` says which credential (for the audit log)."""

    name: str
    role: Role
    via: str

    @property
    def can_act(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def signed_in(self) -> bool:
        """False for the anonymous admin of a service with no credentials configured."""
        return self.via != OPEN_VIA


OPEN = Principal(ANONYMOUS, Role.ADMIN, OPEN_VIA)


def _same(given: str, secret: SecretStr | None) -> bool:
    return secret is not None and hmac.compare_digest(
        given.encode(), secret.get_secret_value().encode()
    )


def check_password(settings: Settings, name: str, password: str) -> Principal | None:
    """A login (form or basic auth): a configured user with their password, or any name with
    the admin or read token as password. None when nothing matches."""
    user = settings.USERS.get(name)
    if user is not None and _same(password, user.password):
        return Principal(name, Role(user.role), "user")
    if _same(password, settings.ADMIN_TOKEN):
        return Principal(name or "admin", Role.ADMIN, "SUPERVISOR_ADMIN_TOKEN")
    if _same(password, settings.READ_TOKEN):
        return Principal(name or "reader", Role.READ, "SUPERVISOR_READ_TOKEN")
    return None


def check_bearer_token(settings: Settings, token: str) -> Principal | None:
    if _same(token, settings.ADMIN_TOKEN):
        return Principal("admin-token", Role.ADMIN, "SUPERVISOR_ADMIN_TOKEN")
    if _same(token, settings.READ_TOKEN):
        return Principal("read-token", Role.READ, "SUPERVISOR_READ_TOKEN")
    return None


def from_authorization(settings: Settings, header: str) -> Principal | None:
    """The caller an Authorization header names (Bearer or Basic), None when it names nobody."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return check_bearer_token(settings, value.strip())
    if scheme.lower() == "basic":
        try:
            name, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return check_password(settings, name, password)
    return None


def session_key(settings: Settings) -> bytes:
    """The key that signs GUI sessions and CSRF tokens. Derived from the credentials when
    SUPERVISOR_SESSION_SECRET is unset, so replicas agree and changing a password ends every
    session; random per process when no credentials exist (set SESSION_SECRET for replicas)."""
    if settings.SESSION_SECRET is not None:
        return hashlib.sha256(settings.SESSION_SECRET.get_secret_value().encode()).digest()
    if not settings.has_credentials:
        return secrets.token_bytes(32)
    parts = [
        "sidekiq-supervisor-session",
        _reveal(settings.ADMIN_TOKEN),
        _reveal(settings.READ_TOKEN),
        *(
            f"{name}:{user.role}:{user.password.get_secret_value()}"
            for name, user in sorted(settings.USERS.items())
        ),
    ]
    return hashlib.sha256("\0".join(parts).encode()).digest()


def _reveal(secret: SecretStr | None) -> str:
    return "" if secret is None else secret.get_secret_value()


class LoginThrottle:
    """Failed sign-ins per client address: past `limit` within `window_seconds`, the address
    waits (a password guesser gets a handful of tries a minute, a typo costs nothing)."""

    def __init__(self, limit: int = 10, window_seconds: float = 300.0) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self._failures: dict[str, deque[float]] = {}

    def wait_seconds(self, client: str) -> int:
        """0 when `client` may try now, else how long until it may."""
        recent = self._recent(client)
        if len(recent) < self.limit:
            return 0
        return max(1, int(recent[0] + self.window_seconds - time.monotonic()) + 1)

    def failed(self, client: str) -> None:
        self._recent(client).append(time.monotonic())
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            self._failures.pop(next(iter(self._failures)))

    def _recent(self, client: str) -> deque[float]:
        found = self._failures.setdefault(client, deque(maxlen=self.limit))
        while found and found[0] < time.monotonic() - self.window_seconds:
            found.popleft()
        return found
