"""A throwaway MariaDB database for one benchmark run: created, migrated, queried, dropped.

The server is BENCH_MYSQL_URL (default mysql://root@127.0.0.1:3306, no database part); each run
gets its own `supervisor_bench_<random>` database so runs never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncmy
from sqlalchemy.engine import URL, make_url

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SERVER_URL = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306")


@dataclass(frozen=True, slots=True)
class Database:
    """One scratch database on the benchmark's MariaDB server."""

    server: URL
    name: str

    @property
    def url(self) -> str:
        """What SUPERVISOR_DATABASE_URL is set to (the password stays in the URL, never printed)."""
        return self.server.set(database=self.name).render_as_string(hide_password=False)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for `python -m app ...` against this database."""
        return {**os.environ, "SUPERVISOR_DATABASE_URL": self.url, **extra}


@asynccontextmanager
async def connect(server: URL, database: str | None = None) -> AsyncIterator[Any]:
    """A raw asyncmy connection (autocommit), closed on exit."""
    conn = await asyncmy.connect(
        host=server.host or "127.0.0.1",
        port=server.port or 3306,
        user=server.username or "root",
        password=server.password or "",
        db=database,
        charset="utf8mb4",
        autocommit=True,
    )
    try:
        yield conn
    finally:
        conn.close()


async def query(db: Database, sql: str) -> list[tuple[Any, ...]]:
    """Every row `sql` returns, run in the scratch database."""
    async with connect(db.server, db.name) as conn, conn.cursor() as cursor:
        await cursor.execute(sql)
        return list(await cursor.fetchall())


async def _admin(server: URL, statements: Sequence[str]) -> None:
    async with connect(server) as conn, conn.cursor() as cursor:
        for statement in statements:
            await cursor.execute(statement)


def migrate(db: Database) -> None:
    """`python -m app migrate` against the scratch database, as an operator would run it."""
    done = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        cwd=ROOT,
        env=db.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed ({done.returncode}): {done.stderr}")


@contextmanager
def scratch_database() -> Iterator[Database]:
    """A fresh, migrated database, dropped on exit whatever happened (call outside a loop)."""
    db = Database(make_url(SERVER_URL), f"supervisor_bench_{secrets.token_hex(4)}")
    asyncio.run(_admin(db.server, [f"CREATE DATABASE `{db.name}` CHARACTER SET utf8mb4"]))
    try:
        migrate(db)
        yield db
    finally:
        asyncio.run(_admin(db.server, [f"DROP DATABASE IF EXISTS `{db.name}`"]))
