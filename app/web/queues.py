"""The Queues pages: every queue with its size and latency (from the snapshot), one queue's jobs
paged newest or oldest first (secrets redacted), and deleting one waiting job by its exact bytes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.deps import LimitDep, Offset, Resources, ResourcesDep, current_snapshot
from app.domain import next_offset
from app.errors import InvalidInput
from app.redact import Redactor
from app.sidekiq.browse import (
    JobRecord,
    QueueEntry,
    read_queue_page,
    redact,
)
from app.sidekiq.commands import Control
from app.web.auth import OperatorDep, ViewerDep, audit
from app.web.render import done_url, pick_notice, render

router = APIRouter()

MAX_NAME_CHARS = 255
# A job's bytes travel base64-encoded in the form: exact even when they are not UTF-8 or hold
# line breaks a browser would rewrite. Sidekiq caps nothing, so the bound is generous.
MAX_JOB_FIELD_CHARS = 16 * 1024 * 1024
BAD_JOB = "not the base64 of a job's bytes"
# A redacted job's Delete form must not carry its bytes (they hold the secret): it carries the
# job's position and a keyed digest of them instead, and the delete looks for those bytes from
# that position down this many places (jobs fetched ahead of it move it towards position 1).
DIGEST_PREFIX = "digest:"
FIND_WINDOW = 1_000
MAX_POSITION_DIGITS = 12
NOTICES = {
    "deleted": "Deleted {n} job from the queue.",
    "gone": "That job was no longer in the queue (already fetched or deleted): {n} deleted.",
}

QueueName = Annotated[str, Path(min_length=1, max_length=MAX_NAME_CHARS)]
Direction = Annotated[Literal["asc", "desc"] | None, Query(description="asc: oldest first.")]


def queue_path(name: str) -> str:
    """A queue page's path; "/" stays (the route takes a path), everything else is quoted."""
    return "/sidekiq/queues/" + quote(name, safe="/")


@dataclass(frozen=True, slots=True)
class QueueRow:
    """A waiting job as the page shows it: `token` is what its Delete form sends back, and
    `text` the raw entry for one that is not a job object."""

    position: int
    job: JobRecord
    token: str
    text: str

    @classmethod
    def of(cls, entry: QueueEntry, redactor: Redactor, key: bytes) -> QueueRow:
        shown = redact(entry.job, redactor)
        text = shown.raw.decode("utf-8", errors="replace") if shown.problem else ""
        if shown.redacted:
            token = f"{DIGEST_PREFIX}{entry.position}:{_digest(entry.job.raw, key)}"
        else:
            token = base64.b64encode(entry.job.raw).decode()
        return cls(entry.position, shown, token, text)


def _digest(raw: bytes, key: bytes) -> str:
    return hmac.new(key, raw, hashlib.sha256).hexdigest()


def _delete_url(name: str, offset: int, oldest_first: bool) -> str:
    kept: dict[str, int | str] = {"offset": offset} if offset else {}
    if oldest_first:
        kept["direction"] = "asc"
    return queue_path(name) + "/delete" + ("?" + urlencode(kept) if kept else "")


@router.get("/queues")
async def queues_page(
    request: Request, _who: ViewerDep, found: ResourcesDep, limit: LimitDep, offset: Offset = 0
) -> HTMLResponse:
    """From the snapshot only: no Redis read beyond the one the summary bar needs anyway."""
    snapshot = (await current_snapshot(found)).snapshot
    queues = snapshot.queues[offset : offset + limit]
    return await render(
        request,
        "queues.html",
        active="queues",
        title="Queues",
        snapshot=snapshot,
        queues=queues,
        offset=offset,
        limit=limit,
        total=len(snapshot.queues),
        next_offset=next_offset(offset, len(queues), len(snapshot.queues)),
    )


@router.get("/queues/{name:path}")
async def queue_page(
    request: Request,
    _who: ViewerDep,
    found: ResourcesDep,
    name: QueueName,
    limit: LimitDep,
    offset: Offset = 0,
    direction: Direction = None,
) -> HTMLResponse:
    """One page of the list: newest first as Sidekiq shows it, or oldest (next to run) first."""
    oldest_first = direction == "asc"
    page = await read_queue_page(
        found.redis,
        found.keys.queue(name),
        offset=offset,
        limit=limit,
        oldest_first=oldest_first,
    )
    return await render(
        request,
        "queue.html",
        active="queues",
        title=f"Queue {name}",
        notice=pick_notice(request, NOTICES),
        name=name,
        path=queue_path(name),
        rows=[QueueRow.of(entry, found.redactor, found.session_key) for entry in page.entries],
        delete_url=_delete_url(name, offset, oldest_first),
        oldest_first=oldest_first,
        offset=offset,
        limit=limit,
        total=page.total,
        next_offset=next_offset(offset, len(page.entries), page.total),
    )


@router.post("/queues/{name:path}/delete")
async def delete_job(
    request: Request,
    who: OperatorDep,
    found: ResourcesDep,
    name: QueueName,
    job: Annotated[str, Form(min_length=1, max_length=MAX_JOB_FIELD_CHARS)],
    offset: Offset = 0,
    direction: Direction = None,
) -> RedirectResponse:
    """LREM of the exact bytes (count 1): a job already fetched by Sidekiq deletes nothing.
    The query (offset, direction) brings the person back to the page they were on."""
    raw = await _job_bytes(found, name, job)
    control = Control(found.redis, found.keys)
    deleted = 0 if raw is None else int(await control.delete_from_queue(name, raw))
    audit(request, who, "delete_queued_job", name, deleted)
    kept: dict[str, int | str] = {"offset": offset} if offset else {}
    if direction:
        kept["direction"] = direction
    back = queue_path(name) + ("?" + urlencode(kept) if kept else "")
    return RedirectResponse(done_url(back, "deleted" if deleted else "gone", deleted), 303)


async def _job_bytes(found: Resources, name: str, token: str) -> bytes | None:
    """The job's bytes from its Delete form: the base64 of them, or for a redacted job the one
    whose digest matches near its position (None when it is no longer there)."""
    if not token.startswith(DIGEST_PREFIX):
        try:
            return base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput({"job": BAD_JOB}) from None
    text, _, digest = token.removeprefix(DIGEST_PREFIX).partition(":")
    valid = text.isascii() and text.isdigit() and len(text) <= MAX_POSITION_DIGITS and digest
    position = int(text) if valid else 0
    if position < 1:
        raise InvalidInput({"job": BAD_JOB})
    lowest = max(1, position - FIND_WINDOW)
    # Position p is index -p: the client pushes on the left and Sidekiq fetches on the right.
    rows = await found.redis.lrange(found.keys.queue(name), -position, -lowest)
    candidates = [row if isinstance(row, bytes) else row.encode() for row in rows]
    return next(
        (raw for raw in candidates if hmac.compare_digest(_digest(raw, found.session_key), digest)),
        None,
    )
