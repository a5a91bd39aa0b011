"""Response models of the Sidekiq read API (`<Thing>Out`): the summary bar, queues, processes,
running jobs, pages of the sorted sets and queues, and sample history."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.api.schemas import DomainOut
from app.domain import BusyJob, ProcessInfo, Snapshot
from app.sidekiq.browse import JobRecord, QueueEntry, SortedEntry

Direction = Literal["asc", "desc"]
FROM_SAMPLER = "True when the sampler's snapshot was fresh enough; False for a read just now."


class StatsOut(BaseModel):
    """Sidekiq's summary bar (Stats), as of `taken_at`."""

    taken_at: datetime
    from_sampler: bool = Field(description=FROM_SAMPLER)
    processed: int
    failed: int
    busy: int = Field(description="Σ of each live process's busy count.")
    enqueued: int = Field(description="Σ of the queue lengths.")
    retries: int
    scheduled: int
    dead: int
    processes: int = Field(description="SCARD processes (unpruned, as Sidekiq counts).")
    workers: int = Field(description="Σ of each live process's concurrency.")
    default_latency_seconds: float

    @classmethod
    def of(cls, snap: Snapshot, *, from_sampler: bool) -> StatsOut:
        default = next((q.latency_seconds for q in snap.queues if q.name == "default"), 0.0)
        return cls(
            taken_at=snap.taken_at,
            from_sampler=from_sampler,
            processed=snap.processed,
            failed=snap.failed,
            busy=snap.busy,
            enqueued=snap.enqueued,
            retries=snap.retries,
            scheduled=snap.scheduled,
            dead=snap.dead,
            processes=snap.processes_size,
            workers=snap.workers,
            default_latency_seconds=default,
        )


class QueueOut(DomainOut):
    name: str
    size: int
    latency_seconds: float = Field(description="Age of the oldest job (0 when empty).")


class QueuesOut(BaseModel):
    taken_at: datetime
    from_sampler: bool = Field(description=FROM_SAMPLER)
    items: list[QueueOut]


class ProcessOut(BaseModel):
    """A live process: its heartbeat fields plus the jobs listed in its busy-work hash."""

    identity: str
    hostname: str
    pid: int | None
    tag: str | None
    queues: list[str]
    labels: list[str]
    concurrency: int
    busy: int = Field(description="The busy count of its last heartbeat.")
    running: int = Field(description="Jobs in its busy-work hash (see /api/v1/busy).")
    quiet: bool
    rss_kb: int | None
    beat: datetime | None
    started_at: datetime | None
    version: str | None
    embedded: bool

    @classmethod
    def of(cls, process: ProcessInfo, *, running: int) -> ProcessOut:
        fields = {name: getattr(process, name) for name in cls.model_fields if name != "running"}
        return cls.model_validate({**fields, "running": running})


class ProcessesOut(BaseModel):
    taken_at: datetime
    from_sampler: bool = Field(description=FROM_SAMPLER)
    items: list[ProcessOut]


class BusyJobOut(BaseModel):
    """A running job, as of its process's last heartbeat."""

    process: str
    tid: str
    queue: str
    jid: str | None
    job_class: str | None
    run_at: datetime
    elapsed_seconds: float = Field(description="Seconds from run_at to taken_at.")
    args: Any = Field(description="The payload's args (null when the payload is not JSON).")
    payload: str

    @classmethod
    def of(cls, job: BusyJob, record: JobRecord, *, taken_at: datetime) -> BusyJobOut:
        return cls(
            process=job.process,
            tid=job.tid,
            queue=job.queue,
            jid=job.jid,
            job_class=job.job_class,
            run_at=job.run_at,
            elapsed_seconds=(taken_at - job.run_at).total_seconds(),
            args=record.args,
            # The record's bytes: the payload itself, or with its secrets redacted.
            payload=record.raw.decode("utf-8", errors="replace"),
        )


class BusyOut(BaseModel):
    taken_at: datetime
    from_sampler: bool = Field(description=FROM_SAMPLER)
    items: list[BusyJobOut]


class JobRecordOut(BaseModel):
    """A stored job payload. When it is not a job object, only `raw` and `problem` are set."""

    jid: str | None
    job_class: str | None = Field(description="`wrapped` (ActiveJob) or `class`.")
    queue: str | None
    args: Any
    created_at: datetime | None
    enqueued_at: datetime | None
    failed_at: datetime | None
    retried_at: datetime | None
    retry_count: int | None
    error_class: str | None
    error_message: str | None
    raw: str = Field(
        description="The exact stored JSON (what a ZREM or LREM needs), unless `redacted`."
    )
    raw_base64: str | None = Field(
        description="The stored bytes in base64, only when they are not valid UTF-8."
    )
    problem: str | None = Field(description="Why the raw text could not be read as a job.")
    redacted: bool = Field(
        description="Secrets were replaced (SUPERVISOR_REDACT_KEYS / _PATTERNS): `raw` is then "
        "the redacted JSON, not the stored bytes."
    )

    @staticmethod
    def fields_of(record: JobRecord) -> dict[str, Any]:
        names = set(JobRecordOut.model_fields) - {"raw", "raw_base64"}
        try:
            raw, raw_base64 = record.raw.decode(), None
        except UnicodeDecodeError:
            raw = record.raw.decode(errors="replace")
            raw_base64 = base64.b64encode(record.raw).decode()
        fields = {name: getattr(record, name) for name in names}
        return {**fields, "raw": raw, "raw_base64": raw_base64}


class SetEntryOut(JobRecordOut):
    key: str = Field(description='The Web UI\'s address of the entry: "<score>-<jid>".')
    score: float
    at: datetime | None = Field(description="The score as a time; its meaning depends on the set.")

    @classmethod
    def of(cls, entry: SortedEntry) -> SetEntryOut:
        fields = cls.fields_of(entry.job)
        return cls.model_validate(
            {**fields, "key": entry.key, "score": entry.score, "at": entry.at}
        )


class QueueEntryOut(JobRecordOut):
    position: int = Field(description="1 is the next job a process will fetch.")

    @classmethod
    def of(cls, entry: QueueEntry) -> QueueEntryOut:
        return cls.model_validate({**cls.fields_of(entry.job), "position": entry.position})


class SetPageOut(BaseModel):
    """One page of `retry`, `schedule` or `dead`."""

    name: str = Field(description="retries, scheduled or dead, as in /api/v1/{name}/actions.")
    score_means: str
    direction: Direction = Field(description="asc: lowest score first; desc: highest first.")
    offset: int
    limit: int
    total: int = Field(description="ZCARD, or with a filter the number of matches found.")
    next_offset: int | None = Field(description="Pass as `offset` for the next page.")
    substr: str | None = Field(description="The filter, when one was given.")
    scan_complete: bool = Field(
        description="False when a filter's bounded scan stopped before the end of the set."
    )
    items: list[SetEntryOut]


class QueuePageOut(BaseModel):
    """One page of `queue:<name>`."""

    queue: str
    direction: Direction = Field(description="desc: newest first; asc: next to run first.")
    offset: int
    limit: int
    total: int = Field(description="LLEN of the queue.")
    next_offset: int | None = Field(description="Pass as `offset` for the next page.")
    items: list[QueueEntryOut]


class TotalsPointOut(DomainOut):
    sampled_at: datetime
    processed: int
    failed: int
    enqueued: int
    scheduled: int
    retry: int
    dead: int
    processes: int
    workers: int
    busy: int


class QueuePointOut(DomainOut):
    sampled_at: datetime
    size: int
    latency_seconds: float
    busy: int = Field(description="Jobs running from this queue at the sample.")


class HistoryOut(BaseModel):
    """Samples in [since, until), oldest first: `totals` without `queue`, else `queue_points`."""

    since: datetime
    until: datetime
    queue: str | None
    limit: int
    truncated: bool = Field(
        description="True when `limit` points came back; ask again from the last `sampled_at`."
    )
    totals: list[TotalsPointOut]
    queue_points: list[QueuePointOut]
