"""The history dashboard run as Grafana runs it: over the seeded rows, as the read-only MySQL
user grafana/README.md documents, in the session its data source opens, every variable and
panel query with the macros expanded."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.store.db import create_engine
from tests.conftest import make_settings
from tests.ops import grafana_history_seed as seed
from tests.ops.grafana_kit import (
    HISTORY,
    MYSQL_UID,
    README,
    datasources,
    load_dashboard,
    panels,
)
from tests.ops.grafana_queries import expand_mysql, interval_seconds, sql_list, substitute

# The server's own zone before the data source's session zone applies: a panel that depended
# on it would put its points hours away from the range.
SERVER_TIME_ZONE = "+05:30"
# MySQL 8's default sql_mode: MariaDB's is laxer (no ONLY_FULL_GROUP_BY).
MYSQL8_SQL_MODE = (
    "ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
)
# The README's grants, one line per table of the supervisor's database.
README_GRANT = re.compile(r"^GRANT SELECT ON supervisor\.(\w+) TO 'grafana'@'%';$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Result:
    """One SQL query's answer: the panel's format, interval, columns and rows."""

    format: str
    interval: int
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def column(self, name: str) -> list[Any]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]


@dataclass(frozen=True, slots=True)
class HistoryRun:
    """The history dashboard run once: each variable's options and each panel's result."""

    variables: dict[str, list[str]]
    results: dict[str, Result]


def documented_grants() -> list[str]:
    """The tables grafana/README.md grants the Grafana user SELECT on."""
    tables = README_GRANT.findall(README.read_text())
    assert tables, "grafana/README.md documents no GRANT SELECT ON supervisor.<table>"
    return tables


async def execute(conn: AsyncConnection, sql: str) -> CursorResult[Any]:
    """`sql` sent as written, as Grafana sends it (asyncmy %-formats a statement even without
    parameters: doubled, every % reaches the server as it was)."""
    return await conn.exec_driver_sql(sql.replace("%", "%%"))


@asynccontextmanager
async def grafana_reader(engine: AsyncEngine, database_url: str) -> AsyncIterator[str]:
    """A MariaDB user with exactly the README's grants; its database URL."""
    url = make_url(database_url)
    user = f"grafana_{secrets.token_hex(4)}"
    password = secrets.token_hex(12)
    statements = [f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"]
    statements += [
        f"GRANT SELECT ON {url.database}.{table} TO '{user}'@'%'" for table in documented_grants()
    ]
    async with engine.connect() as conn:
        for statement in statements:
            await execute(conn, statement)
    try:
        yield url.set(username=user, password=password).render_as_string(hide_password=False)
    finally:
        async with engine.connect() as conn:
            await execute(conn, f"DROP USER IF EXISTS '{user}'@'%'")


async def query(conn: AsyncConnection, sql: str, fmt: str, interval: int) -> Result:
    assert "$" not in sql, sql
    answer = await execute(conn, sql)
    return Result(fmt, interval, list(answer.keys()), [tuple(row) for row in answer.fetchall()])


async def open_session(conn: AsyncConnection) -> None:
    """A session as Grafana's MySQL data source opens it, on a server in another zone."""
    await execute(conn, f"SET time_zone = '{SERVER_TIME_ZONE}'")
    zone = datasources()[MYSQL_UID]["jsonData"]["timezone"]
    await execute(conn, f"SET time_zone = '{zone}'")  # the DSN's time_zone parameter
    await execute(conn, f"SET SESSION sql_mode = '{MYSQL8_SQL_MODE}'")


async def variable_values(conn: AsyncConnection, dashboard: dict[str, Any]) -> dict[str, Any]:
    """Each variable's options: query variables run, custom ones at their current value."""
    found: dict[str, list[str]] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            sql = expand_mysql(variable["query"], seed.SPAN, 60)
            answer = await query(conn, sql, "table", 60)
            found[variable["name"]] = [str(row[0]) for row in answer.rows]
        else:
            found[variable["name"]] = [variable["current"]["value"]]
    return found


def substitutions(dashboard: dict[str, Any], options: dict[str, list[str]]) -> dict[str, str]:
    """What Grafana puts in for each variable: every option of a multi-value one ("All"),
    quoted as a list; a single value as it is."""
    multi = {v["name"] for v in dashboard["templating"]["list"] if v.get("multi")}
    return {
        name: sql_list(values) if name in multi else values[0] for name, values in options.items()
    }


async def run_panels(conn: AsyncConnection, dashboard: dict[str, Any]) -> HistoryRun:
    """Every panel query, with its interval: the panel's own minimum or the data source's."""
    minimum = interval_seconds(datasources()[MYSQL_UID]["jsonData"]["timeInterval"])
    options = await variable_values(conn, dashboard)
    values = substitutions(dashboard, options)
    results = {}
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            interval = max(minimum, interval_seconds(panel.get("interval", "1s")))
            sql = expand_mysql(substitute(target["rawSql"], values), seed.SPAN, interval)
            results[panel["title"]] = await query(conn, sql, target["format"], interval)
    return HistoryRun(options, results)


async def run_history(database_url: str) -> HistoryRun:
    """Seed the rows, then run the history dashboard as the documented Grafana user."""
    admin = create_engine(make_settings(database_url), name="grafana-tests")
    try:
        await seed.seed_history(admin)
        async with grafana_reader(admin, database_url) as reader_url:
            reader = create_engine(make_settings(reader_url), name="grafana-tests")
            try:
                async with reader.connect() as conn:
                    await open_session(conn)
                    return await run_panels(conn, load_dashboard(HISTORY))
            finally:
                await reader.dispose()
    finally:
        await admin.dispose()
