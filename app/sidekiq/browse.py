"""Paged, bounded reads of Sidekiq's job collections: the `retry`, `schedule` and `dead` sorted
sets and the `queue:<name>` lists, and the parsing of their job entries (docs/sidekiq-redis.md).

Every read is one page (ZRANGE/ZREVRANGE or LRANGE by index, with ZCARD/LLEN in the same MULTI)
or a ZSCAN with a bounded COUNT and a bounded number of calls; never a whole set or list.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import zlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from app.redact import OFF, Redactor
from app.sidekiq.commands import SortedSet
from app.sidekiq.reader import epoch_seconds

NOT_JSON = "not valid JSON"
NOT_AN_OBJECT = "JSON, but not a job object"
# A filter examines about SCAN_CALLS x SCAN_COUNT members and keeps at most MAX_MATCHES (a set
# small enough for Redis's compact encoding, 128 members by default, answers whole in one call).
SCAN_COUNT = 500
SCAN_CALLS = 20
MAX_MATCHES = 1_000
# The longest filter text the API and the GUI take.
MAX_SUBSTR_CHARS = 200
GLOB_SPECIALS = re.compile(r"([*?\[\]\\])")
# An inflated backtrace larger than this is not shown (a bound on what one page decompresses).
MAX_BACKTRACE_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job payload as stored, with the fields Sidekiq's Web UI shows. `raw` is the exact
    member or list element (a ZREM or LREM needs these bytes) unless `redacted` says secrets
    were replaced in it (see `redact`); `problem` says why the other fields are empty when the
    raw text is not a job object."""

    raw: bytes
    problem: str | None
    jid: str | None = None
    job_class: str | None = None
    queue: str | None = None
    args: Any = None
    created_at: datetime | None = None
    enqueued_at: datetime | None = None
    failed_at: datetime | None = None
    retried_at: datetime | None = None
    retry_count: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    redacted: bool = False


@dataclass(frozen=True, slots=True)
class SortedEntry:
    """A member of `retry`, `schedule` or `dead` with its score (epoch seconds)."""

    score: float
    job: JobRecord

    @property
    def key(self) -> str:
        """The Web UI's address of the entry, "<score>-<jid>" (web/helpers.rb job_params)."""
        return f"{format_score(self.score)}-{self.job.jid or ''}"

    @property
    def at(self) -> datetime | None:
        return moment(self.score)


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A job waiting in a queue; position 1 is the next one a process will fetch."""

    position: int
    job: JobRecord


@dataclass(frozen=True, slots=True)
class SetPage:
    """One page of a sorted set. With a filter, `total` counts the matches found and
    `scan_complete` is False when the bounded scan stopped before the end of the set."""

    entries: list[SortedEntry]
    total: int
    scan_complete: bool = True


@dataclass(frozen=True, slots=True)
class QueuePage:
    entries: list[QueueEntry]
    total: int


def format_score(score: float) -> str:
    """The score as Ruby's Float#to_s writes it: Python's shortest repr, except that Ruby
    keeps ".0" in a mantissa (1.0e+16) and spells infinity "Infinity"."""
    if math.isinf(score):
        return "Infinity" if score > 0 else "-Infinity"
    text = repr(float(score))
    mantissa, marker, exponent = text.partition("e")
    if marker and "." not in mantissa:
        return f"{mantissa}.0e{exponent}"
    return text


def moment(value: Any) -> datetime | None:
    """A Sidekiq timestamp (float s, integer ms) as UTC, or None when absent or out of range."""
    seconds = epoch_seconds(value)
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_job(raw: bytes) -> JobRecord:
    """The Web UI's fields of one payload; invalid JSON gives a record with only `raw`."""
    try:
        job = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return JobRecord(raw=raw, problem=NOT_JSON)
    if not isinstance(job, dict):
        return JobRecord(raw=raw, problem=NOT_AN_OBJECT)
    return JobRecord(
        raw=raw,
        problem=None,
        jid=_text(job.get("jid")),
        job_class=_text(job.get("wrapped")) or _text(job.get("class")),
        queue=_text(job.get("queue")),
        args=job.get("args"),
        created_at=moment(job.get("created_at")),
        enqueued_at=moment(job.get("enqueued_at")),
        failed_at=moment(job.get("failed_at")),
        retried_at=moment(job.get("retried_at")),
        retry_count=_count(job.get("retry_count")),
        error_class=_text(job.get("error_class")),
        error_message=_text(job.get("error_message")),
    )


def redact(record: JobRecord, redactor: Redactor) -> JobRecord:
    """The record as the GUI and the API may show it (SUPERVISOR_REDACT_*): secrets replaced
    in its args, error message and backtrace, and `raw` re-serialized from that payload (so no
    longer the stored bytes). The same record when nothing matched."""
    if not redactor.active:
        return record
    if record.problem is not None:
        text = record.raw.decode("utf-8", errors="replace")
        scrubbed = redactor.text(text) or ""
        return record if scrubbed == text else replace(record, raw=scrubbed.encode(), redacted=True)
    payload: dict[str, Any] = orjson.loads(record.raw)  # parsed once already: an object
    if not _redact_payload(payload, redactor):
        return record
    return replace(parse_job(orjson.dumps(payload)), redacted=True)


def _redact_payload(payload: dict[str, Any], redactor: Redactor) -> bool:
    """Redact a job payload in place: keys and patterns in `args`, patterns in the error
    message and backtrace (a changed backtrace is kept as a plain array, which Sidekiq's
    readers and decode_backtrace accept). True when anything was replaced."""
    changed = False
    if "args" in payload:
        payload["args"], changed = redactor.value(payload["args"])
    message = payload.get("error_message")
    if isinstance(message, str) and (scrubbed := redactor.text(message)) != message:
        payload["error_message"] = scrubbed
        changed = True
    if redactor.redacts_text and "error_backtrace" in payload:
        lines = decode_backtrace(payload["error_backtrace"])
        scrubbed_lines, hit = redactor.lines(lines or [])
        if hit:
            payload["error_backtrace"] = scrubbed_lines
            changed = True
    return changed


def redact_entries(entries: list[SortedEntry], redactor: Redactor) -> list[SortedEntry]:
    return [replace(entry, job=redact(entry.job, redactor)) for entry in entries]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def read_set_page(
    redis: Redis, key: str, *, offset: int, limit: int, newest_first: bool
) -> SetPage:
    """Members ranked [offset, offset + limit) by score, and ZCARD, in one MULTI."""
    stop = offset + limit - 1
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zcard(key)
        if newest_first:
            # ZREVRANGE rather than ZRANGE … REV: Sidekiq 6 runs on Redis 4.0+.
            pipe.zrevrange(key, offset, stop, withscores=True)
        else:
            pipe.zrange(key, offset, stop, withscores=True)
        total, rows = await pipe.execute()
    return SetPage(entries=[_sorted_entry(member, score) for member, score in rows], total=total)


async def search_set(
    redis: Redis,
    key: str,
    needle: str,
    *,
    offset: int,
    limit: int,
    newest_first: bool,
    redactor: Redactor = OFF,
) -> SetPage:
    """Members containing `needle` (plain text, case-sensitive, as Sidekiq's filter box), found
    with a bounded ZSCAN MATCH, ordered like read_set_page and cut to one page. With redaction,
    only members that still contain it once redacted: a search must not confirm a guessed
    secret."""
    matches, complete = await _scan_matches(redis, key, f"*{glob_escape(needle)}*")
    if redactor.active:
        matches = {
            member: score
            for member, score in matches.items()
            if needle.encode() in redact(parse_job(member), redactor).raw
        }
    ordered = sorted(matches.items(), key=lambda item: (item[1], item[0]), reverse=newest_first)
    entries = [_sorted_entry(member, score) for member, score in ordered[offset : offset + limit]]
    return SetPage(entries=entries, total=len(ordered), scan_complete=complete)


async def read_set(
    redis: Redis,
    key: str,
    *,
    substr: str | None,
    offset: int,
    limit: int,
    newest_first: bool,
    redactor: Redactor = OFF,
) -> SetPage:
    """One page of a set: of the members containing `substr` (search_set) when given, else
    of all of them by rank (read_set_page)."""
    if substr:
        return await search_set(
            redis,
            key,
            substr,
            offset=offset,
            limit=limit,
            newest_first=newest_first,
            redactor=redactor,
        )
    return await read_set_page(redis, key, offset=offset, limit=limit, newest_first=newest_first)


async def _scan_matches(redis: Redis, key: str, pattern: str) -> tuple[dict[bytes, float], bool]:
    """Up to SCAN_CALLS ZSCAN calls, stopping early past MAX_MATCHES; True when it reached the
    end of the set. A dict, because ZSCAN may return a member twice while Redis rehashes."""
    matches: dict[bytes, float] = {}
    cursor = 0
    for _ in range(SCAN_CALLS):
        cursor, batch = await redis.zscan(key, cursor, match=pattern, count=SCAN_COUNT)
        for member, score in batch:
            matches[member if isinstance(member, bytes) else str(member).encode()] = float(score)
        if cursor == 0:
            return matches, True
        if len(matches) >= MAX_MATCHES:
            break
    return matches, False


def glob_escape(text: str) -> str:
    """`text` as a literal inside a Redis MATCH pattern."""
    return GLOB_SPECIALS.sub(r"\\\1", text)


def _sorted_entry(member: bytes, score: float) -> SortedEntry:
    return SortedEntry(score=float(score), job=parse_job(member))


async def read_queue_page(
    redis: Redis, key: str, *, offset: int, limit: int, oldest_first: bool
) -> QueuePage:
    """One page of a queue list and its LLEN, in one MULTI. The client LPUSHes, so index 0 is
    the newest job and -1 the oldest (the next to run)."""
    if oldest_first:
        start, stop = -(offset + limit), -(offset + 1)
    else:
        start, stop = offset, offset + limit - 1
    async with redis.pipeline(transaction=True) as pipe:
        pipe.llen(key)
        pipe.lrange(key, start, stop)
        total, rows = await pipe.execute()
    if oldest_first:
        positions = range(offset + 1, offset + 1 + len(rows))
        rows = rows[::-1]
    else:
        positions = range(total - offset, total - offset - len(rows), -1)
    entries = [
        QueueEntry(position, parse_job(raw)) for position, raw in zip(positions, rows, strict=True)
    ]
    return QueuePage(entries=entries, total=total)


async def scan_step(
    redis: Redis, key: str, cursor: int, *, count: int
) -> tuple[int, list[SortedEntry]]:
    """One ZSCAN call: the next cursor (0 when the pass is over) and the entries it returned.
    A pass returns every member present from its start to its end, some possibly twice."""
    cursor, batch = await redis.zscan(key, cursor, count=count)
    entries = []
    for member, score in batch:
        raw = member if isinstance(member, bytes) else str(member).encode()
        entries.append(_sorted_entry(raw, float(score)))
    return int(cursor), entries


@dataclass(frozen=True, slots=True)
class SetView:
    """How a sorted set is listed: its API name (as in /api/v1/{name}/actions), the Web UI's
    default order and what its score means."""

    name: str
    source: SortedSet
    newest_first: bool
    score_means: str

    def is_newest_first(self, direction: str | None) -> bool:
        """The order asked for ("asc" or "desc"), or with none the set's default."""
        return self.newest_first if direction is None else direction == "desc"


RETRIES = SetView("retries", SortedSet.RETRY, newest_first=False, score_means="next retry time")
SCHEDULED = SetView("scheduled", SortedSet.SCHEDULE, newest_first=False, score_means="due time")
DEAD = SetView("dead", SortedSet.DEAD, newest_first=True, score_means="time of death")


def decode_backtrace(value: Any) -> list[str] | None:
    """A payload's `error_backtrace` as lines: Base64(zlib(JSON array)) from Sidekiq 6.0 (6.x
    with newlines in the Base64, 7+ strict; b64decode reads both), a plain array before. None
    when absent, unreadable or inflating past MAX_BACKTRACE_BYTES."""
    if isinstance(value, list):
        return [str(line) for line in value]
    if not isinstance(value, str):
        return None
    try:
        inflated = zlib.decompressobj().decompress(base64.b64decode(value), MAX_BACKTRACE_BYTES)
        lines = orjson.loads(inflated)
    except (binascii.Error, zlib.error, orjson.JSONDecodeError):
        return None
    return [str(line) for line in lines] if isinstance(lines, list) else None
