"""HTTP/1.1 to the providers: one pooled aiohttp session, with the relay's small error model.

The relay posts a JSON body and reads the answer whole, or line by line for a stream; nothing
else of an HTTP client's API is on its hot path (a general client's request and response
objects cost more per call than the rest of the relay's work). aiohttp's errors come out as
two kinds the forwarding code meters: `UpstreamTimeout` and `UpstreamUnreachable` (no
connection, or one that broke before the answer was complete). Compressed answers are decoded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager

import aiohttp
from yarl import URL


class UpstreamError(Exception):
    """The upstream did not give a complete answer."""


class UpstreamTimeout(UpstreamError):
    """No connection or no data within the call's time limits."""


class UpstreamUnreachable(UpstreamError):
    """The connection failed, was refused or broke off, or the answer was not valid HTTP."""

    def __init__(self, message: str, *, connected: bool) -> None:
        super().__init__(message)
        self.code = "connection_lost" if connected else "connect_error"
        """The usage event's error code."""


@contextmanager
def upstream_errors() -> Iterator[None]:
    """aiohttp's errors as the relay's two kinds."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(str(exc) or "timeout") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamUnreachable(str(exc), connected=False) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnreachable(str(exc) or type(exc).__name__, connected=True) from exc


class UpstreamResponse:
    """An answer whose status and headers have arrived; its body is read once, whole or in
    lines, and the connection goes back to the pool when it is read or closed."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        """Case-insensitive."""

    async def read(self) -> bytes:
        try:
            with upstream_errors():
                return await self._response.read()
        finally:
            self._response.release()

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines without their ends, split at LF, CRLF or CR as server-sent
        events are; only those characters end a line (JSON inside a line may hold others).
        Each chunk is searched once, so a line of megabytes (an image's base64) costs its
        length, not its square."""
        pending: list[bytes] = []  # the pieces of a line that has not ended yet
        after_cr = False
        with upstream_errors():
            async for chunk in self._response.content.iter_any():
                if after_cr and chunk.startswith(b"\n"):
                    chunk = chunk[1:]  # the LF of a CRLF that the chunks split
                if not chunk:
                    continue
                after_cr = chunk.endswith(b"\r")
                if b"\r" in chunk:
                    chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                parts = chunk.split(b"\n")
                if len(parts) == 1:
                    pending.append(chunk)
                    continue
                pending.append(parts[0])
                yield b"".join(pending).decode("utf-8", errors="replace")
                for line in parts[1:-1]:
                    yield line.decode("utf-8", errors="replace")
                pending = [parts[-1]] if parts[-1] else []
        if pending:
            yield b"".join(pending).decode("utf-8", errors="replace")

    def close(self) -> None:
        self._response.release()


class Upstream:
    def __init__(self, max_connections: int = 1000) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            # no cookie jar: upstream cookies must not pass from one tenant's call to another's
            self._session = aiohttp.ClientSession(
                connector=connector,
                skip_auto_headers=("User-Agent",),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def post(
        self, url: URL, body: bytes, headers: Mapping[str, str], *, connect_s: float, read_s: float
    ) -> UpstreamResponse:
        """Send the request and wait for the status and headers of the answer."""
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_s, sock_read=read_s)
        with upstream_errors():
            response = await self._client().post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            )
        return UpstreamResponse(response)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
