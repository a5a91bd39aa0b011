"""The ceiling for the ingest benchmark: a bare ASGI handler on the same uvicorn settings that
reads and parses the same form body and answers 201 as the service's fast lane does (a small JSON
body with Content-Length), with no framework, no validation and no database."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

Scope = dict[str, Any]


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
    payload = b'{"queue":"%s","event":"queued"}' % fields.get("queue", "").encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
