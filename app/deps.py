"""Dependency aliases for routes (SettingsDep, ManagerDep, ...), the credential checks (with
the sign-in throttle and the audit log) and the same-origin check of state-changing requests."""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

import orjson
from fastapi import Depends, Query, Request
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.access import (
    OPEN,
    Principal,
    Role,
    basic_credentials,
    client_address,
    from_authorization,
)
from app.config import Settings
from app.domain import EventLimits, Snapshot, SnapshotSource
from app.errors import Forbidden, InvalidInput, TooManyRequests, Unauthorized
from app.exporter.jobs import JobMetrics
from app.ingest.writer import EventWriter
from app.manager import JobManager
from app.redact import Redactor
from app.sidekiq.keys import Keys
from app.sidekiq.reader import read_snapshot
from app.signins import Attempt, SignIns

MISSING_TOKEN = "this endpoint needs 'Authorization: Bearer <token>' ({setting})"
WRONG_TOKEN = "the bearer token is not valid for this endpoint ({setting})"


@dataclass(frozen=True, slots=True)
class Resources:
    """What the lifespan built; routes reach it through the dependencies below."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    writer: EventWriter
    manager: JobManager
    event_limits: EventLimits
    # The sampler: its `latest` snapshot (None until its first tick, or when it is off).
    sampler: SnapshotSource
    keys: Keys
    job_metrics: JobMetrics
    session_key: bytes
    signins: SignIns

    @property
    def redactor(self) -> Redactor:
        """SUPERVISOR_REDACT_*: applied at ingest (through event_limits), and to everything the
        GUI and the API show of Sidekiq's Redis."""
        return self.event_limits.redactor


def resources(request: Request) -> Resources:
    found: Resources = request.app.state.resources
    return found


def check_bearer(authorization: str, token: SecretStr | None, setting: str) -> None:
    """Nothing when `token` is unset (development); else the Authorization header must carry it."""
    if token is None:
        return
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise Unauthorized(MISSING_TOKEN.format(setting=setting))
    if not hmac.compare_digest(value.strip().encode(), token.get_secret_value().encode()):
        raise Unauthorized(WRONG_TOKEN.format(setting=setting))


NO_CREDENTIALS = (
    "this endpoint needs credentials: 'Authorization: Bearer <token>' (SUPERVISOR_ADMIN_TOKEN or "
    "SUPERVISOR_READ_TOKEN) or basic auth (a SUPERVISOR_USERS user, or any name with a token)"
)
READ_ONLY = "{name} has the read-only role; this needs an admin (SUPERVISOR_ADMIN_TOKEN or USERS)"
TOO_MANY = "too many failed sign-ins for this account or from this address: try in {seconds} s"
CROSS_ORIGIN = "a request from another site ({origin}) may not change anything here"
DEFAULT_PORTS = (None, 80, 443)
FAILED_VIA = {"basic": "failed basic auth", "bearer": "failed bearer token"}
audit_log = logging.getLogger("app.audit")


async def caller(request: Request) -> Principal:
    """The API caller from its Authorization header; everyone is an admin when no credentials
    are configured (development)."""
    settings = resources(request).settings
    if not settings.has_credentials:
        return OPEN
    header = request.headers.get("authorization", "")
    found = await check_authorization(request, header) if header else None
    if found is None:
        raise Unauthorized(NO_CREDENTIALS)
    return found


async def require_admin(request: Request) -> None:
    """State-changing routes: from this site (or from no browser at all), by an admin."""
    refuse_foreign_origin(request)
    who = await caller(request)
    if not who.can_act:
        raise Forbidden(READ_ONLY.format(name=who.name))


async def require_reader(request: Request) -> None:
    """The read API: either role."""
    await caller(request)


async def check_authorization(request: Request, header: str) -> Principal | None:
    """The caller an Authorization header (Basic or Bearer) names, treated like a form sign-in:
    429 while its account or address has failed too often; a failure is counted and audited."""
    found = resources(request)
    basic = basic_credentials(header)
    attempt = Attempt(account=basic[0] if basic else None, client=client_of(request))
    wait = await found.signins.wait_seconds(attempt)
    if wait:
        raise TooManyRequests(TOO_MANY.format(seconds=wait), retry_after_seconds=wait)
    who = from_authorization(found.settings, header)
    if who is None:
        await found.signins.failed(attempt)
        scheme = header.partition(" ")[0].lower()
        nobody = Principal("-", Role.READ, FAILED_VIA.get(scheme, "failed authorization"))
        audit(request, nobody, "login_failed", attempt.account or "-", 0)
    return who


def client_of(request: Request) -> str:
    """The client's address, behind SUPERVISOR_TRUSTED_PROXIES (throttle and audit log)."""
    peer = request.client.host if request.client else "-"
    trusted = resources(request).settings.trusted_proxies
    return client_address(peer, request.headers.getlist("x-forwarded-for"), trusted)


def refuse_foreign_origin(request: Request) -> None:
    """403 for a state-changing request sent by another site's page. A browser adds cookies and
    basic credentials to it by itself, so no credential proves intent; only the Origin it names
    does. Requests without Origin (curl, the CLI, a kubelet preStop hook) come from no page."""
    origin = request.headers.get("origin")
    if origin and not _same_host(origin, request.url.netloc):
        raise Forbidden(CROSS_ORIGIN.format(origin=origin))


def _same_host(origin: str, netloc: str) -> bool:
    """Whether Origin names the host:port this request was sent to (80 and 443 as no port,
    so an https page behind a TLS-terminating proxy matches its plain-HTTP Host)."""
    try:
        theirs, ours = urlsplit(origin), urlsplit("//" + netloc)
        their_port = None if theirs.port in DEFAULT_PORTS else theirs.port
        our_port = None if ours.port in DEFAULT_PORTS else ours.port
    except ValueError:  # a port that is no number
        return False
    return bool(theirs.hostname) and (theirs.hostname, their_port) == (ours.hostname, our_port)


def audit(request: Request, who: Principal, action: str, target: str, count: int) -> None:
    """One line per action or failed sign-in: who, from where, what, on what, how many."""
    audit_log.info(
        "audit user=%s role=%s via=%s client=%s action=%s target=%s count=%d",
        _quoted(who.name),
        who.role.value,
        _quoted(who.via),
        client_of(request),
        action,
        _quoted(target),
        count,
    )


def _quoted(value: str) -> str:
    """Values as JSON strings, so a name with spaces or newlines cannot forge a log field."""
    return orjson.dumps(value).decode()


ResourcesDep = Annotated[Resources, Depends(resources)]
BAD_LIMIT = "must be between 1 and {maximum}"
MAX_OFFSET = 1_000_000_000
# Where a page starts, in the API and the GUI alike.
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Entries to skip.")]


def page_limit(found: ResourcesDep, limit: int | None = None) -> int:
    """`limit` from the query: SUPERVISOR_PAGE_SIZE by default, at most MAX_PAGE_SIZE."""
    maximum = found.settings.MAX_PAGE_SIZE
    if limit is None:
        return found.settings.PAGE_SIZE
    if not 1 <= limit <= maximum:
        raise InvalidInput({"limit": BAD_LIMIT.format(maximum=maximum)})
    return limit


LimitDep = Annotated[int, Depends(page_limit)]


def _manager(request: Request) -> JobManager:
    return resources(request).manager


ManagerDep = Annotated[JobManager, Depends(_manager)]


@dataclass(frozen=True, slots=True)
class CurrentSnapshot:
    snapshot: Snapshot
    from_sampler: bool


async def current_snapshot(found: ResourcesDep) -> CurrentSnapshot:
    """The sampler's snapshot while younger than one sample interval, else a fresh read."""
    latest = found.sampler.latest
    if latest is not None:
        age = time.time() - latest.taken_at.timestamp()
        if age < found.settings.SAMPLE_INTERVAL_SECONDS:
            return CurrentSnapshot(latest, from_sampler=True)
    return CurrentSnapshot(await read_snapshot(found.redis, found.keys), from_sampler=False)


SnapshotDep = Annotated[CurrentSnapshot, Depends(current_snapshot)]
