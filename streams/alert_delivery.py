"""Alert delivery: every alert on the alerts topic goes to each webhook whose filters match it.

Order and guarantees
- The service reads the alerts topic in its own consumer group and puts each alert on the queue
  of every matching webhook; one worker per webhook posts its alerts in topic order. A webhook
  that is down holds up only its own queue, and each alert there for at most `max_attempts`
  attempts (each bounded by `timeout_s`) and the backoff between them.
- Every attempt is published to the deliveries topic (acks=all) before the next step.
- An alert's offset is committed once every webhook it matched has finished with it (delivered,
  or failed for good), and never past an alert still in flight: at-least-once. A crash re-reads
  the uncommitted alerts.
- A finished (alert_id, webhook) is not attempted again: remembered for the process's lifetime
  and, at start, rebuilt from the deliveries topic. An alert redelivered by Kafka or republished
  by streams is therefore posted once. A crash between a 2xx and its record can still post
  twice: receivers dedupe on the `X-Tokenops-Alert-Id` header.
- Stale alerts are not posted: one older than `max_age_s` (TOKENOPS_ALERT_MAX_AGE_S, default
  an hour) when its delivery to a webhook would begin is recorded as `expired`. A webhook added
  to a long-running install, or a service back from a long outage, does not page anyone with
  yesterday's alerts; the records say what was skipped.
- Retries: connection errors, timeouts, 429 and 5xx, after the server's Retry-After or an
  exponential backoff with jitter (both capped); any other response is final. Attempt numbers
  continue across restarts (from the deliveries topic), so `max_attempts` bounds the total.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from pydantic import ValidationError

from ingest.alert_delivery import AlertDelivery, DeliveryStatus, delivery_id
from ingest.alert_event import AlertEvent
from ingest.topics import ALERT_DELIVERIES, ALERTS
from streams.webhook_payloads import body_for, headers_for
from streams.webhooks import WebhookTarget, load_webhooks
from tokenops.broker import require_broker
from tokenops.settings import Settings

log = logging.getLogger("tokenops.alerts.delivery")

GROUP_ID = "tokenops-alert-delivery"
MAX_PENDING_ALERTS = 10_000
"""Alerts read but not finished; above this the consumer pauses (it keeps polling the group)."""
ERROR_BODY_BYTES = 300

Key = tuple[str, str]
"""(alert_id, webhook name): the unit of delivery and of dedupe."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    timeout_s: float = 10.0
    max_age_s: float = 3600.0
    """An alert older than this (by its created_at) when its delivery would begin is recorded
    as expired, not posted."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.alert_delivery_attempts,
            backoff_s=settings.alert_delivery_backoff_s,
            max_backoff_s=settings.alert_delivery_max_backoff_s,
            timeout_s=settings.alert_delivery_timeout_s,
            max_age_s=settings.alert_max_age_s,
        )

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt`: the server's Retry-After when
        it sent one, else backoff_s * 2^(attempt-1) with jitter (half of it plus a random part
        of the other half, so that webhooks failing together do not retry together)."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0 ** min(attempt - 1, 30))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class Attempt:
    http_status: int | None
    error: str | None
    retry_after: float | None
    latency_ms: int
    unsendable: bool = False
    """The request could not be built (e.g. a URL httpx refuses): retrying cannot help."""

    @property
    def delivered(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300

    @property
    def transient(self) -> bool:
        status = self.http_status
        return not self.unsendable and (status is None or status == 429 or status >= 500)


@dataclass
class DeliveryStats:
    alerts: int = 0
    delivered: int = 0
    failed: int = 0
    expired: int = 0
    """Not posted: older than the maximum age when their delivery would have begun."""
    retries: int = 0
    duplicates: int = 0
    """(alert, webhook) pairs skipped because they had already finished."""
    undecodable: int = 0


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


async def post_alert(
    client: httpx.AsyncClient,
    target: WebhookTarget,
    alert: AlertEvent,
    body: bytes,
    timeout_s: float,
) -> Attempt:
    """One POST of `body` to the webhook; never raises for HTTP or network failures."""
    headers = headers_for(target, alert, body, int(time.time()))
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            request = client.build_request("POST", target.url, content=body, headers=headers)
            response = await client.send(request, stream=True)
            try:
                excerpt = b""
                async for chunk in response.aiter_bytes():
                    excerpt += chunk
                    if len(excerpt) >= ERROR_BODY_BYTES:
                        break
            finally:
                await response.aclose()
    except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, OSError) as exc:
        kind = "Timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        # httpx messages do not carry the URL today; make sure it stays that way in records.
        detail = str(exc).replace(target.url, "<url>")
        return Attempt(
            None,
            f"{kind}: {detail}" if detail else kind,
            None,
            _elapsed_ms(started),
            unsendable=isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol),
        )
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(status, None, None, _elapsed_ms(started))
    text = " ".join(excerpt[:ERROR_BODY_BYTES].decode("utf-8", errors="replace").split())
    return Attempt(
        status,
        f"HTTP {status}: {text}" if text else f"HTTP {status}",
        retry_after_s(response.headers.get("retry-after")),
        _elapsed_ms(started),
    )


@dataclass
class _Job:
    key: Key
    alert: AlertEvent
    done: asyncio.Future[None]


@dataclass
class _Run:
    """What one consumer session tracks; rebuilt when the service (re)starts its clients."""

    queues: dict[str, asyncio.Queue[_Job]]
    pending: dict[Key, asyncio.Future[None]] = field(default_factory=dict)
    in_flight: dict[TopicPartition, deque[tuple[int, list[asyncio.Future[None]]]]] = field(
        default_factory=dict
    )

    def alerts_in_flight(self) -> int:
        return sum(len(offsets) for offsets in self.in_flight.values())

    def committable(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last alert whose deliveries all finished, when
        every alert before it has finished too."""
        offsets = {}
        for tp, entries in self.in_flight.items():
            last = None
            while entries and all(done.done() for done in entries[0][1]):
                last = entries.popleft()[0]
            if last is not None:
                offsets[tp] = last + 1
        return offsets


class AlertDeliveryService:
    def __init__(
        self,
        bootstrap: str,
        targets: Sequence[WebhookTarget],
        policy: RetryPolicy | None = None,
        *,
        group_id: str = GROUP_ID,
    ) -> None:
        self._bootstrap = bootstrap
        self.targets = list(targets)
        self.policy = policy or RetryPolicy()
        self._group_id = group_id
        self.finished: set[Key] = set()
        self._attempts: dict[Key, int] = {}
        self.stats = DeliveryStats()

    def note(self, record: AlertDelivery) -> None:
        """Learn from a delivery record (ours, or one read back from the topic)."""
        key = (record.alert_id, record.webhook)
        self._attempts[key] = max(self._attempts.get(key, 0), record.attempt)
        if record.final:
            self.finished.add(key)

    async def recover(self) -> int:
        """Read the deliveries topic up to its current end; returns the records read."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id="tokenops-alert-delivery-recovery",
            enable_auto_commit=False,
        )
        await consumer.start()
        read = 0
        try:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(ALERT_DELIVERIES) or set()
            tps = [TopicPartition(ALERT_DELIVERIES, p) for p in partitions]
            if not tps:
                return 0
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=1_000)
                for records in batches.values():
                    for r in records:
                        read += 1
                        with contextlib.suppress(ValidationError):
                            self.note(AlertDelivery.model_validate_json(r.value or b""))
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        return read

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; raises when Kafka fails (the caller restarts it)."""
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        await producer.start()
        consumer: AIOKafkaConsumer | None = None
        client = httpx.AsyncClient(follow_redirects=False)
        workers: list[asyncio.Task[None]] = []
        run = _Run(queues={t.name: asyncio.Queue() for t in self.targets})
        try:
            read = await self.recover()
            log.info(
                "read %d delivery records: %d (alert, webhook) pairs already finished",
                read,
                len(self.finished),
            )
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=self._group_id,
                client_id="tokenops-alert-delivery",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # Tansu answers a group join after about half the session timeout.
                session_timeout_ms=10_000,
                rebalance_timeout_ms=10_000,
                heartbeat_interval_ms=3_000,
            )
            consumer.subscribe([ALERTS], listener=_CommitOnRevoke(self, consumer, run))
            await consumer.start()
            workers = [
                asyncio.create_task(self._work(t, run, client, producer), name=f"webhook {t.name}")
                for t in self.targets
            ]
            while not stop.is_set():
                for worker in workers:
                    if worker.done():
                        worker.result()  # a worker only ends by failing: surface it
                assigned = consumer.assignment()
                if run.alerts_in_flight() >= MAX_PENDING_ALERTS:
                    consumer.pause(*assigned)
                else:
                    consumer.resume(*assigned)
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    entries = run.in_flight.setdefault(tp, deque())
                    for record in records:
                        entries.append((record.offset, self._dispatch(record, run)))
                await self.commit_finished(consumer, run)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if consumer is not None:
                with contextlib.suppress(KafkaError):
                    await self.commit_finished(consumer, run)
                await consumer.stop()
            await client.aclose()
            await producer.stop()

    def _dispatch(
        self, record: ConsumerRecord[bytes, bytes], run: _Run
    ) -> list[asyncio.Future[None]]:
        """Queue the alert for every matching webhook that has not finished it; returns what
        its offset waits for."""
        try:
            alert = AlertEvent.model_validate_json(record.value or b"")
        except ValidationError as exc:
            # The warehouse loader quarantines it with the reason; here it is only skipped.
            self.stats.undecodable += 1
            log.warning(
                "skipping an undecodable alert at %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                exc.errors()[0]["msg"],
            )
            return []
        self.stats.alerts += 1
        waits = []
        for target in self.targets:
            if not target.webhook.matches(alert):
                continue
            key = (alert.alert_id, target.name)
            if key in self.finished:
                self.stats.duplicates += 1
                continue
            done = run.pending.get(key)
            if done is None:
                done = asyncio.get_running_loop().create_future()
                run.pending[key] = done
                run.queues[target.name].put_nowait(_Job(key, alert, done))
            else:
                self.stats.duplicates += 1
            waits.append(done)
        return waits

    async def commit_finished(self, consumer: AIOKafkaConsumer, run: _Run) -> None:
        offsets = run.committable()
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # Lost the partition in a rebalance: its next owner re-reads these alerts and skips
            # the finished ones.
            log.warning("could not commit alert offsets (%s)", type(exc).__name__)

    async def _work(
        self,
        target: WebhookTarget,
        run: _Run,
        client: httpx.AsyncClient,
        producer: AIOKafkaProducer,
    ) -> None:
        queue = run.queues[target.name]
        while True:
            job = await queue.get()
            await self._deliver(target, job.alert, client, producer)
            self.finished.add(job.key)
            run.pending.pop(job.key, None)
            job.done.set_result(None)

    async def _deliver(
        self,
        target: WebhookTarget,
        alert: AlertEvent,
        client: httpx.AsyncClient,
        producer: AIOKafkaProducer,
    ) -> DeliveryStatus:
        key = (alert.alert_id, target.name)
        age_s = (datetime.now(UTC) - alert.created_at).total_seconds()
        if age_s > self.policy.max_age_s:
            await self._record_expired(target, alert, age_s, producer)
            return "expired"
        body = body_for(target, alert)
        while True:
            attempt = self._attempts.get(key, 0) + 1
            outcome = await post_alert(client, target, alert, body, self.policy.timeout_s)
            final = (
                outcome.delivered or not outcome.transient or attempt >= self.policy.max_attempts
            )
            status: DeliveryStatus = (
                "delivered" if outcome.delivered else "failed" if final else "retrying"
            )
            await self._record(
                producer,
                target,
                alert,
                attempt,
                status,
                outcome.error,
                http_status=outcome.http_status,
                latency_ms=outcome.latency_ms,
            )
            if status == "delivered":
                self.stats.delivered += 1
                log.info(
                    "alert %s delivered to %s (attempt %d)", alert.alert_id, target.name, attempt
                )
                return status
            if status == "failed":
                self.stats.failed += 1
                log.warning(
                    "alert %s not delivered to %s after attempt %d: %s",
                    alert.alert_id,
                    target.name,
                    attempt,
                    outcome.error,
                )
                return status
            self.stats.retries += 1
            delay = self.policy.delay(attempt, outcome.retry_after)
            log.info(
                "alert %s to %s: attempt %d failed (%s); retrying in %.1f s",
                alert.alert_id,
                target.name,
                attempt,
                outcome.error,
                delay,
            )
            await asyncio.sleep(delay)

    async def _record_expired(
        self, target: WebhookTarget, alert: AlertEvent, age_s: float, producer: AIOKafkaProducer
    ) -> None:
        attempt = self._attempts.get((alert.alert_id, target.name), 0) + 1
        error = (
            f"not posted: the alert was {age_s:.0f} s old, over the maximum age of "
            f"{self.policy.max_age_s:g} s (TOKENOPS_ALERT_MAX_AGE_S)"
        )
        await self._record(producer, target, alert, attempt, "expired", error)
        self.stats.expired += 1
        log.info(
            "alert %s to %s: expired (%.0f s old), not posted", alert.alert_id, target.name, age_s
        )

    async def _record(
        self,
        producer: AIOKafkaProducer,
        target: WebhookTarget,
        alert: AlertEvent,
        attempt: int,
        status: DeliveryStatus,
        error: str | None,
        *,
        http_status: int | None = None,
        latency_ms: int = 0,
    ) -> None:
        """Publish one attempt's delivery record (acks=all) and remember it."""
        record = AlertDelivery(
            delivery_id=delivery_id(alert.alert_id, target.name, attempt),
            alert_id=alert.alert_id,
            webhook=target.name,
            tenant=alert.tenant,
            attempt=attempt,
            status=status,
            http_status=http_status,
            error=error,
            delivered_at=datetime.now(UTC),
            latency_ms=latency_ms,
        )
        await producer.send_and_wait(
            ALERT_DELIVERIES, key=alert.alert_id.encode(), value=record.to_wire()
        )
        self.note(record)


class _CommitOnRevoke(ConsumerRebalanceListener):
    """Before partitions move to another member, commit what finished and forget the rest
    (the next owner re-reads those alerts; finished pairs are skipped)."""

    def __init__(self, service: AlertDeliveryService, consumer: AIOKafkaConsumer, run: _Run):
        self._service = service
        self._consumer = consumer
        self._run = run

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        with contextlib.suppress(KafkaError):
            await self._service.commit_finished(self._consumer, self._run)
        for tp in revoked:
            self._run.in_flight.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass


async def _supervise(service: AlertDeliveryService) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    while not stop.is_set():
        try:
            await service.run(stop)
        except Exception:
            # Delivery must outlive broker hiccups; finished pairs stay remembered.
            log.exception("alert delivery failed; restarting in 2 s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)


def run_delivery(settings: Settings) -> None:
    """`tokenops alerts deliver`: run until SIGINT/SIGTERM."""
    targets = load_webhooks(settings.webhooks_path)
    require_broker(settings.bootstrap)
    if targets:
        log.info("delivering alerts to %s", ", ".join(t.name for t in targets))
    else:
        log.info("no webhooks in %s: alerts are not delivered anywhere", settings.webhooks_path)
    service = AlertDeliveryService(settings.bootstrap, targets, RetryPolicy.from_settings(settings))
    asyncio.run(_supervise(service))
