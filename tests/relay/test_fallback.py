"""Fallback to the next target, metered per attempt, and a circuit breaker that stops trying a
target that keeps failing."""

from __future__ import annotations

from pathlib import Path

import httpx

from ingest.topics import USAGE_EVENTS
from tests.relay.conftest import start_relay_with_provider
from tests.relay.test_relay_endpoints import ask, events, tagged
from tests.support import end_offsets_by_partition, free_port


def test_failed_attempts_fall_back_and_an_open_circuit_is_skipped(
    broker: str, tmp_path: Path
) -> None:
    url, services = start_relay_with_provider(
        tmp_path,
        broker,
        "flaky",
        f"http://127.0.0.1:{free_port()}/v1",  # nothing listens there
        {
            "resilient-chat": [
                {"provider": "flaky", "model": "gpt-4o-mini"},
                {"provider": "openai", "model": "gpt-4o-mini"},  # no key: simulated
            ]
        },
        {
            "OPENAI_API_KEY": "",
            "TOKENOPS_BREAKER_FAILURES": "2",
            "TOKENOPS_BREAKER_COOLDOWN_S": "300",
        },
    )
    try:
        since = end_offsets_by_partition(broker, USAGE_EVENTS)
        feature, sdk = tagged(url)
        assert all(answer.usage is not None for answer in ask(sdk, "resilient-chat", 4))
        found = events(broker, since, feature, 6)
        failed = [e for e in found if e.attempt == 1]
        served = [e for e in found if e.attempt == 2]
        assert [(e.provider, e.outcome) for e in failed] == [("flaky", "connection_error")] * 2
        assert all(e.requested_model == "resilient-chat" for e in found)
        assert [e.outcome for e in served] == ["ok"] * 4
        assert sorted(e.fallback_reason or "" for e in served) == [
            "circuit_open",
            "circuit_open",
            "connection_error",
            "connection_error",
        ]
        ready = httpx.get(f"{url}/readyz").json()
        assert ready["circuits"]["flaky/gpt-4o-mini"] == "open"
        logs = "".join(s.log.read_text() for s in services)
        assert "secret-flaky-key" not in logs + str([e.model_dump() for e in found])
    finally:
        for service in services:
            service.stop()
