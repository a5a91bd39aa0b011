"""The GUI at /sidekiq: every page's router, plus sign-in and sign-out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.access import check_password
from app.deps import client_of, refuse_foreign_origin, resources
from app.signins import Attempt
from app.web import busy, dashboard, ledger, metrics_page, queues, sets
from app.web.auth import NOBODY, SignedFormDep, audit, end_session, start_session
from app.web.render import ENVIRONMENT, SECURITY_HEADERS

WRONG_LOGIN = "That name and password do not match a user or token."
TOO_MANY = "Too many failed sign-ins for this name or address: try again in {seconds} s."

router = APIRouter(include_in_schema=False)
for module in (dashboard, busy, queues, sets, ledger, metrics_page):
    router.include_router(module.router, prefix="/sidekiq")


def _safe_next(target: str) -> str:
    """Only back into the GUI: never to another site (//evil.example) after signing in."""
    if target.startswith("/sidekiq") and not target.startswith("//"):
        return target
    return "/sidekiq"


def _login_page(
    next_: str, name: str = "", error: str | None = None, *, status: int = 200
) -> HTMLResponse:
    html = ENVIRONMENT.get_template("login.html").render(next=next_, name=name, error=error)
    return HTMLResponse(html, status_code=status, headers=dict(SECURITY_HEADERS))


@router.get("/sidekiq/login")
async def login_form(next_: Annotated[str, Query(alias="next")] = "/sidekiq") -> HTMLResponse:
    return _login_page(_safe_next(next_))


@router.post("/sidekiq/login")
async def login(
    request: Request,
    name: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1000)],
    next_: Annotated[str, Form(alias="next", max_length=2000)] = "/sidekiq",
) -> Response:
    refuse_foreign_origin(request)  # nobody is signed in by another site's form
    found = resources(request)
    attempt = Attempt(account=name, client=client_of(request))
    wait = await found.signins.wait_seconds(attempt)
    if wait:
        page = _login_page(_safe_next(next_), name, TOO_MANY.format(seconds=wait), status=429)
        page.headers["Retry-After"] = str(wait)
        return page
    who = check_password(found.settings, name, password)
    if who is None:
        await found.signins.failed(attempt)
        audit(request, NOBODY, "login_failed", name, 0)
        return _login_page(_safe_next(next_), name, WRONG_LOGIN, status=401)
    response = RedirectResponse(_safe_next(next_), status_code=303)
    start_session(request, response, who)
    audit(request, who, "login", "gui", 1)
    return response


@router.post("/sidekiq/logout")
async def logout(request: Request, who: SignedFormDep) -> Response:
    response = RedirectResponse("/sidekiq/login", status_code=303)
    await end_session(request, response)
    audit(request, who, "logout", "gui", 1)
    return response
