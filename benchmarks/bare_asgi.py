"""The ceiling for the ingest benchmark: a bare ASGI handler on the same uvicorn settings that
reads and parses the same form body and answers 201, with no framework and no database."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

Scope = dict[str, Any]
CREATED = {
    "type": "http.response.start",
    "status": 201,
    "headers": [(b"content-type", b"application/json")],
}


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    fields = dict(parse_qsl(body.decode()))
    await send(CREATED)
    await send({"type": "http.response.body", "body": b'{"event":"%s"}' % fields["queue"].encode()})
