"""Settings: the only module that reads the environment (prefix SUPERVISOR_, or a .env file)."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

from app.domain import StuckRule

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./supervisor.db"
DRIVER_FOR_SCHEME = {
    "mysql": "mysql+asyncmy",
    "mariadb": "mysql+asyncmy",
    "mysql+asyncmy": "mysql+asyncmy",
    "mariadb+asyncmy": "mysql+asyncmy",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}
UNSUPPORTED_DATABASE = (
    "SUPERVISOR_DATABASE_URL must be a MySQL/MariaDB URL (mysql://user:pass@host/db) "
    "or an SQLite URL (sqlite:///path.db); got scheme {scheme!r}"
)

BATCH_TOO_BIG = (
    "SUPERVISOR_MAX_BATCH_EVENTS must not exceed SUPERVISOR_WRITER_BATCH_SIZE: "
    "a batch request is committed in one transaction"
)
PAGE_TOO_BIG = "SUPERVISOR_PAGE_SIZE must not exceed SUPERVISOR_MAX_PAGE_SIZE"
BAD_PROXY = "SUPERVISOR_TRUSTED_PROXIES: {entry!r} is not an IP address or network ({error})"
PATTERNS_NOT_LIST = (
    "SUPERVISOR_REDACT_PATTERNS must be a JSON array of regular expressions, "
    'e.g. ["\\\\b\\\\d{{16}}\\\\b"]; got {value!r}'
)
BAD_PATTERN = "SUPERVISOR_REDACT_PATTERNS: {pattern!r} is not a valid regular expression ({error})"
EMPTY_MATCH = (
    "SUPERVISOR_REDACT_PATTERNS: {pattern!r} matches the empty string, "
    "so it would redact between every character"
)

Seconds = Annotated[float, Field(gt=0)]
Count = Annotated[int, Field(ge=1)]


class GuiUser(BaseModel):
    """One GUI login: `admin` may act, `read` only looks."""

    password: SecretStr = Field(min_length=1)
    role: Literal["admin", "read"] = "read"


class Settings(BaseSettings):
    """Every tunable of the service. Field names are the environment names without the prefix."""

    model_config = SettingsConfigDict(
        env_prefix="SUPERVISOR_", env_file=".env", extra="ignore", case_sensitive=True
    )

    DATABASE_URL: str = DEFAULT_DATABASE_URL
    REDIS_URL: str = "redis://localhost:6379/0"
    # Sidekiq 6.x with the redis-namespace gem prefixes every key with "<namespace>:".
    REDIS_NAMESPACE: str = ""
    INGEST_TOKEN: SecretStr | None = None
    ADMIN_TOKEN: SecretStr | None = None
    # Read-only role: the read API (bearer) and the GUI without its action buttons.
    READ_TOKEN: SecretStr | None = None
    # GUI users, JSON: {"alice": {"password": "...", "role": "admin"}, "bob": {"password": "..."}}.
    USERS: dict[str, GuiUser] = Field(default_factory=dict)
    # Signs GUI session cookies; unset, it is derived from the credentials above (so every
    # replica agrees) or, with no credentials at all, made up at start.
    SESSION_SECRET: SecretStr | None = None
    SESSION_MAX_AGE_SECONDS: Count = 43_200

    HOST: str = "127.0.0.1"
    PORT: Annotated[int, Field(ge=1, le=65535)] = 8000
    LOG_LEVEL: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # Proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For is believed; empty: the
    # client is the socket's peer address (what sign-in throttling and the audit log name).
    TRUSTED_PROXIES: str = ""
    # A slow client cannot hold a connection: its request headers must arrive within the
    # first bound, its whole body within the second (then 408 and the connection is closed).
    HEADER_TIMEOUT_SECONDS: Seconds = 10.0
    BODY_TIMEOUT_SECONDS: Seconds = 30.0

    MAX_BODY_BYTES: Count = 1_048_576
    MAX_ARGUMENTS_BYTES: Count = 65_536
    MAX_ERROR_MESSAGE_CHARS: Count = 10_000
    MAX_BATCH_EVENTS: Count = 1_000
    # Secrets never stored nor shown (app/redact.py): argument keys (names or globs, any case,
    # comma-separated) whose values are replaced, and regular expressions (a JSON array, as a
    # regex may hold commas) whose matches are replaced in arguments and error text.
    REDACT_KEYS: str = ""
    REDACT_PATTERNS: Annotated[list[str], NoDecode] = Field(default_factory=list)

    WRITER_BATCH_SIZE: Count = 1_000
    WRITER_MAX_PENDING: Count = 20_000
    WRITER_CONNECTIONS: Count = 2
    INGEST_TIMEOUT_SECONDS: Seconds = 5.0
    DB_TIMEOUT_SECONDS: Seconds = 5.0
    DB_POOL_SIZE: Count = 5
    RETRY_AFTER_SECONDS: Count = 5
    REDIS_TIMEOUT_SECONDS: Seconds = 2.0

    SAMPLER_ENABLED: bool = True
    SAMPLE_INTERVAL_SECONDS: Seconds = 10.0
    RETENTION_DAYS: Count = 30
    RETENTION_CHUNK_ROWS: Count = 1_000

    PAGE_SIZE: Count = 50
    MAX_PAGE_SIZE: Count = 500
    DURATION_SAMPLE_SIZE: Count = 2_000
    SEARCH_TIMEOUT_SECONDS: Seconds = 1.5

    # Job metrics: label values past these limits are counted under "other".
    MAX_WORKER_LABELS: Count = 300
    MAX_QUEUE_LABELS: Count = 100
    MAX_ERROR_CLASS_LABELS: Count = 50

    # Stuck and lost jobs (the reconciler runs on the sampler leader each tick).
    RECONCILE_ENABLED: bool = True
    STUCK_AFTER_SECONDS: Seconds = 3600.0
    # Per-class thresholds, JSON: {"ReportJob": 14400}.
    STUCK_AFTER_BY_CLASS: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    LOST_GRACE_SECONDS: Seconds = 60.0
    PROCESS_STALE_SECONDS: Seconds = 60.0
    RECONCILE_BATCH: Count = 1_000
    RECONCILE_SCAN_COUNT: Count = 1_000

    # GUI: the Metrics page aggregates at most this many of the window's newest jobs.
    METRICS_WINDOW_MAX_JOBS: Count = 20_000

    @field_validator("DATABASE_URL")
    @classmethod
    def _known_database(cls, value: str) -> str:
        scheme = make_url(value).drivername
        if scheme not in DRIVER_FOR_SCHEME:
            raise ValueError(UNSUPPORTED_DATABASE.format(scheme=scheme))
        return value

    @field_validator("REDACT_PATTERNS", mode="before")
    @classmethod
    def _patterns_from_json(cls, value: Any) -> Any:
        """The environment gives JSON text (empty = none); Python callers may pass a list."""
        if isinstance(value, str):
            try:
                value = orjson.loads(value) if value.strip() else []
            except orjson.JSONDecodeError:
                raise ValueError(PATTERNS_NOT_LIST.format(value=value)) from None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(PATTERNS_NOT_LIST.format(value=value))
        for pattern in value:
            _check_pattern(pattern)
        return value

    @field_validator("TRUSTED_PROXIES")
    @classmethod
    def _proxies_parse(cls, value: str) -> str:
        _networks(value)
        return value

    @model_validator(mode="after")
    def _limits_fit_together(self) -> Self:
        if self.MAX_BATCH_EVENTS > self.WRITER_BATCH_SIZE:
            raise ValueError(BATCH_TOO_BIG)
        if self.PAGE_SIZE > self.MAX_PAGE_SIZE:
            raise ValueError(PAGE_TOO_BIG)
        return self

    @cached_property
    def database_url(self) -> URL:
        """The URL with our async driver filled in (mysql:// becomes mysql+asyncmy://)."""
        url = make_url(self.DATABASE_URL)
        return url.set(drivername=DRIVER_FOR_SCHEME[url.drivername])

    @cached_property
    def trusted_proxies(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return _networks(self.TRUSTED_PROXIES)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.get_backend_name() == "sqlite"

    def stuck_rule(self, now: datetime) -> StuckRule:
        """STUCK_AFTER_SECONDS and STUCK_AFTER_BY_CLASS as of `now`: the one definition of
        stuck, for the reconciler's gauge and the GUI's filter alike."""
        by_class = {name: timedelta(seconds=s) for name, s in self.STUCK_AFTER_BY_CLASS.items()}
        return StuckRule(now, timedelta(seconds=self.STUCK_AFTER_SECONDS), by_class)

    def open_endpoints(self) -> list[str]:
        """What runs without credentials, so start-up can say so loudly."""
        open_ = []
        if self.INGEST_TOKEN is None:
            open_.append("ingest (SUPERVISOR_INGEST_TOKEN unset)")
        if not self.has_credentials:
            open_.append("read API, actions and GUI (no ADMIN_TOKEN, READ_TOKEN or USERS set)")
        return open_

    @property
    def has_credentials(self) -> bool:
        """False in development: everything open, the GUI acts as an anonymous admin."""
        return bool(self.ADMIN_TOKEN or self.READ_TOKEN or self.USERS)


def _check_pattern(pattern: str) -> None:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(BAD_PATTERN.format(pattern=pattern, error=exc)) from None
    if compiled.search("") is not None:
        raise ValueError(EMPTY_MATCH.format(pattern=pattern))


def _networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The networks of "10.0.0.0/8, 192.168.1.7" (a bare address is a network of one)."""
    found = []
    for entry in filter(None, (part.strip() for part in value.split(","))):
        try:
            found.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(BAD_PROXY.format(entry=entry, error=exc)) from None
    return tuple(found)
