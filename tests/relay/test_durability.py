"""Nothing acknowledged is lost: broker outages, a killed relay, upstream timeouts.

Every relayed response names its usage event (x-tokenops-event-id), so each test checks that
every call it made is on the topic exactly once.
"""

from __future__ import annotations

import fcntl
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ingest.topics import USAGE_EVENTS
from ingest.usage_event import UsageEvent
from relay.forwarding import EVENT_ID_HEADER
from tests.relay.conftest import start_relay
from tests.support import Service, free_port, read_topic
from tokenops.broker import ensure_topics, port_is_open, start_embedded_broker

pytestmark = pytest.mark.slow

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "keep count"}]}
AUTH = {"authorization": "Bearer sk-acme-demo"}


def call(relay: str) -> str:
    response = httpx.post(f"{relay}/v1/chat/completions", json=BODY, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return response.headers[EVENT_ID_HEADER]


def ready(relay: str) -> dict[str, object]:
    body: dict[str, object] = httpx.get(f"{relay}/readyz", timeout=10).json()
    return body


def wait_until(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def event_ids(bootstrap: str) -> list[str]:
    return [UsageEvent.from_wire(v).event_id for v in read_topic(bootstrap, USAGE_EVENTS)]


@contextmanager
def relay_before_its_broker(
    tmp_path: Path, workers: int = 1
) -> Iterator[tuple[str, list[Service], Callable[[list[str]], None]]]:
    """A relay on `tmp_path` whose broker is not started yet (every event goes to the spool),
    its processes, and the step that starts the broker and a fresh relay on the same spool and
    checks that exactly the `sent` events get published. Everything is stopped on exit."""
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    env = {"TOKENOPS_KAFKA_BOOTSTRAP": bootstrap, "TOKENOPS_RELAY_WORKERS": str(workers)}
    relay, services = start_relay(tmp_path, env)
    brokers: list[subprocess.Popen[bytes]] = []

    def published_after_restart(sent: list[str]) -> None:
        brokers.append(start_embedded_broker(port))
        ensure_topics(bootstrap)
        restarted, started = start_relay(tmp_path, {"TOKENOPS_KAFKA_BOOTSTRAP": bootstrap})
        services.extend(started)
        wait_until(lambda: ready(restarted)["spool_depth"] == 0, 60, "the spool to drain")
        wait_until(lambda: len(event_ids(bootstrap)) >= len(sent), 30, "the events on the topic")
        assert sorted(event_ids(bootstrap)) == sorted(sent)

    try:
        yield relay, services, published_after_restart
    finally:
        for service in services:
            service.stop()
        for broker in brokers:
            broker.terminate()
            broker.wait(10)


def test_a_60_second_broker_outage_under_traffic_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = start_embedded_broker(port)
    ensure_topics(bootstrap)
    relay, services = start_relay(tmp_path, {"TOKENOPS_KAFKA_BOOTSTRAP": bootstrap})
    sent: list[str] = []
    try:
        for _ in range(20):
            sent.append(call(relay))
        wait_until(lambda: ready(relay)["published"] == 20, 30, "the first 20 events")
        delivered = event_ids(bootstrap)

        broker.terminate()
        broker.wait(10)
        outage_ends = time.monotonic() + 60
        during_outage = 0
        while time.monotonic() < outage_ends:  # steady traffic while the broker is away
            sent.append(call(relay))
            during_outage += 1
            time.sleep(0.2)
        status = ready(relay)
        assert status["broker"] == "unreachable" and status["spool_depth"] > 0

        broker = start_embedded_broker(port)  # an empty broker, as a restarted Tansu is
        ensure_topics(bootstrap)
        for _ in range(20):
            sent.append(call(relay))
        wait_until(
            lambda: ready(relay)["spool_depth"] == 0 and ready(relay)["broker"] == "up",
            60,
            "the spool to drain",
        )
        wait_until(lambda: len(delivered) + len(event_ids(bootstrap)) >= len(sent), 30, "events")
        delivered += event_ids(bootstrap)
        counts = Counter(delivered)
        assert set(counts) == set(sent)
        assert [i for i, n in counts.items() if n > 1] == []
        # Traffic went on all through the outage: about 240 calls here (a call takes ~50 ms and
        # the loop sleeps 0.2 s); a busy CI host managed 72, so only a relay that stalls while
        # the broker is away (e.g. blocks its requests on reconnects) fails this.
        assert during_outage >= 40
    finally:
        for service in services:
            service.stop()
        broker.terminate()
        broker.wait(10)


def test_events_spooled_by_a_killed_relay_are_published_after_its_restart(
    tmp_path: Path,
) -> None:
    with relay_before_its_broker(tmp_path) as (relay, services, published_after_restart):
        sent = [call(relay) for _ in range(25)]
        wait_until(lambda: ready(relay)["spool_depth"] == 25, 30, "25 spooled events")
        assert services[0].stop(signal.SIGKILL) == -signal.SIGKILL
        services[1].stop()
        published_after_restart(sent)


def test_an_upstream_timeout_is_a_504_and_one_timeout_event(broker: str, tmp_path: Path) -> None:
    relay, services = start_relay(
        tmp_path, {"TOKENOPS_KAFKA_BOOTSTRAP": broker, "TOKENOPS_UPSTREAM_TIMEOUT_S": "1"}
    )
    try:
        started = time.monotonic()
        response = httpx.post(
            f"{relay}/v1/chat/completions",
            json={**BODY, "messages": [{"role": "user", "content": "[[sim:latency_ms=9000]]"}]},
            headers={**AUTH, "x-feature": "timeout-probe"},
            timeout=30,
        )
        # the relay gave up after its 1 s, long before the simulator's 9 s (slack for busy hosts)
        assert response.status_code == 504 and time.monotonic() - started < 6
        assert response.json()["error"]["code"] == "upstream_timeout"
        event_id = response.headers.get(EVENT_ID_HEADER)

        def mine_() -> list[UsageEvent]:
            events = [UsageEvent.from_wire(v) for v in read_topic(broker, USAGE_EVENTS)]
            return [e for e in events if e.feature == "timeout-probe"]

        wait_until(lambda: len(mine_()) >= 1, 30, "the timeout event")
        mine = mine_()
        assert [(e.outcome, e.error_code) for e in mine] == [("timeout", "timeout")]
        assert event_id is None or event_id == mine[0].event_id
    finally:
        for service in services:
            service.stop()


def spool_depth_on_disk(spool: Path) -> int:
    segments = [*spool.glob("seg-*.log"), *spool.glob("worker-*/seg-*.log")]
    return sum(path.read_bytes().count(b"\n") for path in segments)


def test_two_workers_share_the_port_and_one_relay_later_publishes_what_both_spooled(
    tmp_path: Path,
) -> None:
    with relay_before_its_broker(tmp_path, workers=2) as (relay, services, published_after_restart):
        sent = [call(relay) for _ in range(30)]
        status = ready(relay)
        assert status["workers"] == 2 and status["worker"] in (0, 1)
        wait_until(lambda: (tmp_path / "spool" / "worker-1").is_dir(), 30, "the second worker")
        metrics = httpx.get(f"{relay}/metrics", timeout=10).text
        served = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('tokenops_relay_requests_total{endpoint="chat.completions"')
        ]
        assert sum(served) == 30  # whichever worker answers, it sums both
        wait_until(lambda: spool_depth_on_disk(tmp_path / "spool") == 30, 30, "30 spooled")
        for service in services:
            service.stop()
        published_after_restart(sent)
        assert spool_depth_on_disk(tmp_path / "spool") == 0


def test_workers_whose_relay_parent_is_killed_stop_and_spool_what_they_hold(
    tmp_path: Path,
) -> None:
    with relay_before_its_broker(tmp_path, workers=2) as (relay, services, _):
        sent = [call(relay) for _ in range(10)]
        host, _, port = relay.removeprefix("http://").partition(":")
        assert services[0].stop(signal.SIGKILL) == -signal.SIGKILL  # the parent only
        locks = list((tmp_path / "spool").glob(".slot-*.lock"))
        assert len(locks) == 2
        wait_until(
            lambda: all(_unlocked(lock) for lock in locks) and not port_is_open(host, int(port)),
            20,
            "the workers to stop and let go of their spool slots",
        )
        assert spool_depth_on_disk(tmp_path / "spool") == len(sent)
        assert "parent process" in (tmp_path / "relay.log").read_text()


def _unlocked(lock: Path) -> bool:
    with lock.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
