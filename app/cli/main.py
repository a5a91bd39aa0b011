"""`sidekiq-supervisor` (also `python -m app`): serve, migrate, health, jobs, console."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from alembic.config import Config

from app.cli import actions, console, jobs
from app.cli.database import DatabaseError, describe_failure, ensure_database, is_unreachable
from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
# Measured (the ingest benchmark): full collections of the start-up heap under load paused the
# loop 50-80 ms; freezing that heap and collecting young objects less often keeps p99 low.
GC_THRESHOLDS = (50_000, 20, 100)

cli = typer.Typer(
    help="Sidekiq Supervisor: a job ledger, Redis sampler and Prometheus exporter for Sidekiq.",
    no_args_is_help=True,
    add_completion=False,
)
cli.add_typer(jobs.cli, name="jobs")
cli.command("console")(console.run)
cli.command("requeue")(actions.requeue)
cli.command("drain")(actions.drain)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: SUPERVISOR_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: SUPERVISOR_PORT.")] = None,
) -> None:
    """Run the HTTP service (one process; scale with replicas, not workers)."""
    import uvicorn

    from app.cli.protocol import deadline_protocol
    from app.main import create_app

    settings = Settings()
    logging.basicConfig(
        level=settings.LOG_LEVEL.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    # Start-up garbage goes now, before the lifespan freezes what survives out of the
    # collector's full passes; a larger first threshold makes those passes rarer too.
    gc.collect()
    gc.set_threshold(*GC_THRESHOLDS)
    uvicorn.run(
        app,
        host=host or settings.HOST,
        port=port or settings.PORT,
        log_level=settings.LOG_LEVEL,
        access_log=False,
        loop="uvloop",
        http=deadline_protocol(settings.HEADER_TIMEOUT_SECONDS, settings.BODY_TIMEOUT_SECONDS),
        # X-Forwarded-For and -Proto only from SUPERVISOR_TRUSTED_PROXIES (the same list the
        # app applies itself); none by default, not even uvicorn's usual 127.0.0.1.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.TRUSTED_PROXIES or None,
        timeout_graceful_shutdown=int(settings.INGEST_TIMEOUT_SECONDS) + 1,
    )


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Bring the database schema up to date (Alembic upgrade); a missing MySQL/MariaDB database
    is created first (utf8mb4)."""
    from alembic import command

    settings = Settings()
    created = ensure_database(settings)
    if created is not None:
        typer.echo(created, err=True)
    command.upgrade(alembic_config(settings), revision)


@cli.command()
def health() -> None:
    """Check the database and Redis; one line per check, exit 0 when all pass, 1 otherwise."""
    from app.cli.checks import run_checks

    ok = asyncio.run(run_checks(Settings()))
    raise typer.Exit(0 if ok else 1)


def alembic_config(settings: Settings) -> Config:

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["settings"] = settings
    return config


def main() -> None:
    """The command; a database it cannot reach or prepare is one line on stderr and exit 1,
    not a traceback (the URL shown, its password hidden)."""
    try:
        cli(prog_name="sidekiq-supervisor")
    except DatabaseError as exc:
        _fail(str(exc))
    except Exception as exc:
        if not is_unreachable(exc):
            raise
        _fail(describe_failure(Settings(), exc))


def _fail(message: str) -> NoReturn:
    typer.echo(f"sidekiq-supervisor: {message}", err=True)
    raise SystemExit(1)


if __name__ == "__main__":
    main()
