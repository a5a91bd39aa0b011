"""Settings, docs/settings.md and .env.example stay in step; bad configuration is refused at
start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]


# The full table lives in docs/settings.md (the README shows the first few and links to it).
@pytest.mark.parametrize("document", ["docs/settings.md", ".env.example"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = [name for name in Settings.model_fields if f"SUPERVISOR_{name}" not in text]
    assert missing == []


def test_env_example_holds_the_defaults() -> None:
    defaults = Settings(_env_file=None)
    for line in (ROOT / ".env.example").read_text().splitlines():
        if not line.startswith("SUPERVISOR_"):
            continue
        name, _, value = line.removeprefix("SUPERVISOR_").partition("=")
        default = getattr(defaults, name)
        assert value == ("" if default is None else str(default)), name


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"DATABASE_URL": "postgresql://x/y"}, "must be a MySQL/MariaDB URL"),
        ({"MAX_BATCH_EVENTS": 5000}, "SUPERVISOR_MAX_BATCH_EVENTS must not exceed"),
        ({"PAGE_SIZE": 900}, "SUPERVISOR_PAGE_SIZE must not exceed"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"INGEST_TIMEOUT_SECONDS": 0}, "INGEST_TIMEOUT_SECONDS"),
    ],
)
def test_bad_configuration_is_refused(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        Settings(_env_file=None, **overrides)


def test_plain_mysql_urls_get_the_async_driver() -> None:
    settings = Settings(_env_file=None, DATABASE_URL="mysql://root@db:3306/ledger")
    assert settings.database_url.drivername == "mysql+asyncmy"
    assert not settings.is_sqlite
