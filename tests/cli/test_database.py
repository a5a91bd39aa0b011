"""`migrate` creates a missing MySQL/MariaDB database, and a database the command cannot reach or
prepare is one line on stderr naming its URL (password hidden), never a traceback."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.cli.test_cli import run
from tests.conftest import MYSQL_URL, mysql_admin


async def _schema_charset(name: str) -> tuple[Any, ...] | None:
    rows = await mysql_admin(
        "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
        (name,),
    )
    return rows[0] if rows else None


@pytest.fixture
def new_database() -> Iterator[str]:
    """A database name nobody has created; dropped afterwards if the test created it."""
    name = f"supervisor_new_{secrets.token_hex(4)}"
    yield name
    asyncio.run(mysql_admin(f"DROP DATABASE IF EXISTS {name}"))


@pytest.fixture
def unprivileged_user() -> Iterator[tuple[str, str]]:
    """A MariaDB account that may connect but create nothing."""
    user, password = f"sup_np_{secrets.token_hex(3)}", secrets.token_hex(8)
    asyncio.run(mysql_admin(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
    yield user, password
    asyncio.run(mysql_admin(f"DROP USER IF EXISTS '{user}'@'%'"))


def _url(database: str, *, user: str | None = None, password: str | None = None) -> str:
    url = make_url(MYSQL_URL).set(database=database)
    if user is not None:
        url = url.set(username=user, password=password)
    return url.render_as_string(hide_password=False)


def test_migrate_creates_a_missing_database_in_utf8mb4(new_database: str, tmp_path: Path) -> None:
    url = _url(new_database)
    first = run("migrate", database_url=url, cwd=tmp_path)
    again = run("migrate", database_url=url, cwd=tmp_path)
    listed = run("jobs", "all", database_url=url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"created database {new_database}" in first.stderr
    assert asyncio.run(_schema_charset(new_database)) == ("utf8mb4",)
    assert again.returncode == 0, again.stderr
    assert "created database" not in again.stderr
    assert "0 job(s)" in listed.stdout


def test_a_user_who_may_not_create_it_is_told_how_in_one_line(
    new_database: str, unprivileged_user: tuple[str, str], tmp_path: Path
) -> None:
    user, password = unprivileged_user
    done = run(
        "migrate", database_url=_url(new_database, user=user, password=password), cwd=tmp_path
    )
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert f"CREATE DATABASE `{new_database}` CHARACTER SET utf8mb4" in line
    assert f"{user}:***@" in line
    assert password not in line
    assert asyncio.run(_schema_charset(new_database)) is None


@pytest.mark.parametrize("command", [("migrate",), ("jobs", "all"), ("requeue",)])
def test_an_unreachable_database_is_one_line_with_the_url(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    url = "mysql://root:hunter2@127.0.0.1:1/ledger"
    done = run(*command, database_url=url, cwd=tmp_path)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("sidekiq-supervisor: cannot use the database at ")
    assert "mysql+asyncmy://root:***@127.0.0.1:1/ledger" in line
    assert "hunter2" not in line


def test_an_sqlite_file_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'ledger.db'}"
    done = run("migrate", database_url=url, cwd=tmp_path)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert "missing-dir/ledger.db" in line
