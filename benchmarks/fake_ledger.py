"""A realistic ledger for the console benchmark: a million `jobs` rows generated here and
bulk-loaded with multi-row INSERTs through asyncmy (no ORM: the load must take seconds, not hours).

Shape: statuses in production-like proportions, 50 job classes over 20 queues with a long tail,
arguments JSON of 60-200 bytes, activity spread over 30 days, random 24-hex jids as Sidekiq makes
them. status_key and info_key follow event_key in app/store/ledger_writes.py, as the writer
stores them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain import RANK, EventName

SEED = 20_261_123
DAYS = 30
CHUNK_ROWS = 5_000
# Present in the arguments of MARKER_SHARE of the rows and nowhere else; NO_MATCH is nowhere.
MARKER = "refund"
MARKER_SHARE = 0.02
NO_MATCH = "no-such-argument-xyzzy"

# Share of rows by current status (the newest event of each job).
STATUS_SHARES = {
    EventName.COMPLETE: 0.88,
    EventName.QUEUED: 0.05,
    EventName.STARTED: 0.04,
    EventName.FAILED: 0.03,
}
QUEUES = [
    "default", "critical", "mailers", "low", "webhooks", "billing", "reports", "imports",
    "exports", "search", "notifications", "media", "sync", "analytics", "cleanup", "payments",
    "integrations", "audit", "scheduler", "bulk",
]  # fmt: skip
DOMAINS = ["Billing", "Mailer", "Report", "Import", "Export", "Search", "Notify", "Media", "Sync",
           "Audit"]  # fmt: skip
ACTIONS = ["ChargeJob", "DeliverJob", "BuildJob", "RefreshJob", "PurgeJob"]
WORDS = (
    "invoice account monthly weekly north south east west region gold silver bronze plan trial "
    "upgrade downgrade export import archive photo video thumbnail resize webhook retry daily "
    "summary digest welcome reminder password reset order shipment tracking customer vendor "
    "ledger balance tax report quarterly cohort segment campaign newsletter sync index rebuild"
).split()
ERRORS = [
    ("Net::ReadTimeout", "Net::ReadTimeout with #<TCPSocket:(closed)>"),
    ("ActiveRecord::RecordNotFound", "Couldn't find Account with 'id'=4412"),
    ("Stripe::CardError", "Your card was declined."),
]

# The order _row renders values in (spelled out: the writer's own column list may change).
COLUMNS = (
    "jid job_class queue arguments arguments_truncated info_key status status_key enqueued_at "
    "scheduled_for started_at completed_at failed_at first_seen_at last_event_at attempts "
    "error_class error_message process requeued_as"
).split()
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Shape:
    """The generated ledger's vocabulary, with each class's share of the rows."""

    classes: list[str]
    class_queue: dict[str, str]
    class_share: dict[str, float]

    def queue_share(self) -> dict[str, float]:
        shares = dict.fromkeys(QUEUES, 0.0)
        for name, share in self.class_share.items():
            shares[self.class_queue[name]] += share
        return shares


def make_shape() -> Shape:
    """50 classes (Zipf-like shares: a few busy classes, a long tail), each on one queue."""
    classes = [f"{domain}::{action}" for domain in DOMAINS for action in ACTIONS]
    rng = random.Random(SEED)
    rng.shuffle(classes)
    weights = [1 / (rank + 1) ** 0.9 for rank in range(len(classes))]
    total = sum(weights)
    class_queue = {name: QUEUES[n % len(QUEUES)] for n, name in enumerate(classes)}
    shares = {name: w / total for name, w in zip(classes, weights, strict=True)}
    return Shape(classes, class_queue, shares)


def quote(text: str | None) -> str:
    if text is None:
        return "NULL"
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def when(micros: int | None) -> str:
    if micros is None:
        return "NULL"
    return "'" + (EPOCH + timedelta(microseconds=micros)).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"


def arguments(rng: random.Random) -> str:
    words = " ".join(rng.choices(WORDS, k=rng.randint(2, 18)))
    if rng.random() < MARKER_SHARE:
        words = f"{words} {MARKER}"
    account, item = rng.randint(1, 999_999), rng.randint(1, 99_999)
    return f'[{account},"{rng.choice(WORDS)}",{{"id":{item},"note":"{words}"}}]'


@dataclass(frozen=True, slots=True)
class Times:
    """A job's life times in µs since the epoch (None: that event never happened)."""

    enqueued: int
    started: int | None = None
    completed: int | None = None
    failed: int | None = None


def times(rng: random.Random, status: EventName, last_us: int) -> Times:
    run_us = int(rng.lognormvariate(13, 1.5))  # median ~0.4 s, long tail
    wait_us = int(rng.lognormvariate(11, 2))  # median ~60 ms
    if status is EventName.QUEUED:
        return Times(last_us)
    if status is EventName.STARTED:
        return Times(last_us - wait_us, started=last_us)
    started = last_us - run_us
    if status is EventName.COMPLETE:
        return Times(started - wait_us, started=started, completed=last_us)
    return Times(started - wait_us, started=started, failed=last_us)


def _row(rng: random.Random, shape: Shape, weights: list[float], jid: str, last_us: int) -> str:
    """One row's VALUES tuple, in COLUMNS order."""
    status = rng.choices(list(STATUS_SHARES), list(STATUS_SHARES.values()))[0]
    job_class = rng.choices(shape.classes, weights)[0]
    life = times(rng, status, last_us)
    key = str(last_us * 8 + RANK[status])  # event_key of the newest event, which carried args
    error_class, error_message = rng.choice(ERRORS) if status is EventName.FAILED else (None, None)
    process = None if life.started is None else f"worker-{rng.randint(1, 12)}:{rng.randint(1, 9)}"
    attempts = 0 if life.started is None else rng.randint(1, 3) if life.failed else 1
    values = [
        quote(jid), quote(job_class),
        quote(shape.class_queue[job_class]), quote(arguments(rng)), "0", key, quote(status),
        key, when(life.enqueued), "NULL", when(life.started), when(life.completed),
        when(life.failed), when(life.enqueued), when(last_us), str(attempts),
        quote(error_class), quote(error_message), quote(process), "NULL",
    ]  # fmt: skip
    return "(" + ",".join(values) + ")"


def chunks(rows: int, now: datetime) -> Iterator[str]:
    """INSERT statements of CHUNK_ROWS rows each, in jid (primary key) order.

    Activity times are uniform over the DAYS before `now` and independent of the jid, as
    with Sidekiq's random jids: the newest jobs are scattered over the whole table.
    """
    rng = random.Random(SEED)
    shape = make_shape()
    weights = [shape.class_share[name] for name in shape.classes]
    end_us = (now - EPOCH) // timedelta(microseconds=1)
    span_us = DAYS * 86_400_000_000
    jids = sorted(rng.getrandbits(96) for _ in range(rows))
    head = f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES "
    for first in range(0, rows, CHUNK_ROWS):
        values = [
            _row(rng, shape, weights, f"{jid:024x}", end_us - rng.randrange(span_us))
            for jid in jids[first : first + CHUNK_ROWS]
        ]
        yield head + ",".join(values)


async def secondary_indexes(cursor: Any) -> dict[str, list[str]]:
    """The migrated table's secondary indexes, name -> columns, to rebuild them identically."""
    await cursor.execute(
        "SELECT index_name, column_name FROM information_schema.statistics "
        "WHERE table_schema = DATABASE() AND table_name = 'jobs' AND index_name <> 'PRIMARY' "
        "ORDER BY index_name, seq_in_index"
    )
    found: dict[str, list[str]] = {}
    for name, column in await cursor.fetchall():
        found.setdefault(name, []).append(column)
    return found


async def insert(cursor: Any, statements: Iterator[str]) -> None:
    """Execute every statement, generating the next one in a thread while the server works."""
    upcoming = asyncio.create_task(asyncio.to_thread(next, statements, None))
    while (statement := await upcoming) is not None:
        upcoming = asyncio.create_task(asyncio.to_thread(next, statements, None))
        await cursor.execute(statement)


async def load(conn: Any, rows: int, now: datetime) -> float:
    """Bulk-load `rows` rows on `conn`; returns the seconds it took.

    The standard bulk load: secondary indexes dropped, rows inserted in primary key order,
    the same indexes rebuilt by sorting (far faster than growing them row by row when the
    table outgrows the buffer pool), then ANALYZE TABLE.
    """
    started = time.perf_counter()
    async with conn.cursor() as cursor:
        indexes = await secondary_indexes(cursor)
        drops = ", ".join(f"DROP INDEX `{name}`" for name in indexes)
        await cursor.execute(f"ALTER TABLE jobs {drops}")
        await insert(cursor, chunks(rows, now))
        adds = ", ".join(f"ADD INDEX `{n}` ({', '.join(c)})" for n, c in indexes.items())
        await cursor.execute(f"ALTER TABLE jobs {adds}")
        await cursor.execute("ANALYZE TABLE jobs")
        await cursor.fetchall()
    return time.perf_counter() - started
