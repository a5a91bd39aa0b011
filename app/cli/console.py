"""`sidekiq-supervisor console`: a Python REPL with a ready JobManager and top-level await.

The event loop runs in a background thread (it owns the engine); the REPL runs in the main
thread and hands each awaited statement to the loop, so `await manager.jobs()` just works.
"""

from __future__ import annotations

import ast
import asyncio
import code
import concurrent.futures
import inspect
import sys
import threading
import types
from typing import Any

from app.cli.jobs import open_manager, print_durations, print_page
from app.config import Settings
from app.domain import JobFilter, JobStatus, Page
from app.manager import DurationReport, Durations

BANNER = """Sidekiq Supervisor console ({database})
  manager = JobManager (top-level await works):
    await manager.queued_jobs("text")       await manager.uncompleted_jobs()
    await manager.completed_jobs()          await manager.jobs(JobFilter(queue="default"))
    await manager.queued_to_completion_duration()   await manager.completed_jobs_duration()
    await manager.restart_uncompleted_jobs("text", dry_run=True)
  Pages and durations print as tables; page.next_cursor continues a listing."""


class AsyncConsole(code.InteractiveConsole):
    """An InteractiveConsole that runs each statement as a coroutine on `loop` when it awaits."""

    def __init__(self, namespace: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(namespace)
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self.loop = loop

    def runcode(self, codeobj: types.CodeType) -> None:
        try:
            result = types.FunctionType(codeobj, self.locals)()
            if inspect.iscoroutine(result):
                asyncio.run_coroutine_threadsafe(result, self.loop).result()
        except SystemExit:
            raise
        except BaseException:
            self.showtraceback()


def _display(value: object) -> None:
    if isinstance(value, Page):
        print_page(value, as_json=False)
    elif isinstance(value, Durations | DurationReport):
        print_durations(value, as_json=False)
    elif value is not None:
        print(repr(value))  # noqa: T201 - the REPL's own echo


def run() -> None:
    """Open a Python REPL with `manager` (a JobManager), JobFilter and JobStatus in scope."""
    settings = Settings()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="console-loop", daemon=True)
    thread.start()
    manager_cm = open_manager(settings)
    manager = asyncio.run_coroutine_threadsafe(manager_cm.__aenter__(), loop).result()
    namespace = {"manager": manager, "JobFilter": JobFilter, "JobStatus": JobStatus}
    sys.displayhook = _display
    try:
        database = settings.database_url.render_as_string(hide_password=True)
        AsyncConsole(namespace, loop).interact(banner=BANNER.format(database=database), exitmsg="")
    finally:
        closing = asyncio.run_coroutine_threadsafe(manager_cm.__aexit__(None, None, None), loop)
        try:
            closing.result(timeout=5)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
