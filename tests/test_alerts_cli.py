"""`tokenops alerts tail` follows alerts in a terminal; `tokenops alerts deliver` refuses bad
config with one line. Both run as real processes."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import click
import pytest

from ingest.alert_event import AlertEvent
from tests.support import REPO, alert_event, free_port, publish_alerts
from tests.test_cli import run_tokenops
from tokenops.alerts_cli import alert_line


def lines_of(stream: IO[str]) -> queue.Queue[str]:
    """The stream's lines as they arrive, read on a thread (so reads can time out)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_tail_json_prints_new_alerts_of_the_tenant_and_stops_on_ctrl_c(
    broker: str, tmp_path: Path
) -> None:
    old = alert_event("t-tail")
    publish_alerts(broker, old)  # before the tail starts: not shown without --from-beginning
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenops", "alerts", "tail", "--json", "--tenant", "t-tail"],
        env={**os.environ, "TOKENOPS_KAFKA_BOOTSTRAP": broker, "TOKENOPS_DATA_DIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        out, err = lines_of(process.stdout), lines_of(process.stderr)
        assert err.get(timeout=20).startswith("following tokenops.alerts.v1 on ")
        new = alert_event("t-tail")
        publish_alerts(broker, alert_event("someone-else"), new)
        assert AlertEvent.model_validate_json(out.get(timeout=20)) == new
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        rest = "".join(err.get(timeout=5) for _ in range(err.qsize()))
        assert "Traceback" not in rest
        assert out.empty()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_tail_line_is_readable() -> None:
    unpriced = alert_event(
        "acme",
        kind="unpriced",
        state="WARN",
        scope={"provider": "alibaba", "model": "qwen-turbo"},
        created_at=datetime(2026, 11, 3, 12, 0, 5, tzinfo=UTC),
        message="alibaba/qwen-turbo has no price",
    )
    assert click.unstyle(alert_line(unpriced)) == (
        "2026-11-03 12:00:05Z  WARN       unpriced  acme [provider=alibaba model=qwen-turbo]  "
        "alibaba/qwen-turbo has no price"
    )


@pytest.mark.parametrize("command", ["tail", "deliver"])
def test_without_a_broker_it_is_one_line_naming_the_address(command: str, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    result = run_tokenops(["alerts", command], tmp_path, TOKENOPS_KAFKA_BOOTSTRAP=address)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "Traceback" not in result.stderr


def test_deliver_with_an_invalid_webhooks_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "webhooks.yaml").write_text("webhooks: [{name: x, url: 'http://h', format: xml}]")
    result = run_tokenops(["alerts", "deliver"], tmp_path, TOKENOPS_CONFIG_DIR=str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"tokenops: invalid webhooks file {tmp_path / 'webhooks.yaml'}: "
        "webhooks.0.format: Input should be 'slack' or 'json'"
    ]
