"""A running relay and simulated provider, shared by the relay tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import Service, free_port
from tokenops.settings import DEMO_CONFIG_DIR


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


def start_relay_with_provider(
    tmp: Path,
    broker: str,
    provider: str,
    base_url: str,
    models: dict[str, list[dict[str, Any]]],
    env: dict[str, str] | None = None,
) -> tuple[str, list[Service]]:
    """A relay whose catalog adds `provider` at `base_url`, with a key (so it is called for
    real, its key being `secret-<provider>-key`), and the catalog entries `models`."""
    config = tmp / "config"
    shutil.copytree(DEMO_CONFIG_DIR, config)
    catalog = yaml.safe_load((config / "models.yaml").read_text())
    key_env = f"TOKENOPS_TEST_{provider.upper()}_KEY"
    catalog["providers"][provider] = {"base_url": base_url, "api_key_env": key_env}
    catalog["models"].update(models)
    (config / "models.yaml").write_text(yaml.safe_dump(catalog))
    return start_relay(
        tmp,
        {
            "TOKENOPS_KAFKA_BOOTSTRAP": broker,
            "TOKENOPS_CONFIG_DIR": str(config),
            "TOKENOPS_SIMULATE": "auto",  # a provider with a key is called; one without, simulated
            key_env: f"secret-{provider}-key",
            **(env or {}),
        },
    )


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
