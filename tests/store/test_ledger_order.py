"""Order independence: any permutation, repetition or batching of a job's events leaves the
same ledger row (ARCHITECTURE.md, "The job ledger"), on MariaDB and SQLite alike."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain import EventName, JobEvent
from app.store.ledger_writes import write_batch
from app.store.tables import JobRow

FAILURES = (EventName.FAILED, EventName.DEAD)
BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

descriptors = st.none() | st.fixed_dictionaries(
    {
        "job_class": st.sampled_from(["HardJob", "MailerJob"]),
        "queue": st.sampled_from(["default", "critical", "retry_q"]),
        "arguments": st.sampled_from(["[]", "[1]", '["a",{"b":2}]']),
    }
)


@st.composite
def job_events(draw: st.DrawFn) -> list[JobEvent]:
    """Events of one job with distinct (time, name) pairs; times may collide across names."""
    keys = draw(
        st.sets(
            st.tuples(st.integers(0, 6), st.sampled_from(list(EventName))), min_size=1, max_size=7
        )
    )
    events = []
    for offset, name in sorted(keys):
        drawn = draw(descriptors)
        described: dict[str, Any] = drawn if drawn is not None else {}
        at = BASE + timedelta(milliseconds=250 * offset)
        events.append(
            JobEvent(
                jid="",
                event=name,
                at=at,
                received_at=at,
                process=draw(st.none() | st.sampled_from(["host-a:1:aa", "host-b:2:bb"])),
                retry_count=draw(st.none() | st.integers(0, 3)),
                # A failed and a dead event at the same microsecond are one failure reported
                # twice (middleware and death handler or reconciler), so they carry one error.
                error_class="RuntimeError" if name in FAILURES else None,
                error_message=f"boom at {offset}" if name in FAILURES else None,
                scheduled_at=at + timedelta(hours=1) if name is EventName.SCHEDULED else None,
                # What a client knew of the run: its enqueue (on started) and start (on finish).
                enqueued_at=at - timedelta(seconds=1)
                if name is EventName.STARTED and draw(st.booleans())
                else None,
                started_at=at - timedelta(milliseconds=100)
                if name in (EventName.COMPLETE, *FAILURES) and draw(st.booleans())
                else None,
                **described,
            )
        )
    return events


def for_job(events: list[JobEvent], jid: str) -> list[JobEvent]:
    return [replace(event, jid=jid) for event in events]


async def settled_row(engine: AsyncEngine, events: list[JobEvent], batches: list[int]) -> Any:
    """Write `events` split at the given cut points (one transaction each); return the row."""
    cuts = sorted({0, len(events), *(c % (len(events) + 1) for c in batches)})
    async with engine.connect() as conn:
        for start, end in itertools.pairwise(cuts):
            await write_batch(conn, events[start:end])
        table = JobRow.__table__
        row = (await conn.execute(select(table).where(table.c.jid == events[0].jid))).one()
    values = dict(row._mapping)
    values.pop("jid")
    return values


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(events=job_events(), data=st.data())
async def test_any_order_and_repetition_settle_on_the_same_row(
    engine: AsyncEngine, events: list[JobEvent], data: st.DataObject
) -> None:
    reference = await settled_row(engine, for_job(events, uuid.uuid4().hex), [])
    repeated = data.draw(st.lists(st.sampled_from(events), max_size=6), label="repeats")
    shuffled = data.draw(st.permutations(events + repeated), label="order")
    batches = data.draw(st.lists(st.integers(0, 20), max_size=3), label="batch cuts")
    again = await settled_row(engine, for_job(shuffled, uuid.uuid4().hex), batches)
    assert again == reference


async def test_newest_event_decides_the_status_and_ties_follow_the_lifecycle(
    engine: AsyncEngine,
) -> None:
    at = BASE
    same_time = [
        JobEvent(jid="tie", event=EventName.COMPLETE, at=at, received_at=at),
        JobEvent(jid="tie", event=EventName.STARTED, at=at, received_at=at),
        JobEvent(jid="tie", event=EventName.QUEUED, at=at, received_at=at),
    ]
    late_queued = JobEvent(
        jid="late", event=EventName.QUEUED, at=at, received_at=at + timedelta(seconds=9)
    )
    started = JobEvent(
        jid="late", event=EventName.STARTED, at=at + timedelta(seconds=1), received_at=at
    )
    tie = await settled_row(engine, same_time, [])
    late = await settled_row(engine, [started, late_queued], [1])
    assert tie["status"] == "complete"
    assert late["status"] == "started"
    assert late["enqueued_at"] == at.replace(tzinfo=None)
