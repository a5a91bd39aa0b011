"""The Retries, Scheduled and Dead pages: each sorted set paged and filtered, one entry in full,
and retry now / add to queue / delete / kill for one entry, the selected or all, through Control
(so each entry moves exactly once, racing Sidekiq's poller or another user)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.access import Principal
from app.config import Settings
from app.deps import MAX_OFFSET, Offset, resources
from app.domain import next_offset
from app.errors import InvalidInput, NotFound
from app.sidekiq.browse import (
    DEAD,
    MAX_SUBSTR_CHARS,
    RETRIES,
    SCHEDULED,
    SetView,
    SortedEntry,
    decode_backtrace,
    parse_job,
    read_set,
    redact,
    redact_entries,
)
from app.sidekiq.commands import Action, ActionResult, Control, EntryKey, uses_milliseconds
from app.web.auth import OperatorDep, ViewerDep, audit
from app.web.render import done_url, pick_notice, render

router = APIRouter()

Direction = Literal["asc", "desc"]
MAX_KEY_CHARS = 200
MAX_KEYS = 1_000  # more than a page holds (MAX_PAGE_SIZE); a bound on one form
ALL_LIMIT = 100_000  # "all" moves at most this many per click, like the API's largest limit

BAD_KEY = "{key!r} is not an entry of {title}: the address must be <score>-<jid>"
GONE = (
    "{title} holds no entry {key!r} now: Sidekiq may have run it (or retried, killed or "
    "deleted it), or another user did"
)
NOT_HERE = "{title} has no {action!r} action"


@dataclass(frozen=True, slots=True)
class Verb:
    """One button: the Control action, its label for one/selected entries and for all, the
    question asked before doing it to all ({n}: "3 jobs", the set's size), and its notice code."""

    action: Action
    label: str
    all_label: str
    confirm: str
    done: str
    style: str = ""


RETRY_NOW = Verb(
    Action.RETRY,
    "Retry now",
    "Retry all",
    "Retry all {n} now (each goes to its queue)?",
    "retried",
    "primary",
)
DELETE = Verb(
    Action.DELETE,
    "Delete",
    "Delete all",
    "Delete all {n}? This cannot be undone.",
    "deleted",
    "danger",
)
KILL = Verb(Action.KILL, "Kill", "Kill all", "Kill all {n} (move them to Dead)?", "killed")
ADD_TO_QUEUE = Verb(
    Action.RETRY,
    "Add to queue",
    "Add all to queue",
    "Add all {n} to their queues now?",
    "queued",
    "primary",
)


@dataclass(frozen=True, slots=True)
class SetPageKind:
    """One of the three pages: its set, nav key (= its URL name), what its score means as a
    column heading, its buttons (Sidekiq's Web UI's), its two orders, and
    whether its entries are failures (with retry count and error columns)."""

    view: SetView
    title: str
    when: str
    verbs: tuple[Verb, ...]
    orders: dict[str, str]
    failures: bool = True

    @property
    def name(self) -> str:
        return self.view.name

    def verb(self, action: Action) -> Verb | None:
        return next((verb for verb in self.verbs if verb.action is action), None)


PAGES = {
    "retries": SetPageKind(
        RETRIES,
        "Retries",
        "Next retry",
        (RETRY_NOW, DELETE, KILL),
        {"asc": "Soonest first", "desc": "Latest first"},
    ),
    "scheduled": SetPageKind(
        SCHEDULED,
        "Scheduled",
        "Due",
        (ADD_TO_QUEUE, DELETE),
        {"asc": "Soonest first", "desc": "Latest first"},
        failures=False,
    ),
    # No kill from the morgue: its entries are dead already.
    "dead": SetPageKind(
        DEAD, "Dead", "Died", (RETRY_NOW, DELETE), {"desc": "Newest first", "asc": "Oldest first"}
    ),
}

NOTICES = {
    "retried": "Retried {n} jobs",
    "retried-one": "Retried 1 job",
    "queued": "Added {n} jobs to their queues",
    "queued-one": "Added 1 job to its queue",
    "deleted": "Deleted {n} jobs",
    "deleted-one": "Deleted 1 job",
    "killed": "Killed {n} jobs (moved to Dead)",
    "killed-one": "Killed 1 job (moved to Dead)",
    "none": "Nothing was selected: tick entries first, or use an “all” button",
}
GONE_ONE = "1 job was already gone (Sidekiq or another user got there first)"
GONE_MANY = "{n} jobs were already gone (Sidekiq or another user got there first)"
LEFT = f"Entries are left: “all” stops after {ALL_LIMIT:,} at a time; run it again for the rest"


class ListQuery:
    """A set page's query: paging, order (None: the set's default) and the substring filter."""

    def __init__(
        self,
        offset: Offset = 0,
        limit: Annotated[int | None, Query(ge=1, le=MAX_OFFSET)] = None,
        direction: Direction | None = None,
        substr: Annotated[str | None, Query(max_length=MAX_SUBSTR_CHARS)] = None,
    ) -> None:
        self.offset = offset
        self.limit = limit
        self.direction = direction
        self.substr = substr or None


ListDep = Annotated[ListQuery, Depends()]
KeyPath = Annotated[str, Path(max_length=MAX_KEY_CHARS)]


class ActionForm:
    """An action form: the action, the entries' keys (or all), and the list's filter and order
    to return to."""

    def __init__(
        self,
        action: Annotated[Action, Form()],
        key: Annotated[list[str] | None, Form(max_length=MAX_KEYS)] = None,
        all_: Annotated[bool, Form(alias="all")] = False,
        substr: Annotated[str | None, Form(max_length=MAX_SUBSTR_CHARS)] = None,
        direction: Annotated[Direction | None, Form()] = None,
    ) -> None:
        self.action = action
        self.keys = key or []
        self.all = all_
        self.substr = substr or None
        self.direction = direction


ActionDep = Annotated[ActionForm, Depends()]


@router.get("/retries")
async def retries(request: Request, _who: ViewerDep, query: ListDep) -> HTMLResponse:
    return await _list_page(request, PAGES["retries"], query)


@router.get("/scheduled")
async def scheduled(request: Request, _who: ViewerDep, query: ListDep) -> HTMLResponse:
    return await _list_page(request, PAGES["scheduled"], query)


@router.get("/dead")
async def dead(request: Request, _who: ViewerDep, query: ListDep) -> HTMLResponse:
    return await _list_page(request, PAGES["dead"], query)


@router.post("/retries/actions")
async def act_on_retries(request: Request, who: OperatorDep, form: ActionDep) -> RedirectResponse:
    return await _act(request, who, PAGES["retries"], form)


@router.post("/scheduled/actions")
async def act_on_scheduled(request: Request, who: OperatorDep, form: ActionDep) -> RedirectResponse:
    return await _act(request, who, PAGES["scheduled"], form)


@router.post("/dead/actions")
async def act_on_dead(request: Request, who: OperatorDep, form: ActionDep) -> RedirectResponse:
    return await _act(request, who, PAGES["dead"], form)


@router.get("/retries/{key}")
async def retry_entry(request: Request, _who: ViewerDep, key: KeyPath) -> HTMLResponse:
    return await _entry_page(request, PAGES["retries"], key)


@router.get("/scheduled/{key}")
async def scheduled_entry(request: Request, _who: ViewerDep, key: KeyPath) -> HTMLResponse:
    return await _entry_page(request, PAGES["scheduled"], key)


@router.get("/dead/{key}")
async def dead_entry(request: Request, _who: ViewerDep, key: KeyPath) -> HTMLResponse:
    return await _entry_page(request, PAGES["dead"], key)


def _page_size(settings: Settings, asked: int | None) -> int:
    """The asked page size, never past SUPERVISOR_MAX_PAGE_SIZE (a longer link still works)."""
    return settings.PAGE_SIZE if asked is None else min(asked, settings.MAX_PAGE_SIZE)


async def _list_page(request: Request, page: SetPageKind, query: ListQuery) -> HTMLResponse:
    found = resources(request)
    limit = _page_size(found.settings, query.limit)
    newest_first = page.view.is_newest_first(query.direction)
    key = found.keys.key(page.view.source.value)
    result = await read_set(
        found.redis,
        key,
        substr=query.substr,
        offset=query.offset,
        limit=limit,
        newest_first=newest_first,
        redactor=found.redactor,
    )
    # "All" acts on the whole set, filter or not: its confirmation names the set's size.
    size = await found.redis.zcard(key) if query.substr else result.total
    return await render(
        request,
        "set.html",
        active=page.name,
        title=page.title,
        page=page,
        result=replace(result, entries=redact_entries(result.entries, found.redactor)),
        size=size,
        offset=query.offset,
        limit=limit,
        next_offset=next_offset(query.offset, len(result.entries), result.total),
        direction="desc" if newest_first else "asc",
        explicit_direction=query.direction,
        substr=query.substr,
        back=_back_fields(query.substr, query.direction),
        all_limit=ALL_LIMIT,
        notice=_notice(request),
    )


def _notice(request: Request) -> str | None:
    """The action's notice, plus how many entries were already gone and whether some are left
    (counts only: every sentence is one of ours)."""
    main = pick_notice(request, NOTICES)
    if main is None:
        return None
    parts = [main]
    gone = request.query_params.get("gone", "")
    if gone.isdigit() and int(gone) > 0:
        parts.append(GONE_ONE if int(gone) == 1 else GONE_MANY.format(n=int(gone)))
    if request.query_params.get("left") == "1":
        parts.append(LEFT)
    return ". ".join(parts) + "."


def _entry_key(page: SetPageKind, key: str) -> EntryKey:
    """An entry page's address: 404 when it cannot name an entry."""
    try:
        return EntryKey.parse(key)
    except ValueError:
        raise NotFound(BAD_KEY.format(key=key, title=page.title)) from None


def _form_keys(keys: list[str]) -> list[EntryKey]:
    """A form's keys, each once: 422 for one that is no key (input, as in the API)."""
    try:
        return list(dict.fromkeys(EntryKey.parse(key) for key in keys))
    except ValueError as exc:
        raise InvalidInput({"key": str(exc)}) from None


async def _act(
    request: Request, who: Principal, page: SetPageKind, form: ActionForm
) -> RedirectResponse:
    verb = page.verb(form.action)
    if verb is None:
        raise InvalidInput({"action": NOT_HERE.format(title=page.title, action=form.action.value)})
    back = _list_url(page, form)
    if not form.all and not form.keys:
        return RedirectResponse(done_url(back, "none", 0), status_code=303)
    keys = _form_keys(form.keys)
    found = resources(request)
    control = Control(found.redis, found.keys)
    ms = uses_milliseconds(found.sampler.latest)
    source = page.view.source
    if form.all:
        result = await control.apply_to_all(source, verb.action, limit=ALL_LIMIT, milliseconds=ms)
    else:
        result = await control.apply_to_keys(source, verb.action, keys, milliseconds=ms)
    what = f"{verb.action.value}_all" if form.all else verb.action.value
    audit(request, who, what, page.name, result.done)
    return RedirectResponse(_done(back, verb, result), status_code=303)


def _back_fields(substr: str | None, direction: str | None) -> dict[str, str]:
    """The list's filter and order, which action forms carry so the browser comes back to it."""
    fields = {"substr": substr, "direction": direction}
    return {name: value for name, value in fields.items() if value}


def _list_url(page: SetPageKind, form: ActionForm) -> str:
    query = urlencode(_back_fields(form.substr, form.direction))
    return f"/sidekiq/{page.name}" + (f"?{query}" if query else "")


def _done(back: str, verb: Verb, result: ActionResult) -> str:
    code = f"{verb.done}-one" if result.done == 1 else verb.done
    url = done_url(back, code, result.done)
    if result.missed:
        url += f"&gone={len(result.missed)}"
    if result.more:
        url += "&left=1"
    return url


async def _entry_page(request: Request, page: SetPageKind, key: str) -> HTMLResponse:
    entry_key = _entry_key(page, key)
    found = resources(request)
    members = await Control(found.redis, found.keys).members_at(page.view.source, entry_key)
    if not members:
        raise NotFound(GONE.format(title=page.title, key=key))
    entry = SortedEntry(entry_key.score, redact(parse_job(members[0]), found.redactor))
    # members_at matched its jid: an object. Read from the redacted bytes, like every field.
    payload: dict[str, Any] = orjson.loads(entry.job.raw)
    return await render(
        request,
        "entry.html",
        active=page.name,
        title=f"{page.title}: {entry.job.job_class or entry.job.jid}",
        page=page,
        entry=entry,
        payload=payload,
        backtrace=decode_backtrace(payload.get("error_backtrace")),
    )
