"""The HTTP/1.1 protocol `serve` runs: uvicorn's httptools protocol with two deadlines, so a
client trickling a byte now and then cannot hold a connection. A request's headers must be
complete within SUPERVISOR_HEADER_TIMEOUT_SECONDS of its first byte (or of connecting), its whole
body within SUPERVISOR_BODY_TIMEOUT_SECONDS of its headers; past either, 408 and the connection
is closed. uvicorn bounds only the idle time between requests (timeout_keep_alive)."""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

TIMED_OUT = b"the request took too long to arrive\n"
TIMED_OUT_RESPONSE = b"".join(
    [
        b"HTTP/1.1 408 Request Timeout\r\n",
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(TIMED_OUT),
        b"connection: close\r\n\r\n",
        TIMED_OUT,
    ]
)


class DeadlineProtocol(HttpToolsProtocol):
    """One connection. At most one deadline runs at a time: the headers' from connecting or a
    request's first byte until its headers are in, then the body's until the message ends."""

    header_timeout_seconds = 10.0
    body_timeout_seconds = 30.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._arm(self.header_timeout_seconds)  # a client that connects and sends nothing

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the next request on a kept-alive connection
            self._arm(self.header_timeout_seconds)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout_seconds)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        """408 when no response is under way on this connection (else it would be cut in two),
        then close; the application, if it waits for the body, sees the client disconnect."""
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        idle = cycle is None or cycle.response_complete or not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # nothing more of its response may reach the socket
            cycle.message_event.set()
        if idle:
            self.transport.write(TIMED_OUT_RESPONSE)
        log.debug("closed a connection whose request did not arrive in time: %s", self.client)
        self.transport.close()


def deadline_protocol(
    header_timeout_seconds: float, body_timeout_seconds: float
) -> type[DeadlineProtocol]:
    """The protocol class for uvicorn's `http=` (it builds one per connection itself)."""

    class Configured(DeadlineProtocol):
        pass

    Configured.header_timeout_seconds = header_timeout_seconds
    Configured.body_timeout_seconds = body_timeout_seconds
    return Configured
