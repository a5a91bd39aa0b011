"""Rendering GUI pages: the Jinja2 environment (autoescaped) with its filters, the summary bar
every page shows, and the security headers every page carries."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from redis.exceptions import RedisError

from app import __version__
from app.deps import current_snapshot, resources
from app.domain import Snapshot, as_utc
from app.web.auth import csrf_token, current

TEMPLATES = Path(__file__).parent / "templates"
# Every asset is ours: nothing inline can run, nothing outside can load.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# What an action's redirect adds for its notice (sets also say how many were gone or left).
NOTICE_PARAMS = frozenset({"done", "n", "gone", "left", "skipped"})
NOTHING = "\u2013"  # an en dash where there is no value
NAV = (
    ("dashboard", "/sidekiq", "Dashboard"),
    ("busy", "/sidekiq/busy", "Busy"),
    ("queues", "/sidekiq/queues", "Queues"),
    ("retries", "/sidekiq/retries", "Retries"),
    ("scheduled", "/sidekiq/scheduled", "Scheduled"),
    ("dead", "/sidekiq/dead", "Dead"),
    ("jobs", "/sidekiq/jobs", "Jobs"),
    ("metrics", "/sidekiq/metrics", "Metrics"),
)


def number(value: int | float | None) -> str:
    """1234567 -> "1,234,567"; None -> NOTHING."""
    if value is None:
        return NOTHING
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def duration(seconds: float | None) -> str:
    """Seconds for people: 0.042 -> "42 ms", 75 -> "1m 15s", 90000 -> "1d 1h"."""
    if seconds is None:
        return NOTHING
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """How long before `now` (or until, in the future): "3m 2s ago", "in 5.0 s"."""
    if moment is None:
        return NOTHING
    delta = ((now or datetime.now(UTC)) - moment).total_seconds()
    return f"{duration(delta)} ago" if delta >= 0 else f"in {duration(-delta)}"


def stamp(moment: datetime | None) -> str:
    """UTC to the second, the way logs and Sidekiq's UI write it."""
    if moment is None:
        return NOTHING
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty_json(raw: Any) -> str:
    """Arguments as indented JSON text (escaped by the template, never executed)."""
    if isinstance(raw, str | bytes):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    return orjson.dumps(raw, option=orjson.OPT_INDENT_2).decode()


def url_with(request: Request, **changes: object) -> str:
    """This page's URL with some query parameters replaced (None removes one); an action's
    notice (`done`, `n`) is never carried on, so it shows once."""
    params = {k: v for k, v in request.query_params.items() if k not in NOTICE_PARAMS}
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = str(value)
    return request.url.path + ("?" + urlencode(params) if params else "")


def pick_notice(request: Request, notices: Mapping[str, str]) -> str | None:
    """After an action the page is reloaded with ?done=<code>&n=<count> (post/redirect/get);
    the message is one of the page's own, so a link cannot make the page say anything else."""
    template = notices.get(request.query_params.get("done", ""))
    if template is None:
        return None
    count = request.query_params.get("n", "")
    n = int(count) if count.isdigit() else 0
    return template.format(n=n, s="" if n == 1 else "s")


def done_url(path: str, code: str, count: int) -> str:
    """Where to send the browser after an action: `path` with its notice."""
    joiner = "&" if "?" in path else "?"
    return f"{path}{joiner}{urlencode({'done': code, 'n': count})}"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(number=number, duration=duration, ago=ago, stamp=stamp, pretty=pretty_json)
    env.globals.update(nav=NAV, version=__version__, url_with=url_with)
    return env


ENVIRONMENT = _environment()


async def summary(request: Request) -> Snapshot | None:
    """The summary bar's numbers (the API's current snapshot); None when Redis does not
    answer: the page still renders, with a warning, rather than failing."""
    try:
        return (await current_snapshot(resources(request))).snapshot
    except (RedisError, OSError):
        return None


async def render(
    request: Request, template: str, *, active: str, status: int = 200, **context: Any
) -> HTMLResponse:
    """A full page: the template with the user, CSRF token and summary bar filled in."""
    who = await current(request)
    # A page that read the summary itself passes it, None included: Redis is not asked twice.
    snapshot = context.pop("snapshot") if "snapshot" in context else await summary(request)
    html = ENVIRONMENT.get_template(template).render(
        request=request,
        user=who,
        csrf=csrf_token(request),
        active=active,
        summary=snapshot,
        now=datetime.now(UTC),
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def error_page(status: int, title: str, message: str) -> HTMLResponse:
    """An error as a page (the GUI never answers a person with JSON)."""
    html = ENVIRONMENT.get_template("error.html").render(title=title, message=message)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
