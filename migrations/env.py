"""Alembic environment (async): runs migrations over the app's own engine settings."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from app.config import Settings
from app.store.db import create_engine
from app.store.tables import Base

config = context.config
target_metadata = Base.metadata


def _settings() -> Settings:
    # The CLI and the tests pass their Settings in; plain `alembic` reads the environment.
    given = config.attributes.get("settings")
    return given if isinstance(given, Settings) else Settings()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(_settings(), name="sidekiq-supervisor-migrate")
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_settings().database_url, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
