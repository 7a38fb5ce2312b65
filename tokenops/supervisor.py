"""`tokenops up`: every component as a child process, started in data-flow order, stopped in
reverse (relay first, so its last events reach the broker; broker last).

Children run in their own sessions so a Ctrl-C reaches only the supervisor, which then stops
them in order; each child also gets SIGTERM if the supervisor dies (PR_SET_PDEATHSIG). If any
child exits on its own, the supervisor stops the rest and exits non-zero naming it.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from tokenops.broker import ensure_topics, port_is_open, require_broker
from tokenops.errors import TokenopsError
from tokenops.settings import Settings

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(OSError):  # not Linux: children just outlive a killed parent
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    command: str
    ready: Callable[[], bool] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tokenops", *self.command.split()],
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def _wait_ready(child: Child, stop: threading.Event, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while child.ready is not None and not child.ready():
        assert child.process is not None
        if child.process.poll() is not None:
            raise TokenopsError(f"{child.name} exited with status {child.process.returncode}")
        if stop.is_set():
            return
        if time.monotonic() > deadline:
            raise TokenopsError(f"{child.name} did not become ready in {timeout_s:.0f} s")
        time.sleep(0.1)


def pipeline_children(settings: Settings, demo: bool) -> list[Child]:
    relay = f"http://{settings.relay_host}:{settings.relay_port}"
    warehouse = f"http://{settings.warehouse_host}:{settings.warehouse_port}"
    children = []
    if settings.embedded:
        port = settings.embedded_broker_port
        children.append(Child("broker", "broker", lambda: port_is_open("127.0.0.1", port)))
    children += [
        Child("simulator", "simulator", _http_ok(f"{settings.simulator_url}/healthz")),
        Child("relay", "relay", _http_ok(f"{relay}/healthz")),
        *(
            Child("streams" if n == 0 else f"streams-{n + 1}", "streams")
            for n in range(settings.streams_workers)
        ),
        Child("alert-delivery", "alerts deliver"),
        Child("warehouse", "warehouse", _http_ok(f"{warehouse}/healthz")),
    ]
    if demo:
        children.append(Child("demo-traffic", "demo-traffic"))
    return children


def run_pipeline(settings: Settings, demo: bool) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if not settings.embedded:
        require_broker(settings.bootstrap)
        ensure_topics(settings.bootstrap)
    children = pipeline_children(settings, demo)
    started: list[Child] = []
    try:
        for child in children:
            if stop.is_set():
                return 0
            child.start()
            started.append(child)
            _wait_ready(child, stop)
            if child.name == "broker":
                ensure_topics(settings.bootstrap)
        print(
            "tokenops is up\n"
            f"  relay (OpenAI-compatible): http://{settings.relay_host}:{settings.relay_port}/v1\n"
            f"  dashboard:                 http://{settings.warehouse_host}:"
            f"{settings.warehouse_port}/\n"
            f"  query API:                 http://{settings.warehouse_host}:"
            f"{settings.warehouse_port}/api/costs\n"
            f"  kafka:                     {settings.bootstrap}\n"
            "  alerts:                    tokenops alerts tail\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        while not stop.wait(0.5):
            for child in started:
                assert child.process is not None
                if child.process.poll() is not None:
                    print(
                        f"tokenops: {child.name} exited with status {child.process.returncode}; "
                        "stopping the pipeline",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
        return 0
    finally:
        for child in reversed(started):
            child.stop()
