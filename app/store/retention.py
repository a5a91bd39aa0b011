"""Retention: delete rows older than the cutoff in small chunks, so no statement holds locks
long or scans much (each chunk is an index range read, then a delete by primary key)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.tables import JobEventRow, JobRow, QueueSampleRow, SidekiqSampleRow, stored_time


async def delete_old_samples(session: AsyncSession, cutoff: datetime, *, chunk: int) -> int:
    """At most `chunk` rows of each sample table sampled before `cutoff`; returns the count."""
    deleted = 0
    for table in (SidekiqSampleRow, QueueSampleRow):
        ids = (
            await session.scalars(
                select(table.id).where(table.sampled_at < stored_time(cutoff)).limit(chunk)
            )
        ).all()
        if ids:
            await session.execute(delete(table).where(table.id.in_(ids)))
            deleted += len(ids)
    return deleted


async def delete_old_jobs(session: AsyncSession, cutoff: datetime, *, chunk: int) -> int:
    """At most `chunk` ledger rows with no activity since `cutoff`, with their timelines."""
    jids = (
        await session.scalars(
            select(JobRow.jid).where(JobRow.last_event_at < stored_time(cutoff)).limit(chunk)
        )
    ).all()
    if jids:
        await session.execute(delete(JobEventRow).where(JobEventRow.jid.in_(jids)))
        await session.execute(delete(JobRow).where(JobRow.jid.in_(jids)))
    return len(jids)
