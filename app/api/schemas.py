"""Request and response models of the JSON API (`<Thing>In` / `<Thing>Out`)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from app.domain import EventName, JobStatus, as_utc

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
MS_THRESHOLD = 100_000_000_000  # epoch numbers above this are milliseconds (Sidekiq 8 style)
OUT_OF_RANGE = "must be an epoch time between the years 2000 and 2100"


def _blank_is_none(value: Any) -> Any:
    # Faraday sends a nil value as a bare key; form decoding turns it into "".
    return None if value == "" else value


def _json_text(value: Any) -> Any:
    """`arguments` arrive as JSON text (the original Faraday middleware) or, in JSON bodies, as
    the array itself."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON ({exc})") from None
        return value
    return orjson.dumps(value).decode()


def _event_time(value: Any) -> Any:
    """Epoch seconds (float), epoch milliseconds (int, as Sidekiq 8), or ISO 8601."""
    if value is None or value == "":
        return None
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return _iso_time(value)
    if number is None or not math.isfinite(number):
        raise ValueError("must be epoch seconds, epoch milliseconds or an ISO 8601 time")
    seconds = number / 1000 if abs(number) >= MS_THRESHOLD else number
    if not EARLIEST.timestamp() <= seconds < LATEST.timestamp():
        raise ValueError(OUT_OF_RANGE)
    return datetime.fromtimestamp(seconds, tz=UTC)


def _iso_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be epoch seconds, epoch milliseconds or an ISO 8601 time") from None
    try:
        return _in_range(as_utc(moment))
    except ValueError:  # as_utc's, for a time past year 9999 once in UTC
        raise ValueError(OUT_OF_RANGE) from None


def _in_range(moment: datetime) -> datetime:
    if not EARLIEST <= moment < LATEST:
        raise ValueError(OUT_OF_RANGE)
    return moment


# No control characters, and no trailing space: MySQL's PAD SPACE collations compare "a" and
# "a " as equal, so such a jid would share another job's row.
JOB_ID_PATTERN = r"^[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f ]$"
BAD_JOB_ID = "must be 1-255 characters without control characters and not end with a space"
JobId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=JOB_ID_PATTERN),
    Field(description="Sidekiq's jid (24 hex characters), at most 255 characters."),
]
Name = Annotated[
    Annotated[str, StringConstraints(max_length=255)] | None,
    BeforeValidator(_blank_is_none),
]
JsonText = Annotated[
    str | None,
    BeforeValidator(_json_text),
    Field(description='The job\'s arguments as JSON text, e.g. `[1,"two"]`.'),
]
EventTime = Annotated[
    datetime | None,
    BeforeValidator(_event_time),
    Field(description="When it happened: epoch seconds, epoch ms or ISO 8601 (default: now)."),
]
# Sidekiq's own "Retry now" lowers retry_count by one, so a run retried after its first failure
# carries -1.
RetryCount = Annotated[
    Annotated[int, Field(ge=-1, le=1_000_000)] | None,
    BeforeValidator(_blank_is_none),
    Field(
        description="Sidekiq's retry_count for this run: absent on the first, -1 after Retry now."
    ),
]


class LifecycleIn(BaseModel):
    """The body of POST /api/v1/jobs/{job_id}/started|complete|failed (form or JSON)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    arguments: JsonText = None
    job_class: Name = None
    queue: Name = None
    at: EventTime = Field(default=None, validation_alias=AliasChoices("at", "event_time"))
    process: Name = Field(
        default=None,
        validation_alias=AliasChoices("process", "hostname"),
        description="The Sidekiq process identity or host name.",
    )
    retry_count: RetryCount = None
    error_class: Name = None
    error_message: Annotated[str | None, BeforeValidator(_blank_is_none)] = None
    scheduled_at: EventTime = None
    enqueued_at: EventTime = Field(
        default=None,
        description="When this run of the job was enqueued (Sidekiq's `enqueued_at`), if known.",
    )
    started_at: EventTime = Field(
        default=None,
        description="On complete/failed/dead: when this run started, if known.",
    )


class QueuedIn(LifecycleIn):
    """The body of POST /api/v1/jobs: the original middleware's four fields, and optional ones."""

    job_id: JobId


ClientEvent = Literal["scheduled", "queued", "started", "failed", "complete", "dead"]


class EventIn(LifecycleIn):
    """One element of POST /api/v1/events: an event with its own name, jid and time."""

    job_id: JobId = Field(validation_alias=AliasChoices("job_id", "jid"))
    event: ClientEvent


class DomainOut(BaseModel):
    """An answer read straight off a domain value's attributes (same field names)."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, value: object) -> Self:
        return cls.model_validate(value)


IGNORED = (
    "Optional fields that were invalid and left out, each with its problem; the event itself "
    "was stored. Absent when there were none."
)


class AcceptedOut(BaseModel):
    job_id: str
    event: EventName
    ignored: dict[str, str] = Field(default_factory=dict, description=IGNORED)


class BatchAcceptedOut(BaseModel):
    accepted: int
    ignored: dict[str, str] = Field(
        default_factory=dict, description=IGNORED + " Keys start with the element's [index]."
    )


class JobOut(DomainOut):
    """A ledger row with its derived durations (seconds)."""

    jid: str
    status: JobStatus
    job_class: str | None
    queue: str | None
    arguments: str | None
    arguments_truncated: bool
    arguments_redacted: bool
    enqueued_at: datetime | None
    scheduled_for: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    first_seen_at: datetime
    last_event_at: datetime
    attempts: int
    error_class: str | None
    error_message: str | None
    process: str | None
    requeued_as: str | None
    wait_seconds: float | None
    run_seconds: float | None
    total_seconds: float | None


class TimelineEntryOut(DomainOut):
    event: EventName
    at: datetime
    received_at: datetime
    queue: str | None
    job_class: str | None
    process: str | None
    retry_count: int | None
    error_class: str | None
    error_message: str | None


class JobDetailOut(JobOut):
    timeline: list[TimelineEntryOut]


SEARCH_STOPPED = (
    "True when an `arguments` search reached SUPERVISOR_SEARCH_TIMEOUT_SECONDS before finishing "
    "(items are then empty): narrow it with queue, job_class or a time range."
)


class JobPageOut(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )
    search_stopped: bool = Field(default=False, description=SEARCH_STOPPED)


class PercentilesOut(DomainOut):
    count: int
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None


class DurationsOut(BaseModel):
    """Completed jobs with their durations, and percentiles over the newest completions."""

    items: list[JobOut]
    next_cursor: str | None
    search_stopped: bool = Field(default=False, description=SEARCH_STOPPED)
    queued_to_completed: PercentilesOut
    started_to_completed: PercentilesOut
    sample_limit: int = Field(description="Percentiles cover at most this many newest completions.")


class ErrorOut(BaseModel):
    error: str
    detail: str
    fields: dict[str, str] | None = None


# Error answers the routes declare in OpenAPI, one table for every router, so the documented
# statuses are the ones the handlers and dependencies really send.
Responses = dict[int | str, dict[str, Any]]
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "The scheme the credentials go in.",
        "required": True,
        "schema": {"type": "string"},
    }
}
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The request could not be read: a body that is not valid JSON, or a `cursor` that this "
    "API did not return.",
    401: "Credentials are configured and this request's are missing or wrong.",
    403: "The credentials have the read-only role, or a page from another site (Origin) sent it.",
    404: "Nothing by that name.",
    422: "A parameter or field is invalid; `fields` names each one.",
    429: "Too many failed sign-ins for this account or from this address: retry after Retry-After.",
    503: "The database or Sidekiq's Redis did not answer (`detail` says which): retry after "
    "Retry-After.",
}
ERROR_HEADERS = {401: WWW_AUTHENTICATE, 429: RETRY_AFTER, 503: RETRY_AFTER}


def error_response(status: int, description: str | None = None) -> Responses:
    """The OpenAPI declaration of one error answer (ErrorOut), with the headers it carries."""
    declared: dict[str, Any] = {
        "model": ErrorOut,
        "description": description or ERROR_DESCRIPTIONS[status],
    }
    if status in ERROR_HEADERS:
        declared["headers"] = ERROR_HEADERS[status]
    return {status: declared}


def error_responses(*statuses: int) -> Responses:
    return {code: body for status in statuses for code, body in error_response(status).items()}


# What a route behind require_reader / require_admin may answer besides its own errors: the
# credential checks (401, 403, 429), invalid parameters (422), and 503, as every such route reads
# the database or Sidekiq's Redis.
READER_ERRORS = error_responses(401, 422, 429, 503)
ADMIN_ERRORS = error_responses(401, 403, 422, 429, 503)
