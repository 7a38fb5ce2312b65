"""The floor under the relay's added latency: the least a Python proxy on the relay's stack does.

An ASGI app on the same server stack as the relay (uvicorn with uvloop and httptools) that reads
the body and posts it with the same HTTP client (one pooled aiohttp session) to the simulator,
then returns the answer. No routing, validation, key check, budget gate, metering or events.
`bench/relay_overhead.py` measures it next to the relay, so the relay's own cost per call is
what it adds on top of this path.

    UPSTREAM=http://127.0.0.1:8001/openai uvicorn --app-dir bench bare_proxy:app --loop uvloop
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8001/openai")
_session: aiohttp.ClientSession | None = None


async def app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    global _session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _session is not None:
                    await _session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if _session is None:
        _session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {"content-type": "application/json"}
    async with _session.post(UPSTREAM + scope["path"], data=body, headers=headers) as upstream:
        content = await upstream.read()
        status = upstream.status
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": content})
