"""Known failures reach the user as one line naming the problem, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, free_port
from tokenops.settings import Settings
from tokenops.supervisor import pipeline_children


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


def test_prices_show_resolves_catalog_targets_and_contracts(tmp_path: Path) -> None:
    shown = run_tokenops(
        ["prices", "show", "gpt-4o", "--tenant", "initech", "--at", "2026-06-01"], tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    assert "book:openai:gpt-4o:2026-01-01:initech:*" in shown.stdout
    assert "input_uncached 2, cache_read 1" in shown.stdout
    listed = run_tokenops(["prices", "show", "qwen3-max"], tmp_path)
    assert "CNY (1 CNY = 0.1405 USD" in listed.stdout
    assert "whole call when input [32768, 131072)" in listed.stdout
    unknown = run_tokenops(["prices", "show", "gpt-9"], tmp_path)
    assert unknown.returncode == 2 and "not in the model catalog" in unknown.stderr


def test_prices_check_names_models_that_would_be_unpriced(tmp_path: Path) -> None:
    checked = run_tokenops(["prices", "check"], tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "missing  qwen-turbo -> alibaba/qwen-turbo: calls are unpriced" in checked.stdout
    assert "contract openai/gpt-4o" in checked.stdout


def test_prices_add_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    base = ["prices", "add", "--provider", "openai", "--model", "gpt-4o", "--output", "1"]
    bad = run_tokenops(
        [*base, "--input", "cheap", "--effective-from", "2026-01-01", "--source", "x"], tmp_path
    )
    assert bad.returncode == 2 and "--input must be a decimal number" in bad.stderr
    no_fx = run_tokenops(
        [*base, "--input", "1", "--currency", "EUR", "--effective-from", "2026-01-01",
         "--source", "x"],
        tmp_path,
    )  # fmt: skip
    assert no_fx.returncode == 2 and "no EUR->USD rate" in no_fx.stderr
    assert "Traceback" not in bad.stderr + no_fx.stderr
    assert not (tmp_path / "price_additions.jsonl").exists()


def test_up_starts_the_configured_number_of_streams_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TOKENOPS_STREAMS_WORKERS", raising=False)

    def streams(settings: Settings) -> list[tuple[str, str]]:
        children = pipeline_children(settings, demo=False)
        return [(c.name, c.command) for c in children if c.command == "streams"]

    assert streams(Settings()) == [("streams", "streams")]
    assert streams(Settings(streams_workers=2)) == [
        ("streams", "streams"),
        ("streams-2", "streams"),
    ]
