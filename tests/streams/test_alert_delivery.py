"""Alerts reach webhooks over real HTTP from the real broker: Slack and signed JSON bodies,
retries with backoff, final client errors, filters, one post per alert across restarts, and
no post of an alert that is too old."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ingest.alert_delivery import AlertDelivery
from ingest.alert_event import AlertEvent
from ingest.topics import ALERT_DELIVERIES
from streams.alert_delivery import AlertDeliveryService, RetryPolicy, retry_after_s
from streams.webhook_payloads import slack_message
from streams.webhooks import WebhookTarget, load_webhooks
from tests.support import alert_event, free_port, publish_alerts, read_topic
from tokenops.errors import ConfigError

SECRET = "s3cret-for-tests"
FAST = RetryPolicy(
    max_attempts=4, backoff_s=0.02, max_backoff_s=2.0, timeout_s=30.0, max_age_s=10 * 365 * 86_400
)
"""The scenarios' alerts are dated early in November 2026; expiry has its own test. The
receiver answers at once: the timeout is only there so a stalled post fails, and it is long
because a busy machine can hold this process's threads (server and service) for seconds."""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class WebhookReceiver:
    """An HTTP server on a free loopback port. Each path answers from its script of
    (status, headers) in order, then 200; every request is kept."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.scripts: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.path, dict(self.headers), body, time.monotonic())
                    )
                    script = receiver.scripts.get(self.path, [])
                    status, headers = script.pop(0) if script else (200, {})
                reply = b"ok" if status < 300 else b'{"error": "nope"}'
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def at(self, path: str, alert_id: str | None = None) -> list[Received]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path == path
                and (alert_id is None or r.headers["X-Tokenops-Alert-Id"] == alert_id)
            ]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def deliveries(bootstrap: str, alert_id: str, webhook: str) -> list[AlertDelivery]:
    records = [
        AlertDelivery.model_validate_json(v) for v in read_topic(bootstrap, ALERT_DELIVERIES)
    ]
    found = [r for r in records if r.alert_id == alert_id and r.webhook == webhook]
    return sorted(found, key=lambda r: r.attempt)


def wait_for_final(bootstrap: str, alert_id: str, webhook: str) -> list[AlertDelivery]:
    found: list[AlertDelivery] = []

    def finished() -> bool:
        nonlocal found
        found = deliveries(bootstrap, alert_id, webhook)
        return bool(found) and found[-1].final

    wait_for(finished, f"the final delivery record of {alert_id} to {webhook}")
    return found


def targets(tmp: Path, yaml_text: str, **env: str) -> list[WebhookTarget]:
    path = tmp / "webhooks.yaml"
    path.write_text(yaml_text)
    return load_webhooks(path, env)


@contextmanager
def running(service: AlertDeliveryService) -> Iterator[AlertDeliveryService]:
    """The service on its own event loop in a thread, as `tokenops alerts deliver` runs it."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            loop.run_until_complete(service.run(stop))
        except BaseException as exc:
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        assert not thread.is_alive(), "the delivery service did not stop"
    if failure:
        raise failure[0]


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def service(
    broker: str, receiver: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AlertDeliveryService]:
    """One delivery service for the scenarios below; each scenario has its own tenant."""
    config = f"""
webhooks:
  - {{name: ops-slack, url: "{receiver.url("/slack")}", format: slack, tenants: [t-shape]}}
  - name: billing
    url_env: BILLING_URL
    format: json
    secret_env: BILLING_SECRET
    tenants: [t-shape]
  - {{name: rejects, url: "{receiver.url("/bad")}", format: json, tenants: [t-errors]}}
  - {{name: limited, url: "{receiver.url("/limited")}", format: json, tenants: [t-errors]}}
  - {{name: down, url: "http://127.0.0.1:{free_port()}/", format: json, tenants: [t-errors]}}
  - {{name: everything, url: "{receiver.url("/all")}", format: json, tenants: [t-filters]}}
  - name: breaches
    url: "{receiver.url("/breaches")}"
    format: json
    tenants: [t-filters, t-other]
    kinds: [budget]
    states: [BREACH]
"""
    found = targets(
        tmp_path_factory.mktemp("webhooks"),
        config,
        BILLING_URL=receiver.url("/billing"),
        BILLING_SECRET=SECRET,
    )
    with running(AlertDeliveryService(broker, found, FAST, group_id=f"g-{uuid.uuid4().hex}")) as s:
        yield s


def test_slack_message_and_signed_json_arrive_after_retries(
    broker: str, receiver: WebhookReceiver, service: AlertDeliveryService
) -> None:
    receiver.scripts["/billing"] = [(503, {}), (503, {})]
    sent = alert_event("t-shape", message="t-shape spent <$250> & more")
    publish_alerts(broker, sent)

    records = wait_for_final(broker, sent.alert_id, "billing")
    nope = 'HTTP 503: {"error": "nope"}'
    assert [(r.attempt, r.status, r.http_status, r.error) for r in records] == [
        (1, "retrying", 503, nope),
        (2, "retrying", 503, nope),
        (3, "delivered", 200, None),
    ]
    posts = receiver.at("/billing", sent.alert_id)
    assert len(posts) == 3
    for post in posts:
        timestamp = post.headers["X-Tokenops-Timestamp"]
        expected = hmac.new(
            SECRET.encode(), timestamp.encode() + b"." + post.body, hashlib.sha256
        ).hexdigest()
        assert post.headers["X-Tokenops-Signature"] == f"sha256={expected}"
        assert abs(time.time() - int(timestamp)) < 60
        assert AlertEvent.model_validate_json(post.body) == sent
    assert json.loads(posts[0].body)["spend_usd"] == "250.000000000000000123"

    assert [r.status for r in wait_for_final(broker, sent.alert_id, "ops-slack")] == ["delivered"]
    (slack,) = receiver.at("/slack", sent.alert_id)
    assert "X-Tokenops-Signature" not in slack.headers
    message = json.loads(slack.body)
    assert set(message) == {"text", "blocks"}
    assert message["text"].startswith(":rotating_light: BREACH: budget alert for t-shape")
    header, text, fields, context = message["blocks"]
    assert header == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": ":rotating_light: BREACH: budget alert for t-shape",
            "emoji": True,
        },
    }
    assert text["type"] == "section" and text["text"]["type"] == "mrkdwn"
    assert text["text"]["text"] == "t-shape spent &lt;$250&gt; &amp; more"
    shown = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in fields["fields"]}
    assert shown["*Spend*"] == "$250.00 of $250.00" and shown["*Threshold*"] == "100%"
    assert context["type"] == "context" and sent.alert_id in context["elements"][0]["text"]


def test_client_errors_are_final_and_429_waits_for_retry_after(
    broker: str, receiver: WebhookReceiver, service: AlertDeliveryService
) -> None:
    receiver.scripts["/bad"] = [(400, {})]
    receiver.scripts["/limited"] = [(429, {"Retry-After": "1"})]
    sent = alert_event("t-errors")
    publish_alerts(broker, sent)

    rejected = wait_for_final(broker, sent.alert_id, "rejects")
    assert [(r.attempt, r.status, r.http_status) for r in rejected] == [(1, "failed", 400)]
    assert rejected[0].error == 'HTTP 400: {"error": "nope"}'
    limited = wait_for_final(broker, sent.alert_id, "limited")
    assert [(r.status, r.http_status) for r in limited] == [("retrying", 429), ("delivered", 200)]
    first, second = receiver.at("/limited", sent.alert_id)
    assert second.at - first.at >= 0.9  # Retry-After, not the 20 ms backoff
    (bad,) = receiver.at("/bad", sent.alert_id)
    assert bad.at < second.at  # a webhook that waits holds up only itself

    down = wait_for_final(broker, sent.alert_id, "down")
    assert [(r.attempt, r.status, r.http_status) for r in down] == [
        (1, "retrying", None),
        (2, "retrying", None),
        (3, "retrying", None),
        (4, "failed", None),
    ]
    assert down[-1].error is not None and down[-1].error.startswith("ConnectError")
    assert "127.0.0.1" not in down[-1].error


def test_filters_choose_the_webhooks(
    broker: str, receiver: WebhookReceiver, service: AlertDeliveryService
) -> None:
    warn = alert_event("t-filters", state="WARN", threshold=Decimal("0.8"))
    anomaly = alert_event("t-filters", kind="anomaly", explanation={"model": "gpt-4o"})
    breach = alert_event("t-filters")
    elsewhere = alert_event("t-nobody")
    publish_alerts(broker, warn, anomaly, elsewhere, breach)

    wait_for(lambda: len(receiver.at("/all")) == 3, "three alerts at the unfiltered webhook")
    assert [r.headers["X-Tokenops-Alert-Id"] for r in receiver.at("/all")] == [
        warn.alert_id,
        anomaly.alert_id,
        breach.alert_id,
    ]
    assert [r.headers["X-Tokenops-Alert-Id"] for r in receiver.at("/breaches")] == [breach.alert_id]
    assert not any(
        r.headers["X-Tokenops-Alert-Id"] == elsewhere.alert_id for r in receiver.requests
    )


def test_a_redelivered_alert_is_posted_once_even_after_a_restart(
    broker: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    found = targets(
        tmp_path,
        f'webhooks: [{{name: once, url: "{receiver.url("/once")}", format: json, '
        "tenants: [t-once]}]",
    )
    first, again, marker = alert_event("t-once"), alert_event("t-once"), alert_event("t-once")
    with running(AlertDeliveryService(broker, found, FAST, group_id=f"g-{uuid.uuid4().hex}")) as s:
        publish_alerts(broker, first, first, again)
        wait_for(lambda: len(receiver.at("/once", again.alert_id)) == 1, "the second alert")
        wait_for_final(broker, again.alert_id, "once")
        assert s.stats.duplicates == 1
    # A new process (and a new consumer group: it re-reads the topic from the start) learns
    # from the deliveries topic what was delivered, and posts only what is new.
    publish_alerts(broker, first, marker)
    with running(AlertDeliveryService(broker, found, FAST, group_id=f"g-{uuid.uuid4().hex}")) as s:
        wait_for(lambda: len(receiver.at("/once", marker.alert_id)) == 1, "the marker alert")
        assert s.stats.duplicates == 4  # first three times, again once
    assert len(receiver.at("/once", first.alert_id)) == 1
    assert [r.status for r in deliveries(broker, first.alert_id, "once")] == ["delivered"]


def test_an_alert_older_than_the_maximum_age_is_recorded_as_expired_not_posted(
    broker: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    found = targets(
        tmp_path,
        f'webhooks: [{{name: fresh, url: "{receiver.url("/fresh")}", format: json, '
        "tenants: [t-stale]}]",
    )
    now = datetime.now(UTC)
    stale = alert_event("t-stale", created_at=now - timedelta(hours=2))
    fresh = alert_event("t-stale", created_at=now)
    publish_alerts(broker, stale, fresh)
    policy = replace(FAST, max_age_s=3600)
    with running(
        AlertDeliveryService(broker, found, policy, group_id=f"g-{uuid.uuid4().hex}")
    ) as s:
        assert [r.status for r in wait_for_final(broker, fresh.alert_id, "fresh")] == ["delivered"]
        (expired,) = wait_for_final(broker, stale.alert_id, "fresh")
        assert s.stats.expired == 1 and s.stats.delivered == 1
    assert (expired.status, expired.attempt, expired.http_status) == ("expired", 1, None)
    assert expired.error is not None and "over the maximum age of 3600 s" in expired.error
    assert receiver.at("/fresh", stale.alert_id) == []
    assert len(receiver.at("/fresh", fresh.alert_id)) == 1


def test_webhooks_file_errors_are_one_line_naming_the_file(tmp_path: Path) -> None:
    cases = {
        "webhooks: [{name: a, url: 'http://x', format: xml}]": (
            "webhooks.0.format: Input should be 'slack' or 'json'"
        ),
        "webhooks: [{name: a, url: 'ftp://x', format: json}]": "webhooks.0.url: Value error",
        "webhooks: [{name: a, format: json}]": "set exactly one of url and url_env",
        "webhooks: [{name: a, url: 'http://x', format: json, secret_env: NOPE_UNSET}]": (
            "webhook 'a': secret_env NOPE_UNSET is not set"
        ),
        "webhooks: [{name: a, url: 'http://x', format: json, kinds: [costs]}]": "kinds.0",
        "webhooks: [{name: a, url: 'http://x', format: json}, {name: a, url: 'http://y', "
        "format: slack}]": "two webhooks have the same name",
        "webhooks: [": "invalid webhooks file",
    }
    for text, problem in cases.items():
        with pytest.raises(ConfigError) as raised:
            targets(tmp_path, text)
        message = str(raised.value)
        assert str(tmp_path / "webhooks.yaml") in message and problem in message, message
        assert "\n" not in message
    assert load_webhooks(tmp_path / "missing.yaml") == []


def test_secrets_and_urls_stay_out_of_reprs(tmp_path: Path) -> None:
    (target,) = targets(
        tmp_path,
        "webhooks: [{name: s, url_env: HOOK, format: slack, secret_env: KEY}]",
        HOOK="https://hooks.example.com/services/T000/B000/XXXX",
        KEY="hunter2",
    )
    assert target.secret == b"hunter2" and target.url.endswith("/XXXX")
    assert "hunter2" not in repr(target) and "XXXX" not in repr(target)


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=10.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 10.0), (60, 10.0)]:
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(delays) > 1
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert policy.delay(1, retry_after=3600.0) == 10.0
    assert retry_after_s("7") == 7.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


def test_slack_message_stays_within_block_limits() -> None:
    long = alert_event("t" * 200, message="x" * 5000, spend_usd=Decimal("0.0001234"))
    message = slack_message(long)
    header, text, fields, _ = message["blocks"]
    assert len(header["text"]["text"]) <= 150 and len(text["text"]["text"]) <= 3000
    assert len(message["text"]) <= 3000 and len(fields["fields"]) <= 10
    assert "$0.000123 of $250.00" in fields["fields"][3]["text"]
