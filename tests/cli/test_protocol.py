"""`serve` cuts off slow clients: a request whose headers or body do not arrive within
SUPERVISOR_HEADER_TIMEOUT_SECONDS / SUPERVISOR_BODY_TIMEOUT_SECONDS gets 408 and its connection
is closed (the real service over loopback TCP, with deadlines of half a second)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.live import LiveSupervisor, run_supervisor

DEADLINES = {"SUPERVISOR_HEADER_TIMEOUT_SECONDS": "0.5", "SUPERVISOR_BODY_TIMEOUT_SECONDS": "0.5"}
# Far above the deadlines: only a server that never closes the connection reaches it.
BOUND_SECONDS = 10.0
HELD = "the server still held the connection after {seconds:g} s; it received: {got!r}"
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\n"


@pytest.fixture(scope="module")
def live(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSupervisor]:
    log_dir = tmp_path_factory.mktemp("slow-clients")
    with run_supervisor(sqlite_url, log_dir, extra_env=DEADLINES) as supervisor:
        yield supervisor


def until_closed(live: LiveSupervisor, *chunks: bytes, after: bytes = b"") -> bytes:
    """Send `chunks` (each after the server answered with `after`, if given), then nothing
    more; everything the server sends until it closes the connection."""
    address = urlsplit(live.url)
    with socket.create_connection((address.hostname, address.port), BOUND_SECONDS) as sock:
        got = b""
        try:
            for index, chunk in enumerate(chunks):
                while index and after not in got:
                    got += sock.recv(4096)
                sock.sendall(chunk)
            while received := sock.recv(4096):
                got += received
        except TimeoutError:
            pytest.fail(HELD.format(seconds=BOUND_SECONDS, got=got))
    return got


def test_a_connection_that_sends_nothing_is_closed(live: LiveSupervisor) -> None:
    assert until_closed(live).startswith(TIMED_OUT)


def test_headers_that_never_finish_are_cut_off(live: LiveSupervisor) -> None:
    got = until_closed(live, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
    assert got.startswith(TIMED_OUT)


def test_a_body_that_never_finishes_is_cut_off(live: LiveSupervisor) -> None:
    head = b"POST /api/v1/jobs/requeue HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    got = until_closed(live, head + b"Content-Length: 100\r\n\r\n" + b'{"dry')
    assert got.startswith(TIMED_OUT)
    live.check_alive()


def test_the_next_request_on_a_kept_alive_connection_has_a_deadline_too(
    live: LiveSupervisor,
) -> None:
    """The first request is answered; the second begins, after that answer, and stalls."""
    whole = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    got = until_closed(live, whole, b"GET /healthz HTTP/1.1\r\nHo", after=b'"ok"}')
    first, _, rest = got.partition(b'"ok"}')
    assert first.startswith(b"HTTP/1.1 200 OK")
    assert rest.startswith(TIMED_OUT)
