"""The Queues pages: every queue with its size and latency (from the snapshot), one queue's jobs
paged newest or oldest first, and deleting one waiting job by its exact bytes."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.deps import LimitDep, ResourcesDep, current_snapshot
from app.errors import InvalidInput
from app.sidekiq.browse import JobRecord, QueueEntry, read_queue_page, translate_redis_errors
from app.sidekiq.control import Control
from app.web.auth import OperatorDep, ViewerDep, audit
from app.web.render import done_url, pick_notice, render

router = APIRouter()

MAX_OFFSET = 1_000_000_000
MAX_NAME_CHARS = 255
# A job's bytes travel base64-encoded in the form: exact even when they are not UTF-8 or hold
# line breaks a browser would rewrite. Sidekiq caps nothing, so the bound is generous.
MAX_JOB_FIELD_CHARS = 16 * 1024 * 1024
BAD_JOB = "not the base64 of a job's bytes"
NOTICES = {
    "deleted": "Deleted {n} job from the queue.",
    "gone": "That job was no longer in the queue (already fetched or deleted): {n} deleted.",
}

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Entries to skip.")]
QueueName = Annotated[str, Path(min_length=1, max_length=MAX_NAME_CHARS)]
Direction = Annotated[Literal["asc", "desc"] | None, Query(description="asc: oldest first.")]


def next_offset(offset: int, count: int, total: int) -> int | None:
    """Where the next page starts, None on the last one."""
    end = offset + count
    return end if count and end < total else None


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
    def of(cls, entry: QueueEntry) -> QueueRow:
        raw = entry.job.raw
        text = raw.decode("utf-8", errors="replace") if entry.job.problem else ""
        return cls(entry.position, entry.job, base64.b64encode(raw).decode(), text)


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
    with translate_redis_errors(found.settings.RETRY_AFTER_SECONDS):
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
        rows=[QueueRow.of(entry) for entry in page.entries],
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
    try:
        raw = base64.b64decode(job, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput({"job": BAD_JOB}) from None
    with translate_redis_errors(found.settings.RETRY_AFTER_SECONDS):
        deleted = int(await Control(found.redis, found.keys).delete_from_queue(name, raw))
    audit(request, who, "delete_queued_job", name, deleted)
    kept: dict[str, int | str] = {"offset": offset} if offset else {}
    if direction:
        kept["direction"] = direction
    back = queue_path(name) + ("?" + urlencode(kept) if kept else "")
    return RedirectResponse(done_url(back, "deleted" if deleted else "gone", deleted), 303)
