"""Plain values shared by every package: lifecycle events, ledger rows, filters and pages."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from app.redact import OFF, Redactor

ZERO = timedelta(0)
NOT_UTC = "event times must be timezone-aware UTC, got {moment!r}"
OUT_OF_RANGE = "is out of range once in UTC (years 1 to 9999)"


def as_utc(moment: datetime) -> datetime:
    """`moment` as aware UTC; one without an offset is taken to be UTC already. ValueError
    when it falls outside the years 1-9999 once in UTC (0001-01-01T00:00+01:00 does)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(OUT_OF_RANGE) from None


class EventName(enum.StrEnum):
    """What happened to a job. The order of RANK breaks ties between equal times.

    Clients report the first five and DEAD (from a death handler); the supervisor records
    REQUEUED itself, and DEAD, FAILED, SCHEDULED or LOST when the reconciler finds what became of
    a job nobody reported on. New names go last: ranks are stored in the ledger's keys, and a
    rank must stay within 1..8 (see store.ledger.event_key).
    """

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    STARTED = "started"
    FAILED = "failed"
    COMPLETE = "complete"
    REQUEUED = "requeued"
    DEAD = "dead"
    # Recorded at the time of the event it refines (the run's start, or its enqueue), so any
    # later news of the job wins over it.
    LOST = "lost"


CLIENT_EVENTS = frozenset(EventName) - {EventName.REQUEUED, EventName.LOST}
# Events that end a run: the job stopped executing, successfully or not.
FINISHED_EVENTS = frozenset({EventName.COMPLETE, EventName.FAILED, EventName.DEAD})


# Lifecycle order: at the same event time the later stage wins, so duplicates and
# out-of-order arrivals always settle on the same status.
RANK: dict[EventName, int] = {name: rank for rank, name in enumerate(EventName, start=1)}


class JobStatus(enum.StrEnum):
    """A ledger row's status: the newest event's name, or a state the supervisor derived."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    STARTED = "started"
    FAILED = "failed"
    COMPLETE = "complete"
    DEAD = "dead"
    LOST = "lost"
    REQUEUED = "requeued"


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One validated lifecycle event. Times are timezone-aware UTC (the store relies on it)."""

    jid: str
    event: EventName
    at: datetime
    received_at: datetime
    job_class: str | None = None
    queue: str | None = None
    arguments: str | None = None
    arguments_truncated: bool = False
    # Secrets were replaced in the arguments (SUPERVISOR_REDACT_KEYS / _PATTERNS).
    arguments_redacted: bool = False
    process: str | None = None
    retry_count: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    scheduled_at: datetime | None = None
    requeued_as: str | None = None
    # What the client knew of this run when it reported: when it was enqueued (Sidekiq's
    # `enqueued_at`) and when it started. They give exact wait and run times without a lookup.
    enqueued_at: datetime | None = None
    started_at: datetime | None = None

    def __post_init__(self) -> None:
        for moment in (
            self.at,
            self.received_at,
            self.scheduled_at,
            self.enqueued_at,
            self.started_at,
        ):
            if moment is not None and moment.utcoffset() != ZERO:
                raise ValueError(NOT_UTC.format(moment=moment))

    @property
    def attempt(self) -> int:
        """Which run of the job this event belongs to: 0 before any run, 1 for the first.

        Sidekiq's retry_count is absent on the first run and 0 on the first retry.
        """
        if self.event in (
            EventName.QUEUED,
            EventName.SCHEDULED,
            EventName.REQUEUED,
            EventName.LOST,
        ):
            return 0
        return 1 if self.retry_count is None else self.retry_count + 2


@dataclass(frozen=True, slots=True)
class RunTimes:
    """A ledger row's run times as read back after a batch committed (aware UTC, or None).

    `enqueued_at` is the job's first enqueue and `started_at` its latest start; `attempts` says
    how many runs the row has seen (1 for the first run; more only when a retry was reported).
    """

    enqueued_at: datetime | None
    started_at: datetime | None
    attempts: int


@dataclass(frozen=True, slots=True)
class EventLimits:
    """Soft limits applied to accepted events: longer values are stored truncated, and
    secrets are stored redacted."""

    max_arguments_bytes: int
    max_error_chars: int
    redactor: Redactor = OFF


@dataclass(frozen=True, slots=True)
class StuckRule:
    """A started run is stuck once it started more than its class's threshold before `now`
    (`after_by_class`, else `after`): the reconciler's stuck gauge and the GUI's filter."""

    now: datetime
    after: timedelta
    after_by_class: Mapping[str, timedelta] = field(default_factory=dict, hash=False)

    @property
    def latest_cutoff(self) -> datetime:
        """No run that started at or after this is stuck, whatever its class."""
        return self.now - min((self.after, *self.after_by_class.values()))

    def cutoff_for(self, job_class: str | None) -> datetime:
        """A run of `job_class` that started before this is stuck."""
        return self.now - self.after_by_class.get(job_class or "", self.after)


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What the console and the read API narrow the ledger by; every field is optional.
    `jid` names one job (the GUI's requeue of a single job); `stuck` keeps stuck runs only."""

    arguments: str | None = None
    statuses: tuple[JobStatus, ...] = ()
    queue: str | None = None
    job_class: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    jid: str | None = None
    stuck: StuckRule | None = None

    def with_statuses(self, *statuses: JobStatus) -> JobFilter:
        return replace(self, statuses=statuses)


@dataclass(frozen=True, slots=True)
class Job:
    """A ledger row."""

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

    @property
    def wait_seconds(self) -> float | None:
        return _seconds_between(self.enqueued_at, self.started_at)

    @property
    def run_seconds(self) -> float | None:
        return _seconds_between(self.started_at, self.completed_at)

    @property
    def total_seconds(self) -> float | None:
        return _seconds_between(self.enqueued_at, self.completed_at)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One stored event of a job, as received."""

    event: EventName
    at: datetime
    received_at: datetime
    queue: str | None
    job_class: str | None
    process: str | None
    retry_count: int | None
    error_class: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of jobs, newest first; pass next_cursor back for the next one. `stopped` means
    an argument search hit its time limit before finishing (the page is then empty)."""

    items: list[Job]
    next_cursor: str | None
    stopped: bool = False


def next_offset(offset: int, count: int, total: int) -> int | None:
    """Where the page after one of `count` entries from `offset` (of `total`) starts; None on
    the last page."""
    end = offset + count
    return end if count and end < total else None


@dataclass(frozen=True, slots=True)
class Percentiles:
    """A duration distribution in seconds over `count` jobs (None when count is 0)."""

    count: int
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None


@dataclass(frozen=True, slots=True)
class DurationSummary:
    """Percentiles of queued→completed and started→completed over the newest completions."""

    queued_to_completed: Percentiles
    started_to_completed: Percentiles
    sample_limit: int
    jobs: list[Job] = field(default_factory=list)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


# Sidekiq's Redis, as one snapshot --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One Sidekiq queue: its length and the age of its oldest job (Sidekiq's Queue#latency)."""

    name: str
    size: int
    latency_seconds: float


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One live Sidekiq process (its heartbeat hash still exists)."""

    identity: str
    hostname: str
    pid: int | None
    tag: str | None
    queues: tuple[str, ...]
    labels: tuple[str, ...]
    concurrency: int
    busy: int
    quiet: bool
    rss_kb: int | None
    beat: datetime | None
    started_at: datetime | None
    version: str | None
    embedded: bool = False


@dataclass(frozen=True, slots=True)
class BusyJob:
    """A job running now, from its process's busy-work hash (up to one heartbeat stale)."""

    process: str
    tid: str
    queue: str
    jid: str | None
    job_class: str | None
    run_at: datetime
    payload: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the sampler read from Sidekiq's Redis in one tick."""

    taken_at: datetime
    processed: int
    failed: int
    scheduled: int
    retries: int
    dead: int
    processes_size: int
    queues: tuple[QueueStats, ...]
    processes: tuple[ProcessInfo, ...]
    busy_jobs: tuple[BusyJob, ...]
    round_trips: int = 0

    @property
    def enqueued(self) -> int:
        return sum(queue.size for queue in self.queues)

    def running(self, stale_after: timedelta) -> dict[str, str]:
        """jid -> process identity of jobs running now: in the busy-work hash of a process
        whose heartbeat is recent (or unknown). After a kill -9 the hashes stay in Redis until
        they expire, with the heartbeat stopped."""
        stale_before = self.taken_at - stale_after
        live = {
            process.identity
            for process in self.processes
            if process.beat is None or process.beat >= stale_before
        }
        return {job.jid: job.process for job in self.busy_jobs if job.jid and job.process in live}

    @property
    def workers(self) -> int:
        return sum(process.concurrency for process in self.processes)

    @property
    def busy(self) -> int:
        return sum(process.busy for process in self.processes)


class SnapshotSource(Protocol):
    """Who holds the newest snapshot (the sampler): the Prometheus collector and the routes
    read it here, none keeps a copy."""

    @property
    def latest(self) -> Snapshot | None: ...
