"""A TCP proxy in the test's event loop that a test can cut, blackhole and restore.

It stands between the app and MariaDB so a test can take the database away the two ways networks
do: `cut()` resets every connection and refuses new ones at once; `blackhole()` keeps sockets open
but forwards nothing, so the client's operations hang until its own timeouts fire.
No flow control: it is meant for a test's few small queries, not for bulk traffic.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import struct

# SO_LINGER on, 0 seconds: close() sends a TCP RST instead of a FIN, like a crashed peer.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class Mode(enum.Enum):
    FORWARD = "forward"
    CUT = "cut"
    BLACKHOLE = "blackhole"


class _Side(asyncio.Protocol):
    """One socket of a proxied connection; the link decides what its bytes do."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.link.closed:  # accepted while cut, or upstream connected after a close
            _close(transport, reset=True)

    def data_received(self, data: bytes) -> None:
        self.link.forward(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close()


class _Link:
    """A client socket and its upstream socket; bytes pass only while it is not held."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self)
        self.upstream: _Side | None = None
        self.early: list[bytes] = []  # client bytes that arrived before upstream connected
        self.held = False
        self.closed = False

    def forward(self, side: _Side, data: bytes) -> None:
        if self.held or self.closed:
            return
        if side is self.client:
            if self.upstream is None or self.upstream.transport is None:
                self.early.append(data)
            else:
                self.upstream.transport.write(data)
        elif self.client.transport is not None:
            self.client.transport.write(data)

    def attach(self, upstream: _Side) -> None:
        self.upstream = upstream
        assert upstream.transport is not None
        for data in self.early:
            upstream.transport.write(data)
        self.early.clear()

    def close(self, *, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.proxy.links.discard(self)
        for side in (self.client, self.upstream):
            if side is not None and side.transport is not None:
                _close(side.transport, reset=reset)


def _close(transport: asyncio.Transport, *, reset: bool) -> None:
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if reset and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    transport.abort()


class TcpProxy:
    """Listens on 127.0.0.1:<free port> and forwards to `upstream_host:upstream_port`."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.mode = Mode.FORWARD
        self.links: set[_Link] = set()
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._connecting: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, "127.0.0.1", 0)

    async def aclose(self) -> None:
        self.cut()
        for task in self._connecting:
            task.cancel()
        await asyncio.gather(*self._connecting, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.sleep(0)  # aborted transports close their sockets on the next loop pass

    def cut(self) -> None:
        """Reset every open connection; new ones are reset as soon as they are accepted."""
        self.mode = Mode.CUT
        self._close_all(reset=True)

    def blackhole(self) -> None:
        """Keep every socket open but forward nothing, on open and on new connections."""
        self.mode = Mode.BLACKHOLE
        for link in self.links:
            link.held = True

    def restore(self) -> None:
        """Forward again; blackholed sockets are closed, so their clients reconnect."""
        self.mode = Mode.FORWARD
        self._close_all(reset=True)

    def _close_all(self, *, reset: bool) -> None:
        for link in list(self.links):
            link.close(reset=reset)

    def _accept(self) -> _Side:
        self.accepted += 1
        link = _Link(self)
        self.links.add(link)
        if self.mode is Mode.CUT:
            link.close()  # its socket is reset in connection_made: no handshake, ever
        elif self.mode is Mode.BLACKHOLE:
            link.held = True
        else:
            task = asyncio.create_task(self._connect_upstream(link))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)
        return link.client

    async def _connect_upstream(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        upstream = _Side(link)
        try:
            await loop.create_connection(lambda: upstream, self.upstream_host, self.upstream_port)
        except OSError:
            link.close(reset=True)
            return
        if not link.closed:  # else connection_made has already reset it
            link.attach(upstream)
