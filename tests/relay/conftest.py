"""A running relay and simulated provider, shared by the relay tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Service, free_port


def start_relay(tmp: Path, env: dict[str, str]) -> tuple[str, list[Service]]:
    relay_port, sim_port = free_port(), free_port()
    env = {
        "TOKENOPS_DATA_DIR": str(tmp),
        "TOKENOPS_RELAY_PORT": str(relay_port),
        "TOKENOPS_SIMULATOR_PORT": str(sim_port),
        "TOKENOPS_SIMULATE": "always",
        **env,
    }
    simulator = Service(["simulator"], env, tmp / "simulator.log")
    relay = Service(["relay"], env, tmp / "relay.log")
    simulator.wait_http(f"http://127.0.0.1:{sim_port}/healthz")
    relay.wait_http(f"http://127.0.0.1:{relay_port}/healthz")
    return f"http://127.0.0.1:{relay_port}", [relay, simulator]


@pytest.fixture(scope="package")
def relay_url(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("relay")
    url, services = start_relay(
        tmp, {"TOKENOPS_KAFKA_BOOTSTRAP": broker, "TOKENOPS_MAX_BODY_BYTES": str(64 * 1024)}
    )
    try:
        yield url
    finally:
        for service in services:
            service.stop()
