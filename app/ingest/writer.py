"""EventWriter: durable group commit. A request is answered only after its batch committed.

Requests queue their events; a few flusher tasks each take what is waiting (up to a batch size),
write it in one transaction and resolve every waiting request. While the database is down the
writer fails fast (503 with Retry-After), keeps a bounded queue, and probes until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.domain import JobEvent, RunTimes
from app.errors import InvalidInput, Unavailable
from app.exporter.jobs import JobMetrics
from app.exporter.process import IngestMetrics
from app.store.db import ping
from app.store.ledger_writes import LedgerRefused, LedgerUnavailable, run_times, write_events

log = logging.getLogger(__name__)

DATABASE_DOWN = "the ledger database is unavailable; nothing was stored, retry later"
QUEUE_FULL = "the ledger writer is saturated ({pending} events waiting); retry later"
NOT_CONFIRMED = "the ledger database did not confirm the write within {seconds:g}s; retry later"
NOT_STORABLE = "the database refused this event: {reason}"
STOPPING = "the service is shutting down; retry against another replica"
NOT_WRITTEN = "the ledger writer failed on this batch; nothing acknowledged was lost, retry"

PROBE_MAX_PAUSE_SECONDS = 2.0


@dataclass(slots=True)
class _Request:
    events: Sequence[JobEvent]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Slot:
    """A flusher's own connection, kept across batches and dropped after any failure."""

    conn: AsyncConnection | None = None
    # The writer's outage count when `conn` was opened; see _connection.
    outages: int = 0


@dataclass(frozen=True, slots=True)
class WriterLimits:
    batch_size: int
    max_pending: int
    connections: int
    ingest_timeout_seconds: float
    db_timeout_seconds: float
    retry_after_seconds: int


class EventWriter:
    """Collects events from many requests and commits them in batches."""

    def __init__(
        self,
        engine: AsyncEngine,
        limits: WriterLimits,
        metrics: IngestMetrics,
        job_metrics: JobMetrics,
    ) -> None:
        self._engine = engine
        self._limits = limits
        self._metrics = metrics
        self._job_metrics = job_metrics
        self._queue: deque[_Request] = deque()
        self._pending_events = 0
        self._wake = asyncio.Event()
        self._flushers: list[asyncio.Task[None]] = []
        self._slots: list[_Slot] = []
        self._down = False
        self._outages = 0
        self._stopping = False

    @property
    def is_down(self) -> bool:
        return self._down

    async def start(self) -> None:
        self._slots = [_Slot() for _ in range(self._limits.connections)]
        self._flushers = [
            asyncio.create_task(self._flush_forever(slot), name=f"ledger-writer-{n}")
            for n, slot in enumerate(self._slots)
        ]

    async def stop(self) -> None:
        """Stop taking events, write what is queued, then end the flushers."""
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._limits.ingest_timeout_seconds):
                await asyncio.gather(*self._flushers, return_exceptions=True)
        for task in self._flushers:
            task.cancel()
        await asyncio.gather(*self._flushers, return_exceptions=True)
        self._fail_queued(Unavailable(STOPPING, retry_after_seconds=1))
        for slot in self._slots:
            if slot.conn is not None:
                await slot.conn.invalidate()

    async def submit(self, events: Sequence[JobEvent]) -> None:
        """Return once `events` are committed; raise Unavailable (503) or InvalidInput (422)."""
        self._admit(len(events))
        request = _Request(events)
        self._queue.append(request)
        self._pending_events += len(events)
        self._metrics.pending.set(self._pending_events)
        self._wake.set()
        try:
            async with asyncio.timeout(self._limits.ingest_timeout_seconds):
                await asyncio.shield(request.done)
        except TimeoutError:
            # Not acknowledged: the client retries; if the batch commits later, the ledger
            # merge makes the repeat harmless.
            raise self._unavailable(
                NOT_CONFIRMED.format(seconds=self._limits.ingest_timeout_seconds)
            ) from None

    def _admit(self, count: int) -> None:
        if self._stopping:
            raise self._unavailable(STOPPING)
        if self._down:
            self._metrics.events_rejected.labels("database_down").inc(count)
            raise self._unavailable(DATABASE_DOWN)
        if self._pending_events + count > self._limits.max_pending:
            self._metrics.events_rejected.labels("queue_full").inc(count)
            raise self._unavailable(QUEUE_FULL.format(pending=self._pending_events))

    def _unavailable(self, detail: str) -> Unavailable:
        return Unavailable(detail, retry_after_seconds=self._limits.retry_after_seconds)

    async def _flush_forever(self, slot: _Slot) -> None:
        while True:
            batch = self._take()
            if batch:
                try:
                    await self._write(batch, slot)
                except Exception:
                    # The loop must outlive any bug: fail this batch (not acked), keep serving.
                    log.exception("ledger writer failed unexpectedly; batch answered 503")
                    self._reject_all(batch, self._unavailable(NOT_WRITTEN), reason="writer_error")
                continue
            if self._stopping:
                return
            self._wake.clear()
            await self._wake.wait()

    def _take(self) -> list[_Request]:
        """Queued requests up to the batch size (at least one); a request is never split."""
        batch: list[_Request] = []
        size = 0
        while self._queue and (
            not batch or size + len(self._queue[0].events) <= self._limits.batch_size
        ):
            request = self._queue.popleft()
            batch.append(request)
            size += len(request.events)
        self._pending_events -= size
        self._metrics.pending.set(self._pending_events)
        return batch

    async def _write(self, batch: list[_Request], slot: _Slot) -> None:
        events = [event for request in batch for event in request.events]
        started = time.perf_counter()
        try:
            await self._commit(events, slot)
        except LedgerUnavailable as exc:
            await self._database_failed(batch, exc)
            return
        except LedgerRefused:
            await self._write_one_by_one(batch, slot)
            return
        self._metrics.batch_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(events))
        self._count(events)
        for request in batch:
            _resolve(request)
        await self._observe_jobs(events, slot)

    async def _commit(self, events: Sequence[JobEvent], slot: _Slot) -> None:
        await write_events(functools.partial(self._connection, slot), events)

    @contextlib.asynccontextmanager
    async def _connection(self, slot: _Slot) -> AsyncIterator[AsyncConnection]:
        """The flusher's connection for one attempt, under one deadline over connecting,
        statements and commit. On any failure it is dropped without a rollback round trip,
        which could hang on a dead network."""
        async with asyncio.timeout(self._limits.db_timeout_seconds):
            if slot.conn is not None and slot.outages != self._outages:
                # Opened before an outage another flusher saw: the server or the network
                # most likely dropped it, and failing on it would mark the database down
                # again just after it came back. Drop it unused.
                stale, slot.conn = slot.conn, None
                await stale.invalidate()
            if slot.conn is None:
                slot.conn = await self._engine.connect()
                slot.outages = self._outages
            conn = slot.conn
            try:
                yield conn
            except BaseException:
                slot.conn = None
                await conn.invalidate()
                raise

    async def _write_one_by_one(self, batch: list[_Request], slot: _Slot) -> None:
        """A batch the database refused as data: find which request it was, keep the rest."""
        committed: list[JobEvent] = []
        for request in batch:
            try:
                await self._commit(request.events, slot)
            except LedgerUnavailable as exc:
                await self._database_failed([request], exc)
            except LedgerRefused as exc:
                self._metrics.events_rejected.labels("refused").inc(len(request.events))
                _reject(request, InvalidInput({"event": NOT_STORABLE.format(reason=exc)}))
            else:
                self._count(request.events)
                _resolve(request)
                committed.extend(request.events)
        await self._observe_jobs(committed, slot)

    async def _observe_jobs(self, events: Sequence[JobEvent], slot: _Slot) -> None:
        """Job metrics for committed (and already acknowledged) events.

        Rows are read back only for the events that lack a time, in one query on the
        flusher's connection. Nothing here may fail the batch: a failed read-back is logged
        and counted, its connection dropped, and the events are observed without it.
        """
        known: dict[str, RunTimes] = {}
        jids = {event.jid for event in events if self._job_metrics.needs_lookup(event)}
        if jids and slot.conn is not None:
            conn = slot.conn
            try:
                async with asyncio.timeout(self._limits.db_timeout_seconds):
                    known = await run_times(conn, jids)
            except Exception as exc:
                log.warning("job metrics: reading back run times failed: %r", exc)
                self._job_metrics.lookup_errors.inc()
                slot.conn = None
                with contextlib.suppress(Exception):
                    await conn.invalidate()
        try:
            self._job_metrics.observe(events, known)
        except Exception:
            # A bug in the metrics must not reach the flush loop, which would answer 503
            # for a batch already acknowledged.
            log.exception("job metrics: observing a committed batch failed")

    async def _database_failed(self, batch: list[_Request], exc: BaseException) -> None:
        log.error("ledger write failed, database marked down: %r", exc)
        self._down = True
        self._outages += 1
        self._metrics.database_up.set(0)
        self._reject_all(batch, self._unavailable(DATABASE_DOWN), reason="database_down")
        self._fail_queued(self._unavailable(DATABASE_DOWN))
        await self._probe_until_up()

    async def _probe_until_up(self) -> None:
        pause = 0.1
        while not self._stopping:
            try:
                async with asyncio.timeout(self._limits.db_timeout_seconds):
                    await ping(self._engine)
            except Exception as exc:
                # A loop boundary: whatever the probe raises, keep probing (and logging).
                log.warning("ledger database still unavailable: %r", exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, PROBE_MAX_PAUSE_SECONDS)
                continue
            log.info("ledger database is back; accepting events again")
            self._down = False
            self._metrics.database_up.set(1)
            return

    def _fail_queued(self, error: Exception) -> None:
        while self._queue:
            request = self._queue.popleft()
            self._pending_events -= len(request.events)
            self._metrics.events_rejected.labels("database_down").inc(len(request.events))
            _reject(request, error)
        self._metrics.pending.set(self._pending_events)

    def _reject_all(self, batch: list[_Request], error: Exception, *, reason: str) -> None:
        for request in batch:
            self._metrics.events_rejected.labels(reason).inc(len(request.events))
            _reject(request, error)

    def _count(self, events: Sequence[JobEvent]) -> None:
        counts: dict[str, int] = {}
        for event in events:
            counts[event.event.value] = counts.get(event.event.value, 0) + 1
        for name, count in counts.items():
            self._metrics.events_ingested.labels(name).inc(count)


def _resolve(request: _Request) -> None:
    if not request.done.done():
        request.done.set_result(None)


def _reject(request: _Request, error: Exception) -> None:
    if not request.done.done():
        request.done.set_exception(error)
