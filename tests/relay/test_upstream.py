"""The relay's upstream client against a real loopback server that writes its answer in
pieces: lines split at every kind of line end, wherever the pieces break, and failures as the
two kinds the relay meters."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from yarl import URL

from relay.upstream import Upstream, UpstreamTimeout, UpstreamUnreachable
from tests.support import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)


def answer_in_pieces(pieces: list[bytes]) -> Handler:
    """An HTTP/1.1 answer whose body is sent piece by piece, each flushed on its own."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = b"".join(pieces)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
        )
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.close()

    return handle


async def serving(handler: Handler) -> tuple[asyncio.Server, URL]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    server.sockets[0].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port = server.sockets[0].getsockname()[1]
    return server, URL(f"http://127.0.0.1:{port}/v1/chat/completions")


async def lines_of(handler: Handler) -> list[str]:
    server, url = await serving(handler)
    upstream = Upstream()
    try:
        response = await upstream.post(url, b"{}", {}, connect_s=5, read_s=5)
        found: list[str] = []
        lines: AsyncIterator[str] = response.lines()
        async for line in lines:
            found.append(line)
        response.close()
        return found
    finally:
        await upstream.close()
        server.close()
        await server.wait_closed()


def test_lines_split_at_lf_crlf_and_cr_wherever_the_pieces_break() -> None:
    pieces = [
        b'data: {"a": "\xe2\x80\xa8 stays inside"}\r',  # a CRLF broken between two pieces
        b"\n\r\n",
        b"data: two\rdata: three\n",
        b"\ndata: fo",
        b"ur\r\n\r\n",
        b"data: [DONE]",  # no line end before the body ends
    ]
    assert asyncio.run(lines_of(answer_in_pieces(pieces))) == [
        'data: {"a": "\u2028 stays inside"}',
        "",
        "data: two",
        "data: three",
        "",
        "data: four",
        "",
        "data: [DONE]",
    ]


def test_a_cr_at_the_very_end_ends_the_last_line() -> None:
    assert asyncio.run(lines_of(answer_in_pieces([b"data: x\r", b"data: y\r"]))) == [
        "data: x",
        "data: y",
    ]


def test_no_listener_is_a_connect_error_and_silence_a_timeout() -> None:
    async def refused() -> None:
        upstream = Upstream()
        try:
            url = URL(f"http://127.0.0.1:{free_port()}/v1")
            await upstream.post(url, b"{}", {}, connect_s=5, read_s=5)
        finally:
            await upstream.close()

    with pytest.raises(UpstreamUnreachable) as refusal:
        asyncio.run(refused())
    assert refusal.value.code == "connect_error"

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)
        writer.close()

    async def waits() -> None:
        server, url = await serving(silent)
        upstream = Upstream()
        try:
            await upstream.post(url, b"{}", {}, connect_s=5, read_s=0.3)
        finally:
            await upstream.close()
            server.close()

    with pytest.raises(UpstreamTimeout):
        asyncio.run(waits())


def test_a_connection_that_breaks_mid_answer_is_lost() -> None:
    async def breaks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    async def reads() -> bytes:
        server, url = await serving(breaks)
        upstream = Upstream()
        try:
            response = await upstream.post(url, b"{}", {}, connect_s=5, read_s=5)
            return await response.read()
        finally:
            await upstream.close()
            server.close()

    with pytest.raises(UpstreamUnreachable) as lost:
        asyncio.run(reads())
    assert lost.value.code == "connection_lost"
