"""The lifecycle routes the Sidekiq middleware posts to, named as the original Faraday middleware
posts them.

This is the hot path. `accept` holds the whole logic (credentials, decoding, validation, durable
submit); `serve_fast` is its only way in, called by SupervisorApp for these POSTs before
FastAPI's middleware and dependency machinery (measured, that machinery cost more than the
ledger write itself). So FastAPI has no routes for them: `document` adds them to /docs.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.types import Receive, Scope, Send

from app.api.schemas import (
    BAD_JOB_ID,
    AcceptedOut,
    BatchAcceptedOut,
    ErrorOut,
    EventIn,
    LifecycleIn,
    QueuedIn,
)
from app.api.wire import (
    FORM,
    JSON,
    decode_array,
    decode_fields,
    now,
    to_event,
    validate,
)
from app.deps import Resources, check_bearer
from app.domain import EventName, JobEvent
from app.errors import AppError, BadRequest, InvalidInput, PayloadTooLarge

PREFIX = "/api/v1/jobs/"
TOO_MANY_EVENTS = "at most {limit} events per request"
TOO_LARGE = "the body is over the {limit}-byte limit"
INCOMPLETE = "the body ended after {got} of its {declared} bytes: the client went away"
PATH_NOT_UTF8 = "the job id in the path is not valid UTF-8 once percent-decoded"
NOT_OBJECT = "must be an object"
JSON_HEADERS = [(b"content-type", b"application/json")]


class Kind(enum.Enum):
    """Which ingest route a request is for."""

    QUEUED = EventName.QUEUED
    STARTED = EventName.STARTED
    COMPLETE = EventName.COMPLETE
    FAILED = EventName.FAILED
    BATCH = "batch"


SUFFIXES = {"/started": Kind.STARTED, "/complete": Kind.COMPLETE, "/failed": Kind.FAILED}


def match(path: str) -> tuple[Kind, str | None] | None:
    """The ingest route and job id for a POST path, or None for any other path."""
    if path == "/api/v1/jobs":
        return Kind.QUEUED, None
    if path == "/api/v1/events":
        return Kind.BATCH, None
    if not path.startswith(PREFIX):
        return None
    job_id, slash, action = path[len(PREFIX) :].rpartition("/")
    kind = SUFFIXES.get(slash + action)
    if kind is None or not job_id or "/" in job_id:
        return None
    return kind, job_id


async def accept(
    found: Resources,
    kind: Kind,
    job_id: str | None,
    *,
    content_type: str,
    authorization: str,
    body: bytes,
) -> bytes:
    """Validate one request's events, wait until they are committed, return the 201 body."""
    check_bearer(authorization, found.settings.INGEST_TOKEN, "SUPERVISOR_INGEST_TOKEN")
    kind_name = content_type.split(";", 1)[0].strip().lower()
    if kind is Kind.BATCH:
        events, ignored = _batch(found, decode_array(body, kind_name))
        if events:
            await found.writer.submit(events)
        return _accepted({"accepted": len(events)}, ignored)
    fields = decode_fields(body, kind_name)
    event, ignored = _single(found, kind, job_id, fields)
    await found.writer.submit((event,))
    return _accepted({"job_id": event.jid, "event": event.event.value}, ignored)


def _accepted(body: dict[str, Any], ignored: dict[str, str]) -> bytes:
    return orjson.dumps({**body, "ignored": ignored} if ignored else body)


def _single(
    found: Resources, kind: Kind, job_id: str | None, fields: dict[str, Any]
) -> tuple[JobEvent, dict[str, str]]:
    name = EventName(kind.value)
    data: LifecycleIn
    if job_id is None:
        queued, ignored = validate(QueuedIn, fields)
        job_id, data = queued.job_id, queued
    else:
        _check_path_job_id(job_id)
        data, ignored = validate(LifecycleIn, fields)
    event = to_event(data, jid=job_id, name=name, received_at=now(), limits=found.event_limits)
    return event, ignored


def strict_path(scope: Scope) -> None:
    """BadRequest when the raw path is not UTF-8 once percent-decoded. The server decodes it
    with replacement characters, so `x%FF` and `x%FE` would both name the job `x\ufffd`."""
    raw = scope.get("raw_path")
    if raw is None:
        return
    try:
        unquote_to_bytes(raw.partition(b"?")[0]).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(PATH_NOT_UTF8) from None


def _check_path_job_id(job_id: str) -> None:
    if len(job_id) > 255 or not job_id.isprintable() or job_id.endswith(" "):
        raise InvalidInput({"job_id": BAD_JOB_ID})


def _batch(found: Resources, items: list[Any]) -> tuple[list[JobEvent], dict[str, str]]:
    """Every element validated first: one unusable element rejects the request, nothing
    stored (an invalid optional field only costs that field, see `validate`)."""
    if len(items) > found.settings.MAX_BATCH_EVENTS:
        raise InvalidInput(
            {"events": TOO_MANY_EVENTS.format(limit=found.settings.MAX_BATCH_EVENTS)}
        )
    received_at = now()
    events: list[JobEvent] = []
    ignored: dict[str, str] = {}
    unusable: dict[str, str] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            unusable[f"[{index}]"] = NOT_OBJECT
            continue
        try:
            data, dropped = validate(EventIn, item, prefix=f"[{index}].")
        except InvalidInput as exc:
            unusable.update(exc.fields)  # every unusable element named in one answer
            continue
        ignored.update(dropped)
        events.append(
            to_event(
                data,
                jid=data.job_id,
                name=EventName(data.event),
                received_at=received_at,
                limits=found.event_limits,
            )
        )
    if unusable:
        raise InvalidInput(unusable)
    return events, ignored


def error_body(exc: AppError) -> bytes:
    fields = getattr(exc, "fields", None)
    extra = {"fields": fields} if fields is not None else {}
    return orjson.dumps({"error": exc.error, "detail": exc.detail, **extra})


# The fast lane ------------------------------------------------------------------------------


async def serve_fast(
    found: Resources, route: tuple[Kind, str | None], scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer an ingest POST straight from the ASGI scope (see the module docstring)."""
    headers = _headers(scope)
    status, extra = 201, []
    try:
        strict_path(scope)
        body = await _receive_body(receive, headers, found.settings.MAX_BODY_BYTES)
        payload = await accept(
            found,
            route[0],
            route[1],
            content_type=headers.get(b"content-type", b"").decode("latin-1"),
            authorization=headers.get(b"authorization", b"").decode("latin-1"),
            body=body,
        )
    except ClientGone:
        return
    except AppError as exc:
        status, payload = exc.status, error_body(exc)
        extra = [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    length = [(b"content-length", str(len(payload)).encode())]
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": JSON_HEADERS + length + extra,
    }
    await send(start)
    await send({"type": "http.response.body", "body": payload})


def _headers(scope: Scope) -> dict[bytes, bytes]:
    wanted = {b"content-type", b"content-length", b"authorization"}
    return {name: value for name, value in scope["headers"] if name in wanted}


class ClientGone(Exception):
    """The client disconnected before its whole body arrived: nothing is stored or answered."""


async def _receive_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(TOO_LARGE.format(limit=limit))
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            # Not the end of the body: a truncated body can still parse (a form cut short
            # reads as a shorter value), so it is never stored.
            raise ClientGone
        body += message.get("body", b"")
        if len(body) > limit:
            raise PayloadTooLarge(TOO_LARGE.format(limit=limit))
        more = message.get("more_body", False)
    if declared.isdigit() and len(body) != int(declared):
        raise BadRequest(INCOMPLETE.format(got=len(body), declared=int(declared)))
    return body


# The OpenAPI document -----------------------------------------------------------------------
# The fast lane is the only implementation, so FastAPI has no routes to describe these POSTs:
# `document` adds them to the app's OpenAPI document, from the same models and error table.

ERRORS: dict[int, str] = {
    400: "The body could not be decoded (not UTF-8, not JSON).",
    401: "SUPERVISOR_INGEST_TOKEN is set and the bearer token is missing or wrong.",
    413: "The body is over SUPERVISOR_MAX_BODY_BYTES.",
    415: "Neither form-encoded nor JSON.",
    422: "A field is missing or invalid; `fields` names each one.",
    503: "The ledger database is down or saturated: nothing stored, retry after Retry-After.",
}
REF = "#/components/schemas/{model}"
JOB_ID_PARAMETER = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "title": "Job Id"},
}


@dataclass(frozen=True, slots=True)
class Operation:
    """One ingest POST as the document shows it; `name` makes its operationId."""

    path: str
    name: str
    summary: str
    description: str
    body: type[LifecycleIn]
    answer: type[BaseModel] = AcceptedOut


OPERATIONS = (
    Operation(
        "/api/v1/jobs",
        "job_queued",
        "A job was queued",
        "Record that a job was pushed (the original client middleware sends job_id, arguments,\n"
        "job_class, queue). Answered 201 only once the event is committed.",
        QueuedIn,
    ),
    Operation(
        "/api/v1/jobs/{job_id}/started",
        "job_started",
        "A job started",
        "Record that a worker began the job (creates the row if it was never seen queued).",
        LifecycleIn,
    ),
    Operation(
        "/api/v1/jobs/{job_id}/complete",
        "job_complete",
        "A job completed",
        "Record that the job finished successfully.",
        LifecycleIn,
    ),
    Operation(
        "/api/v1/jobs/{job_id}/failed",
        "job_failed",
        "A job raised",
        "Record that a run raised (error_class, error_message); Sidekiq may retry it.",
        LifecycleIn,
    ),
    Operation(
        "/api/v1/events",
        "events_batch",
        "A batch of events",
        "Record many events in one request (our middleware's background sender). Each element\n"
        "names its `event`, `job_id` and time `at`. All or nothing: one invalid element rejects "
        "the\nrequest and nothing is stored.",
        EventIn,
        BatchAcceptedOut,
    ),
)


def document(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` (FastAPI's document) with the ingest operations first and their schemas added."""
    paths: dict[str, Any] = {op.path: {"post": _operation(op)} for op in OPERATIONS}
    for path, operations in spec.get("paths", {}).items():
        paths.setdefault(path, {}).update(operations)
    components = spec.setdefault("components", {})
    schemas = {**components.get("schemas", {}), **_schemas()}
    components["schemas"] = {name: schemas[name] for name in sorted(schemas)}
    return {**spec, "paths": paths}


def _operation(op: Operation) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": ["ingest"],
        "summary": op.summary,
        "description": op.description,
        "operationId": re.sub(r"\W", "_", op.name + op.path) + "_post",
    }
    if "{job_id}" in op.path:
        operation["parameters"] = [JOB_ID_PARAMETER]
    answers = {201: (op.answer, "Successful Response")}
    answers.update((status, (ErrorOut, words)) for status, words in ERRORS.items())
    operation["responses"] = {
        str(status): {"description": words, "content": {JSON: {"schema": _ref(model)}}}
        for status, (model, words) in answers.items()
    }
    operation["requestBody"] = _body_doc(op.body, batch=op.body is EventIn)
    return operation


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _schemas() -> dict[str, Any]:
    """The answers' schemas (and the enums they name), as the document's components."""
    models = [(model, "serialization") for model in (AcceptedOut, BatchAcceptedOut, ErrorOut)]
    _, found = models_json_schema(models, ref_template=REF)  # type: ignore[arg-type]
    defs: dict[str, Any] = found["$defs"]
    return defs


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined, to embed in an OpenAPI request body."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _body_doc(model: type[LifecycleIn], *, batch: bool = False) -> dict[str, Any]:
    schema = _inline_refs(model.model_json_schema())
    if batch:
        return {"required": True, "content": {JSON: {"schema": {"type": "array", "items": schema}}}}
    content = {FORM: {"schema": schema}, JSON: {"schema": schema}}
    return {"required": model is QueuedIn, "content": content}
