"""State-changing routes (admin credentials): requeue from the ledger, actions on the retry,
scheduled and dead sets, quiet/stop processes, and the preStop drain."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, Field, StrictBool, model_validator

from app.api.schemas import ADMIN_ERRORS, RETRY_AFTER, ErrorOut, JobOut, error_response
from app.deps import ManagerDep, ResourcesDep, require_admin
from app.domain import JobFilter
from app.errors import InvalidInput
from app.sidekiq.commands import (
    Action,
    Control,
    EntryKey,
    Signal,
    SortedSet,
    drain_host,
    signal_targets,
    uses_milliseconds,
)
from app.sidekiq.reader import read_snapshot

router = APIRouter(
    prefix="/api/v1",
    tags=["control"],
    dependencies=[Depends(require_admin)],
    responses=ADMIN_ERRORS,
)
BAD_BODY = error_response(400, "The body is not valid JSON.")

SETS = {"retries": SortedSet.RETRY, "scheduled": SortedSet.SCHEDULE, "dead": SortedSet.DEAD}
NO_KILL_FROM_DEAD = "dead entries are already dead: use retry or delete"
KEYS_OR_ALL = "give `keys` (the entries' <score>-<jid> keys) or `all: true`, not both"
NOT_A_BOOLEAN = "must be a JSON boolean (true or false): a switch that acts takes nothing else"


def _explicit_boolean(value: object) -> object:
    """0, "no", "off" or null are no answer to "really act?": only true or false are."""
    if not isinstance(value, bool):
        raise ValueError(NOT_A_BOOLEAN)
    return value


# A switch that makes a call act (push jobs, empty a set): never coerced from anything else.
Switch = Annotated[StrictBool, BeforeValidator(_explicit_boolean)]


class RequeueIn(BaseModel):
    """Which uncompleted (started or lost) ledger jobs to push back into Sidekiq."""

    arguments: str | None = None
    queue: str | None = None
    job_class: str | None = None
    dry_run: Switch = True
    limit: int = Field(default=100, ge=1, le=10_000)


class RequeueItemOut(BaseModel):
    job: JobOut
    new_jid: str | None
    skipped: str | None


class RequeueOut(BaseModel):
    dry_run: bool
    requeued: int
    skipped: int
    items: list[RequeueItemOut]


class SetActionIn(BaseModel):
    action: Action
    keys: list[str] = Field(default_factory=list, max_length=1_000)
    all: Switch = False
    limit: int = Field(default=1_000, ge=1, le=100_000, description="Most entries for `all`.")

    @model_validator(mode="after")
    def _keys_or_all(self) -> SetActionIn:
        if bool(self.keys) == self.all:
            raise ValueError(KEYS_OR_ALL)
        return self


class SetActionOut(BaseModel):
    action: Action
    set: str
    done: int = Field(description="Entries this call moved, deleted or killed.")
    missed: list[str] = Field(description="Keys already gone (Sidekiq or someone else got there).")
    more: bool = Field(description="`all` stopped at `limit` with entries left.")


class SignalOut(BaseModel):
    signal: Literal["quiet", "stop"]
    processes: list[str]


class DrainOut(BaseModel):
    host: str
    processes: int
    quieting: int
    running: int
    queues: list[str]
    queued_jobs: int | None
    drained: bool


@router.post(
    "/jobs/requeue",
    response_model=RequeueOut,
    summary="Requeue uncompleted jobs",
    responses=BAD_BODY,
)
async def requeue(body: RequeueIn, manager: ManagerDep) -> RequeueOut:
    """Dry run by default: says what would be pushed (and what is skipped, and why)."""
    flt = JobFilter(arguments=body.arguments, queue=body.queue, job_class=body.job_class)
    report = await manager.restart_uncompleted_jobs(flt, dry_run=body.dry_run, limit=body.limit)
    items = [
        RequeueItemOut(job=JobOut.of(item.job), new_jid=item.new_jid, skipped=item.skipped)
        for item in report.items
    ]
    return RequeueOut(
        dry_run=report.dry_run,
        requeued=len(report.requeued),
        skipped=len(report.skipped),
        items=items,
    )


@router.post(
    "/{set_name}/actions",
    response_model=SetActionOut,
    summary="Retry, delete or kill",
    responses=BAD_BODY,
)
async def set_action(
    set_name: Literal["retries", "scheduled", "dead"], body: SetActionIn, found: ResourcesDep
) -> SetActionOut:
    """Each entry is moved exactly once, even racing Sidekiq's poller or another user."""
    source = SETS[set_name]
    if source is SortedSet.DEAD and body.action is Action.KILL:
        raise InvalidInput({"action": NO_KILL_FROM_DEAD})
    control = Control(found.redis, found.keys)
    ms = uses_milliseconds(found.sampler.latest)
    if body.all:
        result = await control.apply_to_all(source, body.action, limit=body.limit, milliseconds=ms)
    else:
        keys = {_entry_key(key): key for key in body.keys}
        result = await control.apply_to_keys(source, body.action, keys, milliseconds=ms)
    missed = [keys[key] for key in result.missed] if not body.all else []
    return SetActionOut(
        action=body.action, set=set_name, done=result.done, missed=missed, more=result.more
    )


def _entry_key(key: str) -> EntryKey:
    try:
        return EntryKey.parse(key)
    except ValueError as exc:
        raise InvalidInput({"keys": str(exc)}) from None


@router.post(
    "/processes/{signal}",
    response_model=SignalOut,
    summary="Quiet or stop processes",
    responses=error_response(404, "An `identity` is not a live Sidekiq process."),
)
async def signal_processes(
    signal: Literal["quiet", "stop"],
    found: ResourcesDep,
    identity: Annotated[list[str] | None, Query(description="Default: every process.")] = None,
) -> SignalOut:
    """Sidekiq acts on the signal at its next heartbeat (5 s on 6.x, 10 s on 7+). 404 for a
    process that is not live; 422 for an embedded one (it takes no signals)."""
    targets = signal_targets(await read_snapshot(found.redis, found.keys), identity or [])
    await Control(found.redis, found.keys).signal(
        targets, Signal.QUIET if signal == "quiet" else Signal.STOP
    )
    return SignalOut(signal=signal, processes=targets)


@router.post(
    "/drain",
    response_model=DrainOut,
    summary="Quiet a host's Sidekiq and say whether it may stop (preStop)",
    responses={
        503: {
            "model": DrainOut | ErrorOut,
            "description": "Not drained yet (DrainOut): call again after Retry-After. Or "
            "Sidekiq's Redis did not answer (ErrorOut).",
            "headers": RETRY_AFTER,
        }
    },
)
async def drain(
    found: ResourcesDep,
    host: Annotated[str, Query(description="The pod's hostname (Sidekiq's `hostname`).")],
    wait_for_queues: bool = False,
) -> JSONResponse:
    """200 once every process on `host` is quiet and runs no job (and, with
    wait_for_queues, the queues it serves are empty); 503 with Retry-After until then, so
    `until curl -fsS -X POST .../api/v1/drain?host=$(hostname); do sleep 2; done` waits."""
    status = await drain_host(found.redis, found.keys, host, wait_for_queues=wait_for_queues)
    body = DrainOut(
        host=status.host,
        processes=status.processes,
        quieting=status.quieting,
        running=status.running,
        queues=list(status.queues),
        queued_jobs=status.queued_jobs,
        drained=status.drained,
    )
    code = 200 if status.drained else 503
    headers = {} if status.drained else {"Retry-After": "2"}
    return JSONResponse(body.model_dump(), status_code=code, headers=headers)
