"""Stuck and lost jobs: what became of jobs nobody reported on, at a bounded cost per tick.

Runs on the sampler leader after each snapshot. A *round* takes up to `batch` candidates from
the ledger: runs started more than the grace period ago that no live process is running (its
busy-work hash), and queued jobs older than their queue's oldest job (a FIFO queue cannot
still hold them). Before calling any of them lost, the round looks for them where Sidekiq keeps
jobs it is not running: `retry` and `dead` for started runs (the original Faraday middleware posts
nothing when a job raises), `schedule` for queued ones (it cannot tell scheduled from queued).
It does so with a paced ZSCAN, `scan_count` entries per set per tick, never a full read. When
every set has been passed over, the round writes what it learnt as events through the ledger's
order-independent merge: `failed` (and `dead`) with Sidekiq's error, `scheduled`, or `lost`.
Any later news of a job (it started again, completed, was requeued) still wins over them.

A job is called lost only once it has been missing (a candidate, running on no live process)
in every snapshot for the grace period since the first one that missed it: Sidekiq's heartbeat
stops listing a finished job before the middleware's background sender posts its `complete`
(a second or more later, longer while it retries), and a verdict must not race that report.
Until then it waits, and the next round of its kind takes it again before any new candidate.

Each tick also recounts the stuck gauge (started longer ago than the class's threshold) and
the lost gauge (jobs now `lost`), so they agree with the ledger's lists as of the last tick.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain import EventName, JobEvent, JobStatus, Snapshot, StuckRule
from app.exporter.jobs import JobMetrics
from app.redact import OFF, Redactor
from app.sidekiq.browse import SortedEntry, scan_step
from app.sidekiq.commands import SortedSet
from app.sidekiq.keys import Keys
from app.store.db import session_connection
from app.store.ledger_writes import MICROSECOND, write_events
from app.store.overdue import (
    LabelCounts,
    OpenRun,
    RunCursor,
    any_stuck,
    current_runs,
    lost_counts,
    queued_runs,
    started_runs,
    stuck_counts,
)

log = logging.getLogger(__name__)

# Where each kind of candidate can be when it is not running, in the order they are scanned.
SETS_FOR = {
    JobStatus.STARTED: (SortedSet.RETRY, SortedSet.DEAD),
    JobStatus.QUEUED: (SortedSet.SCHEDULE,),
}


@dataclass(frozen=True, slots=True)
class ReconcileConfig:
    stuck_after: timedelta
    stuck_after_by_class: Mapping[str, timedelta]
    lost_grace: timedelta
    process_stale: timedelta
    batch: int
    scan_count: int
    max_error_chars: int
    # Sidekiq's error messages hold what the job's code put there: redacted before storing.
    redactor: Redactor = OFF


@dataclass(frozen=True, slots=True)
class Verdicts:
    """What a closed round decided, by jid."""

    failed: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    scheduled: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    @classmethod
    def merged(cls, parts: list[Verdicts]) -> Verdicts:
        return cls(
            failed=[jid for part in parts for jid in part.failed],
            dead=[jid for part in parts for jid in part.dead],
            scheduled=[jid for part in parts for jid in part.scheduled],
            lost=[jid for part in parts for jid in part.lost],
        )


@dataclass(frozen=True, slots=True)
class _Missing:
    """A candidate missing for less than the grace: the row as read, and the time of the
    first snapshot that missed it."""

    run: OpenRun
    since: datetime


@dataclass(slots=True)
class _Round:
    runs: dict[str, OpenRun]
    # Sets still to pass over, with the ZSCAN cursor to continue from.
    cursors: dict[SortedSet, int]
    # When each candidate was first seen missing (in no live process's busy-work hash).
    missing_since: dict[str, datetime]
    found: dict[str, tuple[SortedSet, SortedEntry]] = field(default_factory=dict)

    def forget(self, running: set[str]) -> None:
        """Drop candidates running again: missing resumes, if ever, from a later snapshot."""
        for jid in running.intersection(self.runs):
            del self.runs[jid], self.missing_since[jid]


def queue_cutoffs(snapshot: Snapshot, grace: timedelta) -> dict[str, datetime]:
    """Per queue Sidekiq knows: a queued job enqueued before this is older than the queue's
    oldest job (or the queue is empty), so the queue cannot still hold it."""
    now = snapshot.taken_at
    cutoffs: dict[str, datetime] = {}
    for queue in snapshot.queues:
        oldest = now - timedelta(seconds=queue.latency_seconds) if queue.size else now
        cutoffs[queue.name] = min(now, oldest) - grace
    return cutoffs


class Reconciler:
    """Keeps each kind's round between ticks; only the leader calls `tick`.

    Started runs and queued jobs have rounds of their own: a long pass over `schedule` (only
    queued candidates need it) never holds up the next round of started runs.
    """

    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
        sessions: async_sessionmaker[AsyncSession],
        metrics: JobMetrics,
        config: ReconcileConfig,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._sessions = sessions
        self._metrics = metrics
        self._config = config
        self._rounds: dict[JobStatus, _Round] = {}
        self._after: RunCursor | None = None
        # Per kind, the candidates of its last closed round still missing for less than the
        # grace: at most `batch`, since the next round takes them before any new candidate.
        self._waiting: dict[JobStatus, dict[str, _Missing]] = {}

    def stand_down(self) -> None:
        """Another replica leads now: forget the rounds and stop exporting the gauges."""
        self._rounds.clear()
        self._after = None
        self._waiting.clear()
        self._metrics.clear_reconcile_gauges()

    async def tick(self, snapshot: Snapshot) -> Verdicts | None:
        """Advance each kind's round (opening one if none is under way); the verdicts of the
        rounds that closed this tick, or None when none did."""
        running = set(snapshot.running(self._config.process_stale))
        closed: list[Verdicts] = []
        for kind in SETS_FOR:
            round_ = self._rounds.pop(kind, None) or await self._open(kind, snapshot, running)
            if round_ is None:
                continue
            round_.forget(running)
            await self._scan(round_)
            if round_.cursors:
                self._rounds[kind] = round_
            else:
                closed.append(await self._close(kind, round_, running, snapshot.taken_at))
        await self._refresh_gauges(snapshot.taken_at)
        return Verdicts.merged(closed) if closed else None

    async def _open(self, kind: JobStatus, snapshot: Snapshot, running: set[str]) -> _Round | None:
        """A round of the candidates still waiting (first) and of new ones, `batch` at most."""
        waiting = {j: m for j, m in self._waiting.pop(kind, {}).items() if j not in running}
        runs = {jid: missing.run for jid, missing in waiting.items()}
        since = {jid: missing.since for jid, missing in waiting.items()}
        room = self._config.batch - len(waiting)
        if room > 0:
            async with self._sessions() as session:
                found = await self._candidates(session, kind, snapshot, running | set(runs), room)
            for run in found:
                if run.jid not in running and run.jid not in runs:
                    runs[run.jid] = run
                    since[run.jid] = snapshot.taken_at
        if not runs:
            return None
        return _Round(runs=runs, cursors=dict.fromkeys(SETS_FOR[kind], 0), missing_since=since)

    async def _candidates(
        self,
        session: AsyncSession,
        kind: JobStatus,
        snapshot: Snapshot,
        skip: set[str],
        limit: int,
    ) -> list[OpenRun]:
        if kind is JobStatus.STARTED:
            return await self._started_candidates(session, snapshot, skip, limit)
        return await queued_runs(
            session,
            cutoffs=queue_cutoffs(snapshot, self._config.lost_grace),
            elsewhere_before=snapshot.taken_at - self._config.lost_grace,
            limit=limit,
        )

    async def _started_candidates(
        self, session: AsyncSession, snapshot: Snapshot, skip: set[str], limit: int
    ) -> list[OpenRun]:
        """The next page of the paced pass over started runs, minus those in `skip` (running
        now, or already candidates)."""
        page = await started_runs(
            session,
            before=snapshot.taken_at - self._config.lost_grace,
            after=self._after,
            limit=limit,
            skip=skip,
        )
        # A full page means more may follow: continue after it next round, else start over.
        self._after = page.last if page.full else None
        return page.runs

    async def _scan(self, round_: _Round) -> None:
        """One ZSCAN step over each set still to pass; note candidates found in it."""
        for name, cursor in list(round_.cursors.items()):
            key = self._keys.key(name.value)
            cursor, entries = await scan_step(
                self._redis, key, cursor, count=self._config.scan_count
            )
            for entry in entries:
                jid = entry.job.jid
                if jid in round_.runs and name in SETS_FOR[round_.runs[jid].status]:
                    round_.found[jid] = (name, entry)
            if cursor == 0:
                del round_.cursors[name]
            else:
                round_.cursors[name] = cursor

    async def _close(
        self, kind: JobStatus, round_: _Round, running: set[str], now: datetime
    ) -> Verdicts:
        runs = round_.runs
        async with self._sessions() as session:
            current = await current_runs(session, runs)
        verdicts = Verdicts()
        events: list[JobEvent] = []
        waiting: dict[str, _Missing] = {}
        for jid, run in runs.items():
            if jid in running or current.get(jid) != run:
                continue  # news came while the round went on: it ran, finished or moved on
            where = round_.found.get(jid)
            if where is None:
                since = round_.missing_since[jid]
                if now - since < self._config.lost_grace:
                    waiting[jid] = _Missing(run, since)  # its own report may be on its way
                    continue
                verdicts.lost.append(jid)
                events.append(_lost(run, now))
                continue
            name, entry = where
            if name is SortedSet.SCHEDULE:
                verdicts.scheduled.append(jid)
                events.append(_scheduled(run, entry, now))
                continue
            failure = _failure(run, entry, now, dead=name is SortedSet.DEAD)
            events.extend(_bounded(event, self._config) for event in failure)
            (verdicts.dead if name is SortedSet.DEAD else verdicts.failed).append(jid)
        self._waiting[kind] = waiting
        if events:
            await self._write(events, verdicts, runs)
        return verdicts

    async def _write(
        self, events: list[JobEvent], verdicts: Verdicts, runs: Mapping[str, OpenRun]
    ) -> None:
        """Write a round's verdicts to the ledger, then count them in the job metrics."""
        await write_events(functools.partial(session_connection, self._sessions), events)
        # Labelled for the metrics only: in the ledger, an event that names a class must
        # carry the arguments too, and these come without them.
        labelled = [_labelled(e, runs[e.jid]) for e in events]
        self._metrics.observe(labelled, {})
        for jid in verdicts.lost:
            self._metrics.lost_detected(runs[jid].queue, runs[jid].job_class)
        log.info(
            "reconciled %d jobs: %d failed, %d dead, %d scheduled, %d lost",
            len(events),
            len(verdicts.failed),
            len(verdicts.dead),
            len(verdicts.scheduled),
            len(verdicts.lost),
        )

    async def _refresh_gauges(self, now: datetime) -> None:
        """Count stuck and lost jobs as of `now`, every tick: the gauges then agree with the
        ledger's own lists (`?status=lost`, the GUI's stuck filter) as of the last tick.

        The lost count reads the lost entries of a covering index. The stuck count reads every
        started entry, so it runs only when a cheap probe found a stuck run at all."""
        after, by_class = self._config.stuck_after, self._config.stuck_after_by_class
        async with self._sessions() as session:
            stuck: LabelCounts = {}
            if await any_stuck(session, rule=StuckRule(now, after, by_class)):
                stuck = await stuck_counts(session, now=now, after=after, after_by_class=by_class)
            lost = await lost_counts(session)
        self._metrics.set_stuck(stuck)
        self._metrics.set_lost(lost)


def _bounded(event: JobEvent, config: ReconcileConfig) -> JobEvent:
    """Sidekiq's error as the ledger stores it: class within its column, message redacted and
    cut short."""
    error_class = event.error_class[:255] if event.error_class else event.error_class
    message = config.redactor.text(event.error_message)
    message = message[: config.max_error_chars] if message else message
    return replace(event, error_class=error_class, error_message=message)


def _labelled(event: JobEvent, run: OpenRun) -> JobEvent:
    return replace(event, queue=run.queue, job_class=run.job_class)


def _lost(run: OpenRun, now: datetime) -> JobEvent:
    # At the time of the status it refines (rank above every other event): any later news wins.
    return JobEvent(run.jid, EventName.LOST, run.status_at, now, started_at=run.started_at)


def _scheduled(run: OpenRun, entry: SortedEntry, now: datetime) -> JobEvent:
    # Just after the queued post it turned out to be (SCHEDULED ranks below QUEUED).
    return JobEvent(
        run.jid, EventName.SCHEDULED, run.status_at + MICROSECOND, now, scheduled_at=entry.at
    )


def _failure(run: OpenRun, entry: SortedEntry, now: datetime, *, dead: bool) -> list[JobEvent]:
    """The run's failure as Sidekiq recorded it; for the dead set, its death too."""
    job = entry.job
    # Sidekiq keeps the first failure in failed_at and the latest in retried_at. After the
    # start the run ends, whatever the clocks say.
    ended = job.retried_at or job.failed_at or entry.at or now
    at = max(ended, run.status_at + MICROSECOND)
    # The entry's retry_count counts failures from 0; events carry the count the run saw.
    seen = None if not job.retry_count else job.retry_count - 1
    failed = JobEvent(
        run.jid,
        EventName.FAILED,
        at,
        now,
        retry_count=seen,
        error_class=job.error_class,
        error_message=job.error_message,
        enqueued_at=run.enqueued_at,
        started_at=run.started_at,
    )
    if not dead:
        return [failed]
    return [failed, replace(failed, event=EventName.DEAD, enqueued_at=None, started_at=None)]
