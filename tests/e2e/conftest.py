"""Start the whole pipeline the way a user does (`tokenops up`) in a temporary directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import REPO, free_ports
from tokenops.settings import DEMO_CONFIG_DIR

API_TOKEN = "fin-demo-token"
"""The demo finance token (access.yaml): the query API for every tenant."""
FINANCE = {"Authorization": f"Bearer {API_TOKEN}"}


@dataclass
class Pipeline:
    relay: str
    api: str
    process: subprocess.Popen[bytes]
    log: Path
    ports: list[int]
    env: dict[str, str]
    http: httpx.Client
    """Sends the finance token: the warehouse's query API answers it for every tenant."""

    def tokenops(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a `tokenops` command against this pipeline, as an operator would."""
        return subprocess.run(
            [sys.executable, "-m", "tokenops", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )


@contextmanager
def running_pipeline(
    tmp: Path, budgets: list[dict[str, Any]], config_files: dict[str, Any] | None = None
) -> Iterator[Pipeline]:
    """`config_files` maps a config file name (e.g. anomaly.yaml) to its content."""
    config = tmp / "config"
    shutil.copytree(DEMO_CONFIG_DIR, config)
    (config / "budgets.yaml").write_text(yaml.safe_dump({"budgets": budgets}))
    for name, content in (config_files or {}).items():
        (config / name).write_text(yaml.safe_dump(content))
    ports = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENOPS_")}
    env.update(
        TOKENOPS_CONFIG_DIR=str(config),
        TOKENOPS_DATA_DIR=str(tmp / "data"),
        TOKENOPS_EMBEDDED_BROKER_PORT=str(ports[0]),
        TOKENOPS_RELAY_PORT=str(ports[1]),
        TOKENOPS_WAREHOUSE_PORT=str(ports[2]),
        TOKENOPS_SIMULATOR_PORT=str(ports[3]),
        TOKENOPS_SIMULATE="always",
        TOKENOPS_API_TOKEN=API_TOKEN,
    )
    log = tmp / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tokenops", "up"], env=env, stdout=out, stderr=out, cwd=REPO
        )
    pipeline = Pipeline(
        relay=f"http://127.0.0.1:{ports[1]}",
        api=f"http://127.0.0.1:{ports[2]}",
        process=process,
        log=log,
        ports=ports,
        env={**env, "TOKENOPS_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports[0]}"},
        http=httpx.Client(headers=FINANCE),
    )
    try:
        deadline = time.monotonic() + 120
        while b"tokenops is up" not in log.read_bytes():
            assert process.poll() is None, f"tokenops up exited:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"not up in 120 s:\n{log.read_text()[-4000:]}"
            time.sleep(0.2)
        yield pipeline
    finally:
        pipeline.http.close()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def poll(url: str, ready: Any, timeout_s: float = 120.0) -> Any:
    """GET the warehouse API `url` (with the finance token) until `ready(body)`."""
    deadline = time.monotonic() + timeout_s
    body = None
    while time.monotonic() < deadline:
        body = httpx.get(url, headers=FINANCE, timeout=10).json()
        if ready(body):
            return body
        time.sleep(0.5)
    raise AssertionError(f"{url} never became ready; last answer: {body}")
