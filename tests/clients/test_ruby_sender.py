"""The Ruby middleware's background sender on the wire, against a scripted stand-in for the
supervisor: the batch body and headers, retries of 503 until accepted, no retry of a 4xx, a 422
that names elements drops only those, and a bounded buffer that drops the oldest events.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.sidekiq.real_sidekiq import run_ruby

pytestmark = pytest.mark.slow

SEND_EVENTS = Path(__file__).resolve().parent / "ruby" / "send_events.rb"
TOKEN = "sender-test-token"
POLL_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


CREATED = Answer(201, {"accepted": 0})


@dataclass
class Recorder:
    """Answers requests with `script` in order (then `then`), and keeps every request."""

    script: list[Answer]
    then: Answer = CREATED
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        with self.lock:
            self.requests.append((path, headers, orjson.loads(body)))
            return self.script.pop(0) if self.script else self.then

    def jids(self, index: int) -> list[str]:
        return [event["job_id"] for event in self.requests[index][2]]


@contextmanager
def fake_supervisor(recorder: Recorder) -> Iterator[str]:
    """An HTTP/1.1 server on a loopback port answering as `recorder` says; its URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            answer = recorder.answer(self.path, headers, body)
            payload = orjson.dumps(answer.body)
            self.send_response(answer.status)
            for name, value in {"Content-Type": "application/json", **answer.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(POLL_SECONDS,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def send(url: str, count: int, how: str, **settings: str) -> dict[str, Any]:
    """Runs send_events.rb; returns SidekiqSupervisor.stats as it printed them."""
    env = {
        **os.environ,
        "SIDEKIQ_SUPERVISOR_URL": url,
        "SIDEKIQ_SUPERVISOR_TOKEN": TOKEN,
        "SIDEKIQ_SUPERVISOR_FLUSH_INTERVAL_SECONDS": "0.05",
        **{f"SIDEKIQ_SUPERVISOR_{name.upper()}": value for name, value in settings.items()},
    }
    stats: dict[str, Any] = orjson.loads(
        await run_ruby(SEND_EVENTS, env, str(count).encode() + b" " + how.encode())
    )
    return stats


def jid(index: int) -> str:
    return f"{index:024x}"


async def test_a_batch_carries_the_token_and_each_event_with_its_own_time() -> None:
    recorder = Recorder(script=[])
    before = time.time()
    with fake_supervisor(recorder) as url:
        stats = await send(url, 3, "wait")
    assert stats["sent"] == 3
    path, headers, body = recorder.requests[0]
    assert path == "/api/v1/events"
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["content-type"] == "application/json"
    assert [event["job_id"] for event in body] == [jid(0), jid(1), jid(2)]
    first = body[0]
    assert {k: first[k] for k in ("event", "job_class", "queue", "arguments")} == {
        "event": "queued",
        "job_class": "WireJob",
        "queue": "wire",
        "arguments": '[0,"héllo"]',
    }
    assert before <= first["at"] <= time.time()


async def test_a_503_is_retried_until_the_batch_is_accepted() -> None:
    unavailable = Answer(503, {"error": "unavailable"}, {"Retry-After": "0"})
    recorder = Recorder(script=[unavailable, unavailable])
    with fake_supervisor(recorder) as url:
        stats = await send(url, 5, "wait")
    assert (stats["sent"], stats["failed_requests"]) == (5, 2)
    assert [recorder.jids(n) for n in range(3)] == [[jid(i) for i in range(5)]] * 3


async def test_a_4xx_is_never_retried() -> None:
    recorder = Recorder(script=[], then=Answer(401, {"error": "unauthorized"}))
    with fake_supervisor(recorder) as url:
        stats = await send(url, 5, "wait")
    assert stats["rejected"] == 5
    assert len(recorder.requests) == 1


async def test_a_422_drops_only_the_elements_it_names() -> None:
    invalid = Answer(422, {"error": "invalid_input", "fields": {"[1].job_id": "is required"}})
    recorder = Recorder(script=[invalid])
    with fake_supervisor(recorder) as url:
        stats = await send(url, 4, "wait")
    assert (stats["sent"], stats["rejected"]) == (3, 1)
    assert recorder.jids(1) == [jid(0), jid(2), jid(3)]


async def test_the_buffer_stays_bounded_dropping_the_oldest_events() -> None:
    recorder = Recorder(script=[], then=Answer(503, {"error": "unavailable"}))
    started = time.monotonic()
    with fake_supervisor(recorder) as url:
        stats = await send(url, 50, "exit", buffer_size="10", shutdown_timeout_seconds="0.5")
    elapsed = time.monotonic() - started
    assert (stats.get("sent", 0), stats["dropped"]) == (0, 50)  # 40 when full, 10 at exit
    assert recorder.requests, "the sender tried at exit"
    assert {j for n in range(len(recorder.requests)) for j in recorder.jids(n)} == {
        jid(i) for i in range(40, 50)
    }
    assert elapsed < 10.0  # the flush at exit gave up at its deadline


async def test_a_422_about_the_batch_size_halves_the_batches() -> None:
    too_many = Answer(422, {"error": "invalid_input", "fields": {"events": "at most 2 events"}})
    recorder = Recorder(script=[too_many])
    with fake_supervisor(recorder) as url:
        stats = await send(url, 5, "wait", batch_size="5")
    assert stats["sent"] == 5
    assert [len(recorder.jids(n)) for n in range(len(recorder.requests))] == [5, 2, 2, 1]
