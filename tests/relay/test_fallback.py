"""Fallback to the next target, metered per attempt, and a circuit breaker that stops trying a
target that keeps failing."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import httpx
import openai
import yaml

from ingest.topics import USAGE_EVENTS
from tests.relay.conftest import start_relay
from tests.relay.test_relay_endpoints import events
from tests.support import end_offsets_by_partition, free_port
from tokenops.settings import DEMO_CONFIG_DIR


def test_failed_attempts_fall_back_and_an_open_circuit_is_skipped(
    broker: str, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    shutil.copytree(DEMO_CONFIG_DIR, config)
    catalog = yaml.safe_load((config / "models.yaml").read_text())
    catalog["providers"]["flaky"] = {
        "base_url": f"http://127.0.0.1:{free_port()}/v1",  # nothing listens there
        "api_key_env": "TOKENOPS_TEST_FLAKY_KEY",
    }
    catalog["models"]["resilient-chat"] = [
        {"provider": "flaky", "model": "gpt-4o-mini"},
        {"provider": "openai", "model": "gpt-4o-mini"},
    ]
    (config / "models.yaml").write_text(yaml.safe_dump(catalog))
    url, services = start_relay(
        tmp_path,
        {
            "TOKENOPS_KAFKA_BOOTSTRAP": broker,
            "TOKENOPS_CONFIG_DIR": str(config),
            "TOKENOPS_SIMULATE": "auto",  # flaky has a key, so it is "real"; openai has none
            "TOKENOPS_TEST_FLAKY_KEY": "secret-flaky-key",
            "OPENAI_API_KEY": "",
            "TOKENOPS_BREAKER_FAILURES": "2",
            "TOKENOPS_BREAKER_COOLDOWN_S": "300",
        },
    )
    try:
        since = end_offsets_by_partition(broker, USAGE_EVENTS)
        feature = f"f-{uuid.uuid4().hex[:8]}"
        sdk = openai.OpenAI(
            base_url=f"{url}/v1", api_key="sk-acme-demo", default_headers={"X-Feature": feature}
        )
        for _ in range(4):
            answer = sdk.chat.completions.create(
                model="resilient-chat", messages=[{"role": "user", "content": "hello"}]
            )
            assert answer.usage is not None
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
