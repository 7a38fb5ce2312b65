"""An upstream that compresses its answers (as real providers do when asked, and the relay's
client asks): the caller gets the decoded JSON and the call is metered from its usage. The same
upstream sets a cookie, which the relay never sends back (it would cross tenants)."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ingest.topics import USAGE_EVENTS
from tests.relay.conftest import start_relay_with_provider
from tests.relay.test_relay_endpoints import ask, events, tagged
from tests.support import end_offsets_by_partition

ANSWER = {
    "id": "chatcmpl-zipped",
    "object": "chat.completion",
    "created": 1763800000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "compressed hello"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
}


class Gzipping(BaseHTTPRequestHandler):
    cookies_seen: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.cookies_seen.extend(self.headers.get_all("cookie") or [])
        body = json.dumps(ANSWER).encode()
        if "gzip" in self.headers.get("accept-encoding", ""):
            body = gzip.compress(body)
            encoding = "gzip"
        else:
            encoding = "identity"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-encoding", encoding)
        self.send_header("content-length", str(len(body)))
        self.send_header("set-cookie", "session=tenant-secret; Path=/")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def zipped_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Gzipping)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # a host name, not an address: cookie jars keep no cookies for addresses
        yield f"http://localhost:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_a_compressed_answer_reaches_the_caller_decoded_and_is_metered(
    broker: str, tmp_path: Path, zipped_upstream: str
) -> None:
    url, services = start_relay_with_provider(
        tmp_path,
        broker,
        "zipped",
        zipped_upstream,
        {"zipped-chat": [{"provider": "zipped", "model": "gpt-4o-mini"}]},
    )
    try:
        since = end_offsets_by_partition(broker, USAGE_EVENTS)
        feature, sdk = tagged(url)
        for answer in ask(sdk, "zipped-chat", 2):
            assert answer.choices[0].message.content == "compressed hello"
        found = events(broker, since, feature, 2)
        for event in found:
            assert (event.provider, event.outcome, event.usage_source) == (
                "zipped",
                "ok",
                "provider",
            )
            assert (event.tokens.input_uncached, event.tokens.output) == (11, 3)
        assert Gzipping.cookies_seen == []
    finally:
        for service in services:
            service.stop()
