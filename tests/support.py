"""Helpers for tests that drive real tokenops processes, the real broker and real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.structs import ConsumerRecord
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ingest.alert_event import AlertEvent
from ingest.topics import ALERTS
from ingest.usage_event import TokenCounts, UsageEvent, new_event_id

REPO = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO.parent / "shared" / "provider-samples"
"""Real provider payloads, kept beside the repository (see its README)."""


def provider_sample(name: str) -> Path:
    """The path of one provider sample; skips the test when the samples are not there."""
    if not SAMPLES_DIR.is_dir():
        pytest.skip(
            f"provider samples folder not found at {SAMPLES_DIR} "
            "(expected ../shared/provider-samples next to the repo root)"
        )
    path = SAMPLES_DIR / name
    if not path.is_file():
        pytest.skip(f"provider sample {name} not found in {SAMPLES_DIR}")
    return path


def usage_event(tokens: TokenCounts | None = None, **fields: Any) -> UsageEvent:
    """A valid usage event of acme calling openai/gpt-4o-mini; `fields` override anything."""
    values: dict[str, Any] = {
        "event_id": new_event_id(),
        "event_time": datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
        "tenant": "acme",
        "endpoint": "chat.completions",
        "requested_model": "gpt-4o-mini",
        "served_model": "gpt-4o-mini",
        "provider": "openai",
        "provider_model": "gpt-4o-mini",
        "tokens": tokens or TokenCounts(),
    }
    values.update(fields)
    return UsageEvent(**values)


def alert_event(tenant: str, **fields: Any) -> AlertEvent:
    """A new BREACH of `tenant`'s monthly budget; `fields` override anything."""
    values: dict[str, Any] = {
        "alert_id": new_event_id(),
        "kind": "budget",
        "tenant": tenant,
        "scope": {"tenant": tenant},
        "state": "BREACH",
        "period": "month",
        "period_start": datetime(2026, 11, 1, tzinfo=UTC),
        "threshold": Decimal("1.0"),
        "limit_usd": Decimal("250.00"),
        "spend_usd": Decimal("250.000000000000000123"),
        "created_at": datetime(2026, 11, 3, 12, 0, tzinfo=UTC),
        "message": f"{tenant} spent $250.000000000000000123 of its month budget $250.00",
        "budget_id": "b-1",
    }
    values.update(fields)
    return AlertEvent(**values)


def publish_alerts(bootstrap: str, *alerts: AlertEvent) -> None:
    """Publish on the alerts topic the way streams does (key = tenant), in order."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for alert in alerts:
            producer.send(ALERTS, key=alert.tenant.encode(), value=alert.to_wire()).get(timeout=10)
    finally:
        producer.close()


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open until all are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Service:
    """One `tokenops <command>` child process with its own environment; logs go to a file."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._handle = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tokenops", *command],
            env={**os.environ, **env},
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def wait_http(self, url: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"service exited early:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(url, timeout=1.0).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{url} not ready in {timeout_s} s:\n{self.log.read_text()[-4000:]}")

    def stop(self, sig: int | None = None) -> int:
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._handle.close()
        return self.process.returncode


def topic_end_offsets(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, since: dict[int, int] | None = None) -> list[bytes]:
    """Every record value of `topic` (from the `since` offsets per partition, else the start)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=2000)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, (since or {}).get(tp.partition, 0))
        values: list[bytes] = []
        remaining = {tp for tp in partitions if consumer.position(tp) < ends[tp]}
        deadline = time.monotonic() + 20
        while remaining and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                values += [r.value for r in records]
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return values
    finally:
        consumer.close()


def end_offsets_by_partition(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


@contextmanager
def served_on_loopback(app: Any, **config: Any) -> Iterator[str]:
    """Serve the ASGI `app` with uvicorn on a free loopback port in a thread (uvicorn.Config
    options in `config`); yields its base URL and stops the server on exit."""
    import uvicorn

    port = free_port()
    options = {"log_level": "critical", **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@contextmanager
def warehouse_api_on_loopback(app: Any, monkeypatch: Any) -> Iterator[int]:
    """Serve `app` (a warehouse API) on a free loopback port in a thread, with the settings
    pointing the CLI at it; yields the port. The server stops and the settings cache is cleared
    on exit."""
    from tokenops.settings import get_settings

    with served_on_loopback(app, log_level="warning", lifespan="off") as url:
        port = int(url.rsplit(":", 1)[1])
        monkeypatch.setenv("TOKENOPS_WAREHOUSE_HOST", "127.0.0.1")
        monkeypatch.setenv("TOKENOPS_WAREHOUSE_PORT", str(port))
        get_settings.cache_clear()
        try:
            yield port
        finally:
            get_settings.cache_clear()


def consumer_record(
    topic: str, partition: int, offset: int, value: bytes, at_ms: int = 0, key: bytes = b"acme"
) -> ConsumerRecord[bytes, bytes]:
    """A record as aiokafka hands it to the warehouse loader."""
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=at_ms,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=(),
    )


def api_as_finance(store: Any, *routers: Any) -> Any:
    """A FastAPI app with `routers` on `store`, every request made by a viewer of every tenant
    (access control has its own tests, in test_access.py)."""
    from fastapi import FastAPI

    from warehouse.access import Viewer, current_viewer

    app = FastAPI()
    for router in routers:
        app.include_router(router)
    app.state.store = store
    app.dependency_overrides[current_viewer] = lambda: Viewer("finance", None)
    return app
