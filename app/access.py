"""Who is asking and what they may do: the admin and read-only roles, checked against
SUPERVISOR_ADMIN_TOKEN, SUPERVISOR_READ_TOKEN and SUPERVISOR_USERS (bearer, basic or a login)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from pydantic import SecretStr

from app.config import Settings

ANONYMOUS = "anonymous"
OPEN_VIA = "no credentials configured"
USER_VIA = "user"
ADMIN_VIA = "SUPERVISOR_ADMIN_TOKEN"
READ_VIA = "SUPERVISOR_READ_TOKEN"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
        return Principal(name, Role(user.role), USER_VIA)
    if _same(password, settings.ADMIN_TOKEN):
        return Principal(name or "admin", Role.ADMIN, ADMIN_VIA)
    if _same(password, settings.READ_TOKEN):
        return Principal(name or "reader", Role.READ, READ_VIA)
    return None


def check_bearer_token(settings: Settings, token: str) -> Principal | None:
    if _same(token, settings.ADMIN_TOKEN):
        return Principal("admin-token", Role.ADMIN, ADMIN_VIA)
    if _same(token, settings.READ_TOKEN):
        return Principal("read-token", Role.READ, READ_VIA)
    return None


def from_authorization(settings: Settings, header: str) -> Principal | None:
    """The caller an Authorization header names (Bearer or Basic), None when it names nobody."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return check_bearer_token(settings, value.strip())
    basic = basic_credentials(header)
    return None if basic is None else check_password(settings, *basic)


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(name, password) of a Basic Authorization header; None for any other or a garbled one."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, _, password = base64.b64decode(value.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return name, password


def credential_of(settings: Settings, who: Principal) -> str | None:
    """The secret `who` signed in with, with their role: a session lasts only while this is
    unchanged (None when it is no longer configured at all)."""
    if who.via == USER_VIA:
        user = settings.USERS.get(who.name)
        if user is None:
            return None
        return f"user\0{who.name}\0{user.role}\0{user.password.get_secret_value()}"
    token = {ADMIN_VIA: settings.ADMIN_TOKEN, READ_VIA: settings.READ_TOKEN}.get(who.via)
    return None if token is None else f"{who.via}\0{token.get_secret_value()}"


def client_address(peer: str, forwarded_for: Iterable[str], trusted: Iterable[Network]) -> str:
    """Who is really asking: the socket's peer, or, when that peer is a trusted proxy, the
    right-most address of X-Forwarded-For that is not a trusted proxy itself (each proxy
    appends its client, so only what trusted hops appended can be believed)."""
    networks = tuple(trusted)
    if not _is_trusted(peer, networks):
        return peer
    entries = (hop.strip() for value in forwarded_for for hop in value.split(","))
    hops = [_bare(hop) for hop in entries if hop]
    nearest = peer
    for hop in reversed(hops):
        if not _is_address(hop):
            return nearest  # a trusted proxy would never append garbage: stop believing here
        if not _is_trusted(hop, networks):
            return hop
        nearest = hop
    return nearest


def _bare(hop: str) -> str:
    """An X-Forwarded-For entry without the port some proxies add (1.2.3.4:5678, [::1]:5678)."""
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    host, colon, port = hop.partition(":")
    return host if colon and port.isdigit() else hop


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        found = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(found in network for network in networks)


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
