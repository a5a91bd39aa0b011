"""A ledger for the Jobs and Metrics page tests: jobs whose events are spaced from CLOCK.now
(seconds ago), written through the writer's own batch upsert."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain import EventName, JobEvent
from app.store.ledger_writes import write_batch


def _this_second() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Clock:
    """The moment a test lays its ledger out from. The pages compare with the real time, so a
    test resets it first: collected long before it runs, a window of an hour could drift."""

    now: datetime = field(default_factory=_this_second)

    def reset(self) -> None:
        self.now = _this_second()


CLOCK = Clock()


def life(
    jid: str,
    *,
    ago: float,
    wait: float | None = None,
    run: float | None = None,
    end: EventName = EventName.COMPLETE,
    queue: str = "default",
    job_class: str = "HardJob",
    arguments: str = '[1,"two"]',
) -> list[JobEvent]:
    """Queued `ago` seconds before CLOCK.now, started after `wait`, then `end` after `run`."""
    at = CLOCK.now - timedelta(seconds=ago)
    described: dict[str, Any] = {"job_class": job_class, "queue": queue, "arguments": arguments}
    events = [JobEvent(jid, EventName.QUEUED, at, at, **described)]
    if wait is not None:
        at += timedelta(seconds=wait)
        events.append(JobEvent(jid, EventName.STARTED, at, at, process="w:1", **described))
        if run is not None:
            at += timedelta(seconds=run)
            failure: dict[str, Any] = {}
            if end is not EventName.COMPLETE:
                failure = {"error_class": "RuntimeError", "error_message": "boom"}
            events.append(JobEvent(jid, end, at, at, process="w:1", **described, **failure))
    return events


def lost(jid: str, *, ago: float, job_class: str = "HardJob") -> list[JobEvent]:
    """Started `ago` seconds ago, then found lost by the reconciler (at the run's start)."""
    events = life(jid, ago=ago + 1, wait=1, job_class=job_class)
    return [*events, JobEvent(jid, EventName.LOST, events[-1].at, CLOCK.now)]


async def seed(engine: AsyncEngine, *jobs: list[JobEvent]) -> None:
    async with engine.connect() as conn:
        await write_batch(conn, [event for job in jobs for event in job])
