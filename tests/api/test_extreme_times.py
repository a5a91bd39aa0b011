"""Times at the ends of the calendar: a 422 that says so, never a 500 (OverflowError)."""

from __future__ import annotations

import base64

import pytest
from httpx import AsyncClient

EARLY = "0001-01-01T00:00:00+01:00"  # the year 0 once in UTC
LATE = "9999-12-31T23:59:59-01:00"  # the year 10000 once in UTC


def cursor_at(moment: str) -> str:
    return base64.urlsafe_b64encode(f"{moment}|jid".encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/jobs/durations", "/api/v1/history"])
@pytest.mark.parametrize(("name", "value"), [("since", EARLY), ("until", LATE), ("until", EARLY)])
async def test_an_out_of_range_time_is_a_422(
    client: AsyncClient, path: str, name: str, value: str
) -> None:
    response = await client.get(path, params={name: value})
    assert response.status_code == 422, response.text
    assert "out of range" in response.json()["fields"][name]


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/jobs/durations"])
@pytest.mark.parametrize("moment", [EARLY, LATE])
async def test_a_cursor_with_an_out_of_range_time_is_a_422(
    client: AsyncClient, path: str, moment: str
) -> None:
    response = await client.get(path, params={"cursor": cursor_at(moment)})
    assert response.status_code == 422, response.text
    assert "out of range" in response.json()["fields"]["cursor"]


@pytest.mark.parametrize(("name", "value"), [("since", EARLY), ("until", LATE)])
async def test_the_jobs_page_says_the_time_is_out_of_range(
    client: AsyncClient, name: str, value: str
) -> None:
    response = await client.get("/sidekiq/jobs", params={name: value})
    assert response.status_code == 422, response.text
    assert "out of range" in response.text


async def test_history_at_the_start_of_the_calendar_is_a_422(client: AsyncClient) -> None:
    """The default window reaches a day before `until`: before the year 1 here."""
    response = await client.get("/api/v1/history", params={"until": "0001-01-01T12:00:00Z"})
    assert response.status_code == 422, response.text
    assert "out of range" in response.json()["detail"]
