"""docker-compose.yml cannot run here (no Docker engine): check its structure and that every
service runs a real `tokenops` subcommand."""

from __future__ import annotations

from typing import Any

import typer.main
import yaml

from tests.support import REPO
from tokenops.cli import app


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def test_kafka_runs_in_kraft_mode_from_the_official_image() -> None:
    kafka = compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "KAFKA_CONTROLLER_QUORUM_VOTERS" in env
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "healthcheck" in kafka


def test_every_component_is_a_real_tokenops_subcommand_with_a_healthcheck() -> None:
    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    services = compose()["services"]
    components = {"simulator", "relay", "streams", "warehouse"}
    assert components <= set(services)
    for name, service in services.items():
        if name == "kafka":
            continue
        argv = service["command"]
        assert argv[0] == "tokenops" and argv[1] in commands, name
        if name in components:
            assert "healthcheck" in service, name
            assert service["environment"]["TOKENOPS_KAFKA_BOOTSTRAP"] == "kafka:9092"
