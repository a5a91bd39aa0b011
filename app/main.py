"""Composition root: create_app(settings) wires routes; the lifespan builds and tears down
the engine, Redis client, event writer and sampler (in reverse, on one exit stack)."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from app import __version__
from app.access import session_key
from app.api import actions, docs, health, ingest, jobs, scrape, sidekiq
from app.config import Settings
from app.deps import Resources
from app.domain import EventLimits
from app.errors import AppError
from app.exporter.collector import SidekiqCollector
from app.exporter.jobs import JobMetrics
from app.exporter.process import IngestMetrics, SamplerMetrics
from app.ingest.writer import EventWriter, WriterLimits
from app.manager import JobManager
from app.redact import Redactor, split_keys
from app.sampler.reconcile import ReconcileConfig, Reconciler
from app.sampler.runner import Sampler, SamplerConfig
from app.sidekiq.errors import redis_unavailable
from app.sidekiq.keys import Keys
from app.signins import SignIns
from app.store.db import create_engine, create_sessionmaker, database_unavailable, is_outage
from app.web import routes as gui
from app.web.render import error_page

log = logging.getLogger("app")
STATIC = Path(__file__).parent / "web" / "static"
DESCRIPTION = (
    "Watches Sidekiq: lifecycle events from the middleware go into a durable job ledger. "
    "Ingest routes answer 201 only once the event is committed."
)


class SupervisorApp(FastAPI):
    """FastAPI plus a fast lane: the ingest POSTs go straight to their handler (the only one
    they have), and the OpenAPI document describes them too."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = ingest.match(scope["path"])
            if route is not None:
                await ingest.serve_fast(self.state.resources, route, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = ingest.document(super().openapi())
        return self.openapi_schema


def create_app(settings: Settings | None = None) -> SupervisorApp:
    """The ASGI app; with no settings they come from the environment (SUPERVISOR_*)."""
    settings = settings or Settings()
    app = SupervisorApp(
        title="Sidekiq Supervisor",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.registry = CollectorRegistry()
    for module in (actions, jobs, sidekiq, health, scrape, docs):
        app.include_router(module.router)
    app.include_router(gui.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _install_error_handlers(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Builds every resource on one exit stack, so they are torn down in reverse, and so a
    step that fails half-way closes what the steps before it opened."""
    async with AsyncExitStack() as stack:
        app.state.resources = await _open_resources(app, stack)
        for endpoint in app.state.settings.open_endpoints():
            log.warning(
                "OPEN WITHOUT CREDENTIALS: %s; set it before exposing this service", endpoint
            )
        # Everything built so far (imports, app, engine, clients) lives as long as the process:
        # keep it out of the collector's full passes, which otherwise rescan it whenever a burst
        # of allocations (a batch of events, a page of 20,000 rows) triggers one: 70-120 ms each.
        gc.freeze()
        stack.callback(gc.unfreeze)
        yield


async def _open_resources(app: FastAPI, stack: AsyncExitStack) -> Resources:
    settings: Settings = app.state.settings
    registry: CollectorRegistry = app.state.registry
    engine = create_engine(settings)
    stack.push_async_callback(engine.dispose)
    redis = Redis.from_url(
        settings.REDIS_URL,
        client_name="sidekiq-supervisor",
        socket_timeout=settings.REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=settings.REDIS_TIMEOUT_SECONDS,
    )
    stack.push_async_callback(redis.aclose)
    redactor = Redactor(split_keys(settings.REDACT_KEYS), settings.REDACT_PATTERNS)
    job_metrics = JobMetrics(
        registry,
        max_workers=settings.MAX_WORKER_LABELS,
        max_queues=settings.MAX_QUEUE_LABELS,
        max_error_classes=settings.MAX_ERROR_CLASS_LABELS,
    )
    writer = EventWriter(engine, _writer_limits(settings), IngestMetrics(registry), job_metrics)
    await writer.start()
    stack.push_async_callback(writer.stop)
    sessions = create_sessionmaker(
        engine,
        deadline_seconds=settings.DB_TIMEOUT_SECONDS,
        retry_after_seconds=settings.RETRY_AFTER_SECONDS,
    )
    keys = Keys(settings.REDIS_NAMESPACE)
    reconciler = _reconciler(settings, redis, keys, sessions, job_metrics, redactor)
    sampler = _sampler(settings, redis, keys, sessions, registry, reconciler)
    collector = SidekiqCollector(sampler, max_age_seconds=3 * settings.SAMPLE_INTERVAL_SECONDS)
    registry.register(collector)
    stack.callback(registry.unregister, collector)
    if settings.SAMPLER_ENABLED:
        await sampler.start()
        stack.push_async_callback(sampler.stop)
    return Resources(
        settings=settings,
        engine=engine,
        sessions=sessions,
        redis=redis,
        writer=writer,
        manager=_manager(settings, sessions, redis, keys),
        event_limits=EventLimits(
            settings.MAX_ARGUMENTS_BYTES, settings.MAX_ERROR_MESSAGE_CHARS, redactor
        ),
        sampler=sampler,
        keys=keys,
        job_metrics=job_metrics,
        session_key=session_key(settings),
        signins=SignIns(redis, keys, timeout_seconds=settings.REDIS_TIMEOUT_SECONDS),
    )


def _sampler(
    settings: Settings,
    redis: Redis,
    keys: Keys,
    sessions: async_sessionmaker[AsyncSession],
    registry: CollectorRegistry,
    reconciler: Reconciler | None,
) -> Sampler:
    return Sampler(
        redis=redis,
        keys=keys,
        sessions=sessions,
        metrics=SamplerMetrics(registry),
        config=SamplerConfig(
            interval_seconds=settings.SAMPLE_INTERVAL_SECONDS,
            retention_days=settings.RETENTION_DAYS,
            retention_chunk_rows=settings.RETENTION_CHUNK_ROWS,
            timeout_seconds=settings.REDIS_TIMEOUT_SECONDS + settings.DB_TIMEOUT_SECONDS,
        ),
        reconciler=reconciler,
    )


def _manager(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], redis: Redis, keys: Keys
) -> JobManager:
    return JobManager(
        sessions,
        redis=redis,
        keys=keys,
        page_size=settings.PAGE_SIZE,
        sample_limit=settings.DURATION_SAMPLE_SIZE,
        search_seconds=settings.SEARCH_TIMEOUT_SECONDS,
        process_stale=timedelta(seconds=settings.PROCESS_STALE_SECONDS),
        retry_after_seconds=settings.RETRY_AFTER_SECONDS,
    )


def _reconciler(
    settings: Settings,
    redis: Redis,
    keys: Keys,
    sessions: async_sessionmaker[AsyncSession],
    metrics: JobMetrics,
    redactor: Redactor,
) -> Reconciler | None:
    if not settings.RECONCILE_ENABLED:
        return None
    # Only the thresholds: each tick applies them at its own time.
    stuck = settings.stuck_rule(datetime.now(UTC))
    config = ReconcileConfig(
        stuck_after=stuck.after,
        stuck_after_by_class=stuck.after_by_class,
        lost_grace=timedelta(seconds=settings.LOST_GRACE_SECONDS),
        process_stale=timedelta(seconds=settings.PROCESS_STALE_SECONDS),
        batch=settings.RECONCILE_BATCH,
        scan_count=settings.RECONCILE_SCAN_COUNT,
        max_error_chars=settings.MAX_ERROR_MESSAGE_CHARS,
        redactor=redactor,
    )
    return Reconciler(redis=redis, keys=keys, sessions=sessions, metrics=metrics, config=config)


def _writer_limits(settings: Settings) -> WriterLimits:
    return WriterLimits(
        batch_size=settings.WRITER_BATCH_SIZE,
        max_pending=settings.WRITER_MAX_PENDING,
        connections=1 if settings.is_sqlite else settings.WRITER_CONNECTIONS,
        ingest_timeout_seconds=settings.INGEST_TIMEOUT_SECONDS,
        db_timeout_seconds=settings.DB_TIMEOUT_SECONDS,
        retry_after_seconds=settings.RETRY_AFTER_SECONDS,
    )


def _error(status: int, error: str, detail: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


_TITLES = {
    400: "Bad request",
    401: "Sign in needed",
    403: "Not allowed",
    404: "Not found",
    422: "That input is not valid",
    429: "Too many attempts",
    503: "Not available right now",
}


def _for_people(request: Request) -> bool:
    """GUI pages answer errors as HTML; everything else (their .json feeds too) as JSON."""
    path = request.url.path
    return (path == "/sidekiq" or path.startswith("/sidekiq/")) and not path.endswith(".json")


def _install_error_handlers(app: FastAPI) -> None:
    async def app_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AppError)
        if _for_people(request) and exc.status != 303:
            response: Response = error_page(
                exc.status, _TITLES.get(exc.status, "Error"), exc.detail
            )
            response.headers.update(exc.headers)
            return response
        extra = {"fields": exc.fields} if hasattr(exc, "fields") else {}
        response = _error(exc.status, exc.error, exc.detail, **extra)
        response.headers.update(exc.headers)
        return response

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        fields = {
            ".".join(str(part) for part in error["loc"][1:]) or "body": error["msg"]
            for error in exc.errors()
        }
        detail = "; ".join(f"{name}: {problem}" for name, problem in fields.items())
        if _for_people(request):
            return error_page(422, "That input is not valid", detail)
        return _error(422, "invalid_input", detail, fields=fields)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if _for_people(request):
            return error_page(exc.status_code, _TITLES.get(exc.status_code, "Error"), exc.detail)
        code = "not_found" if exc.status_code == 404 else "http_error"
        response = _error(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    async def redis_error(request: Request, exc: Exception) -> Response:
        # The one translation of Redis failures: routes let them rise, and every one becomes
        # a 503 naming Redis (an HTML page for people), never a 500.
        retry_after = request.app.state.settings.RETRY_AFTER_SECONDS
        return await app_error(request, redis_unavailable(exc, retry_after_seconds=retry_after))

    async def database_error(request: Request, exc: Exception) -> Response:
        # A database outage outside a bounded session (which translates its own), the same
        # 503; any other database error is a bug and stays a 500.
        if not is_outage(exc):
            raise exc
        retry_after = request.app.state.settings.RETRY_AFTER_SECONDS
        return await app_error(request, database_unavailable(exc, retry_after_seconds=retry_after))

    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RedisError, redis_error)
    app.add_exception_handler(DBAPIError, database_error)
    app.add_exception_handler(PoolTimeout, database_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
