"""Sidekiq's state for the GUI and CLI: stats, queues, processes, busy jobs, paged sets, history."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.deps import require_reader

router = APIRouter(prefix="/api/v1", tags=["sidekiq"], dependencies=[Depends(require_reader)])
