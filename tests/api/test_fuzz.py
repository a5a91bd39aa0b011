"""A bounded fuzz of every operation in the app's own OpenAPI (/openapi.json) with schemathesis:
each answer must be one the document declares (status, content type, headers, body schema), and
none may be a server error. Seeded and bounded, so a run repeats the same requests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import hypothesis
import orjson
import pytest
import requests
import schemathesis
from httpx import AsyncClient
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from redis.asyncio import Redis
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.domain import EventName, JobEvent
from app.main import create_app
from app.sidekiq.keys import Keys
from app.store.ledger_writes import write_batch
from tests.api.test_outages import CALLS
from tests.conftest import make_settings
from tests.sidekiq.layouts import NOW, V7, job, process, push

ADMIN_TOKEN = "fuzz-admin-token"
READ_TOKEN = "fuzz-read-token"
INGEST_TOKEN = "fuzz-ingest-token"
WRONG_TOKEN = "not-a-token"
# Per operation and database backend; the whole fuzz stays well under a minute of CI time.
EXAMPLES_PER_OPERATION = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# derandomize: the examples come from a seed derived from the test, the same on every run;
# database=None: no examples carried over from earlier runs (.hypothesis), so CI repeats too.
FUZZ = hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    # Only generation: the collecting function never fails, so there is nothing to shrink.
    phases=[Phase.explicit, Phase.generate],
    # Schemathesis strategies are large by nature; generation time is bounded by max_examples.
    suppress_health_check=list(HealthCheck),
)
SIGN_IN_LIMIT = 10  # failed sign-ins from one address before the throttle answers 429
KEYS = Keys()
Operation = APIOperation[Any, Any, Any, Any]
FuzzCase = Case[Operation]
# Ingest's error answers are declared by its own table (app/api/ingest.py), which names
# Retry-After in the 503's description rather than as a header.
HEADERS_DECLARED_ELSEWHERE = "ingest"
T0 = datetime.now(UTC) - timedelta(minutes=5)


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The app fixture's settings: every credential configured, so the fuzz meets the checks."""
    return make_settings(
        database_url, ADMIN_TOKEN=ADMIN_TOKEN, READ_TOKEN=READ_TOKEN, INGEST_TOKEN=INGEST_TOKEN
    )


@pytest.fixture
async def seeded(engine: AsyncEngine, redis: Redis) -> None:
    """Something for every route to find: ledger jobs in each state, and a Sidekiq 7 fleet with a
    queue, a live busy process and entries in the retry, scheduled and dead sets."""
    stages = (EventName.QUEUED, EventName.STARTED, EventName.COMPLETE)
    events = [
        JobEvent(f"{n:024d}", name, T0 + timedelta(seconds=k), T0, job_class="HardJob", queue="q")
        for n in range(6)
        for k, name in enumerate(stages[: 1 + n % 3])
    ]
    async with engine.connect() as conn:
        await write_batch(conn, events)
    await push(redis, KEYS, V7, "default", 10, 20, 30)
    await process(
        redis,
        KEYS,
        V7,
        hostname="web-1",
        concurrency=5,
        queues=["default"],
        busy=[("b" * 24, "default", NOW)],
        beat=time.time() - 2,
    )
    for key in (KEYS.retry, KEYS.schedule, KEYS.dead):
        for n in range(3):
            entry = job(V7, "default", enqueued_at=NOW - 60) | {"error_class": "Boom"}
            await redis.zadd(key, {orjson.dumps(entry): NOW + n})


async def load_schema(client: AsyncClient) -> schemathesis.BaseSchema:
    served = await client.get("/openapi.json")
    assert served.status_code == 200, served.text
    return schemathesis.openapi.from_dict(served.json())


def operations(schema: schemathesis.BaseSchema) -> Iterator[Operation]:
    """Every operation the document declares."""
    paths: dict[str, dict[str, Any]] = schema.raw_schema["paths"]
    for path, item in paths.items():
        for method in item:
            yield schema[path][method]


def generated(operation: Operation) -> list[FuzzCase]:
    """EXAMPLES_PER_OPERATION requests for `operation`, valid ones and invalid ones mixed."""
    found: list[FuzzCase] = []
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @FUZZ
    @given(strategy)
    def collect(case: FuzzCase) -> None:
        found.append(case)

    collect()
    return found


def token_for(operation: Operation) -> str:
    return INGEST_TOKEN if "ingest" in (operation.tags or []) else ADMIN_TOKEN


async def send(client: AsyncClient, case: FuzzCase, token: str | None) -> httpx.Response:
    """The request schemathesis would send (its serialization, byte for byte), sent in-process."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    wire = requests.Request(**case.as_transport_kwargs(str(client.base_url), headers)).prepare()
    assert wire.method is not None
    assert wire.url is not None
    body = wire.body.encode() if isinstance(wire.body, str) else wire.body
    assert body is None or isinstance(body, bytes)
    sent = {name: _text(value) for name, value in wire.headers.items()}
    return await client.request(wire.method, wire.url, headers=sent, content=body)


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("latin-1")


def problems(case: FuzzCase, response: httpx.Response) -> dict[tuple[str, int, str], str]:
    """Each failed check as (operation, status, check title) -> schemathesis's report."""
    try:
        case.validate_response(response, checks=CHECKS)
    except schemathesis.errors.FailureGroup as group:
        return {
            (case.operation.label, response.status_code, failure.title): str(group)
            for failure in group.exceptions
        }
    return {}


@pytest.mark.usefixtures("seeded")
async def test_every_operation_answers_only_what_it_declares(client: AsyncClient) -> None:
    schema = await load_schema(client)
    found: dict[tuple[str, int, str], str] = {}
    statuses: dict[str, set[int]] = {}
    every = list(operations(schema))
    for operation in every:
        for case in generated(operation):
            response = await send(client, case, token_for(operation))
            found.update(problems(case, response))
            statuses.setdefault(operation.label, set()).add(response.status_code)
    assert not found, "\n\n".join(f"{key}:\n{report}" for key, report in sorted(found.items()))
    assert set(statuses) == {operation.label for operation in every}
    # Every request carried valid credentials: a refusal would mean the fuzz never got past them.
    refused = {label: codes & {401, 403, 429} for label, codes in statuses.items()}
    assert not any(refused.values()), refused


def first_case(operation: Operation) -> FuzzCase:
    """One valid request for `operation` (the same every run)."""
    return generated(operation)[0]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.usefixtures("redis")  # flushed afterwards: the throttle's count goes with it
async def test_refusals_are_declared(client: AsyncClient) -> None:
    """Without credentials, with the read-only token on an admin route, and once the sign-in
    throttle is on: what each route answers is declared too (401, 403, 429)."""
    schema = await load_schema(client)
    cases = [first_case(operation) for operation in operations(schema)]
    found: dict[tuple[str, int, str], str] = {}
    answers: dict[str, list[int]] = {}
    for token in (None, READ_TOKEN, WRONG_TOKEN):
        if token == WRONG_TOKEN:
            for _ in range(SIGN_IN_LIMIT):
                await client.get("/api/v1/stats", headers={"Authorization": f"Bearer {token}"})
        for case in cases:
            response = await send(client, case, token)
            found.update(problems(case, response))
            answers.setdefault(case.operation.label, []).append(response.status_code)
    assert not found, "\n\n".join(f"{key}:\n{report}" for key, report in sorted(found.items()))
    assert answers["GET /api/v1/stats"] == [401, 200, 429]
    assert answers["POST /api/v1/drain"] == [401, 403, 429]
    assert answers["GET /healthz"] == [200, 200, 200]


def test_routes_that_need_a_store_declare_503_with_retry_after() -> None:
    """The outage walk (tests/api/test_outages.py) names what each route needs; every API route
    that needs the database or Redis declares the 503 it then answers."""
    spec: dict[str, Any] = create_app(make_settings("sqlite:///:memory:")).openapi()
    needs = {(call.method, call.template): call.needs for call in CALLS}
    missing = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if not needs[(method.upper(), path)]:
                continue
            declared = operation["responses"].get("503")
            header_wanted = HEADERS_DECLARED_ELSEWHERE not in operation["tags"]
            if declared is None:
                missing.append(f"{method.upper()} {path}: no 503")
            elif header_wanted and "Retry-After" not in declared.get("headers", {}):
                missing.append(f"{method.upper()} {path}: 503 without Retry-After")
    assert missing == []
