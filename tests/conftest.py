"""Shared fixtures: a real embedded broker and tokenops services run as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Service, free_port
from tokenops.broker import ensure_topics, start_embedded_broker


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A Tansu broker on a free loopback port with every pipeline topic; stopped by its PID."""
    port = free_port()
    process = start_embedded_broker(port)
    bootstrap = f"127.0.0.1:{port}"
    try:
        ensure_topics(bootstrap)
        yield bootstrap
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    """Collects services started by a test and stops them all afterwards."""
    started: list[Service] = []
    yield started
    for service in reversed(started):
        service.stop()
