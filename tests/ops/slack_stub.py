"""A stand-in for Slack's incoming webhooks: a threaded loopback HTTP server that answers every
POST as Slack does (200, `ok`) and records its path and JSON body."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True, slots=True)
class SlackPost:
    """One webhook call: the path it was posted to (which webhook) and its decoded JSON."""

    path: str
    body: dict[str, Any]


class SlackStub:
    """The posts received so far, safe to read from the test while the server thread appends."""

    def __init__(self) -> None:
        self.url = ""  # set once the server is bound to its port
        self._posts: list[SlackPost] = []
        self._lock = threading.Lock()

    def record(self, post: SlackPost) -> None:
        with self._lock:
            self._posts.append(post)

    def posts(self) -> list[SlackPost]:
        with self._lock:
            return list(self._posts)


def _handler(stub: SlackStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            stub.record(SlackPost(self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass  # keep the test output clean; the posts are recorded instead

    return Handler


@contextmanager
def run_slack_stub() -> Iterator[SlackStub]:
    """A stub on a free loopback port, serving in a thread until the block ends."""
    stub = SlackStub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    host, port = server.server_address[:2]
    stub.url = f"http://{host!s}:{port}"
    thread = threading.Thread(target=server.serve_forever, name="slack-stub", daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
