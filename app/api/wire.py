"""The ingest wire format: form or JSON decoding, validation into JobEvents.

The original Faraday middleware posts `application/x-www-form-urlencoded` (Faraday's default) with
`arguments` as JSON text; our own clients post JSON. Both end as the same JobEvent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote_plus

import orjson
from pydantic import BaseModel, ValidationError

from app.api.schemas import BAD_JOB_ID, LifecycleIn
from app.domain import EventLimits, EventName, JobEvent
from app.errors import BadRequest, InvalidInput, UnsupportedMediaType

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MAX_FORM_FIELDS = 100

NOT_UTF8 = "the body is not valid UTF-8"
NOT_JSON = "the body is not valid JSON ({reason})"
WRONG_TYPE = "Content-Type must be {expected}; got {got!r}"
NOT_OBJECT = "the JSON body must be an object"
NOT_ARRAY = "the JSON body must be an array of events"
TOO_MANY_FIELDS = f"the form has more than {MAX_FORM_FIELDS} fields"
# What makes an event usable: without these (valid) it cannot be placed in the job's history.
ESSENTIAL = frozenset({"job_id", "jid", "event", "at", "event_time"})

LifecycleModel = TypeVar("LifecycleModel", bound=LifecycleIn)


def decode_fields(body: bytes, kind: str) -> dict[str, Any]:
    """A form or JSON object body as a dict. An empty body without a type is an empty form."""
    if kind == FORM or (kind == "" and not body):
        return _decode_form(body)
    if kind == JSON:
        value = _decode_json(body)
        if not isinstance(value, dict):
            raise BadRequest(NOT_OBJECT)
        return value
    raise UnsupportedMediaType(WRONG_TYPE.format(expected=f"{FORM} or {JSON}", got=kind))


def decode_array(body: bytes, kind: str) -> list[Any]:
    if kind != JSON:
        raise UnsupportedMediaType(WRONG_TYPE.format(expected=JSON, got=kind))
    value = _decode_json(body)
    if not isinstance(value, list):
        raise BadRequest(NOT_ARRAY)
    return value


def _decode_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(NOT_JSON.format(reason=exc)) from None


def _decode_form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(NOT_UTF8) from None
    pairs = [pair for pair in text.split("&") if pair]
    if len(pairs) > MAX_FORM_FIELDS:
        raise BadRequest(TOO_MANY_FIELDS)
    fields: dict[str, str] = {}
    for pair in pairs:
        raw_name, _, raw_value = pair.partition("=")
        name = unquote_plus(raw_name, errors="replace")
        try:
            fields[name] = unquote_plus(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise InvalidInput({name: "is not valid UTF-8 once percent-decoded"}) from None
    return fields


def validate(
    model: type[LifecycleModel], fields: Mapping[str, Any], *, prefix: str = ""
) -> tuple[LifecycleModel, dict[str, str]]:
    """The event in `fields`, and the optional fields left out because they were invalid.

    A bad optional field costs that field, not the event: a run the middleware reported is kept.
    InvalidInput (naming every problem) only when the event itself is unusable: its job id, its
    name or its time (which orders it against the job's other events) is missing or invalid.
    """
    try:
        return model.model_validate(fields), {}
    except ValidationError as exc:
        problems = _problems(exc, prefix)
        bad = {str(error["loc"][0]) if error["loc"] else "" for error in exc.errors()}
    if bad & ESSENTIAL or "" in bad:
        raise InvalidInput(problems)
    kept = {name: value for name, value in fields.items() if name not in _aliases(model, bad)}
    try:
        return model.model_validate(kept), problems
    except ValidationError as exc:
        raise InvalidInput(_problems(exc, prefix)) from None


def _aliases(model: type[BaseModel], names: set[str]) -> set[str]:
    """Every input name of the fields in `names` (a field may arrive under another alias)."""
    found = set(names)
    for name, info in model.model_fields.items():
        choices = getattr(info.validation_alias, "choices", None) or []
        given = {name, *(choice for choice in choices if isinstance(choice, str))}
        if given & names:
            found |= given
    return found


def _problems(exc: ValidationError, prefix: str) -> dict[str, str]:
    problems: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_context=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required"
        elif error["type"] == "string_pattern_mismatch" and field in ("job_id", "jid"):
            message = BAD_JOB_ID
        problems[f"{prefix}{field}"] = message
    return problems


def to_event(
    data: LifecycleIn, *, jid: str, name: EventName, received_at: datetime, limits: EventLimits
) -> JobEvent:
    """The JobEvent for validated input; arguments past the soft limit are kept truncated, and
    secrets redacted (before truncation, so a cut never hides a key from its rule)."""
    redacted, was_redacted = limits.redactor.arguments(data.arguments)
    arguments, truncated = _truncate(redacted, limits.max_arguments_bytes)
    message = limits.redactor.text(data.error_message)
    if message is not None and len(message) > limits.max_error_chars:
        message = message[: limits.max_error_chars]
    return JobEvent(
        jid=jid,
        event=name,
        at=data.at or received_at,
        received_at=received_at,
        job_class=data.job_class,
        queue=data.queue,
        arguments=arguments,
        arguments_truncated=truncated,
        arguments_redacted=was_redacted,
        process=data.process,
        retry_count=data.retry_count,
        error_class=data.error_class,
        error_message=message,
        scheduled_at=data.scheduled_at,
        enqueued_at=data.enqueued_at,
        started_at=data.started_at,
    )


def _truncate(text: str | None, limit: int) -> tuple[str | None, bool]:
    if text is None or len(text) * 4 <= limit:  # cheap exit: even 4-byte chars fit
        return text, False
    encoded = text.encode()
    if len(encoded) <= limit:
        return text, False
    return encoded[:limit].decode("utf-8", errors="ignore"), True


def now() -> datetime:
    return datetime.now(UTC)
