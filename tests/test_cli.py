"""Known failures reach the user as one line naming the problem, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, free_port


def run_tokenops(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenops", *args],
        env={**os.environ, "TOKENOPS_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


@pytest.mark.parametrize("command", ["streams", "warehouse"])
def test_unreachable_broker_is_one_line_naming_the_address(command: str, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    result = run_tokenops(
        [command],
        tmp_path,
        TOKENOPS_KAFKA_BOOTSTRAP=address,
        TOKENOPS_WAREHOUSE_PORT=str(free_port()),
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "Traceback" not in result.stderr


def test_broker_on_a_taken_port_is_refused_clearly(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_tokenops(["broker", "--port", str(port)], tmp_path)
    assert result.returncode == 2
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_is_reported_with_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "models.yaml").write_text("providers: {}\nmodels: {x: [{provider: nope, model: y}]}")
    (config / "tenants.yaml").write_text("tenants: []")
    result = run_tokenops(
        ["relay"],
        tmp_path,
        TOKENOPS_CONFIG_DIR=str(config),
        TOKENOPS_RELAY_PORT=str(free_port()),
    )
    assert result.returncode == 2
    assert "models.yaml" in result.stderr and "unknown provider 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = run_tokenops(["relay"], tmp_path, TOKENOPS_RELAY_PORT="0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tokenops: invalid setting: TOKENOPS_RELAY_PORT: Input should be greater than 0"
    ]
