"""The faust app: usage -> price -> budget ledger -> alerts, in one agent step per batch.

One agent prices each usage event, publishes it on the priced topic and counts it in the budget
ledger, so an event is decoded once and a budget alert is one Kafka hop from the model call.
It takes events in small batches (at most 50 ms old) and writes each ledger partial it moved once
per batch. Delivery is at-least-once (faust acks a batch after its step finished); the ledger is
idempotent by event_id, so redelivery never counts twice. Events that cannot be decoded, or whose
usage contradicts the provider's totals, go to the dead-letter topic with the reason and the
agents keep running. A model without a price raises one `unpriced` alert (its id is derived from
provider and model, so repeats collapse into one alert downstream).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, cast

import faust
import faust.streams as faust_streams
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import TopicPartition
from faust.transport.drivers.aiokafka import Producer as FaustProducer
from pydantic import ValidationError

from ingest.alert_event import AlertEvent, alert_id
from ingest.price_book import PriceVersion
from ingest.pricing import UsageInvariantError
from ingest.rejection import rejection
from ingest.topics import (
    ALERTS,
    BUDGET_STATE,
    BUDGETS,
    DEAD_LETTERS,
    PIPELINE_TOPICS,
    PRICE_VERSIONS,
    PRICED_USAGE,
    USAGE_EVENTS,
)
from ingest.usage_event import UsageEvent
from streams.anomaly import AnomalyDetector, load_anomaly_config
from streams.budget_ledger import BudgetLedger
from streams.budgets import BudgetBook, load_budgets
from streams.delivery import App
from tokenops.settings import Settings, load_pricer

log = logging.getLogger(__name__)

APP_ID = os.environ.get("TOKENOPS_STREAMS_APP_ID", "tokenops-streams")


def dead_letter(source: str, payload: bytes | None, reason: str) -> bytes:
    text = payload.decode("utf-8", errors="replace") if payload is not None else None
    return json.dumps({"source_topic": source, "reason": reason, "payload": text}).encode()


def unpriced_alert(event: UsageEvent) -> AlertEvent:
    return AlertEvent(
        alert_id=alert_id("unpriced", event.provider, event.provider_model),
        kind="unpriced",
        tenant=event.tenant,
        scope={"provider": event.provider, "model": event.provider_model},
        state="WARN",
        period="all",
        period_start=event.event_time,
        created_at=datetime.now(UTC),
        trigger_event_id=event.event_id,
        message=(
            f"{event.provider}/{event.provider_model} has no price: its calls are counted as "
            f"unpriced until a price version is added ({event.unpriced_reason})"
        ),
    )


class RecordBatches:
    """Records for one topic, handed to the Kafka producer as whole record batches per partition.

    aiokafka's `send` costs ~37 µs of CPU per record here (partitioner, metadata, one accumulator
    entry each); appending to a batch ~13 µs. The batches go into the same producer as
    faust's own sends, so faust's flush before it commits offsets covers them (at-least-once).
    A priced event keeps its usage event's partition: both topics have the same key (tenant) and
    partition count, so this is where the key's hash would put it.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._open: dict[int, BatchBuilder] = {}
        self._full: list[tuple[int, BatchBuilder]] = []

    def add(self, partition: int, key: bytes | None, value: bytes) -> None:
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: start another
            self._full.append((partition, batch))
            batch = self._open[partition] = self._producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any record

    async def send(self) -> None:
        """Queue every batch in order (full ones first) and start over. A batch the broker
        refuses for good (aiokafka has retried it until its delivery timeout) is logged as an
        error with its topic, partition and size: nothing waits on its future."""
        for partition, batch in [*self._full, *self._open.items()]:
            delivered = await self._producer.send_batch(batch, self._topic, partition=partition)
            delivered.add_done_callback(
                partial(report_undelivered, self._topic, partition, batch.record_count())
            )
        self._full.clear()
        self._open.clear()


def report_undelivered(
    topic: str, partition: int, records: int, delivered: asyncio.Future[Any]
) -> None:
    if not delivered.cancelled() and delivered.exception() is not None:
        log.error(
            "%d records for %s partition %d were not written: %r",
            records,
            topic,
            partition,
            delivered.exception(),
        )


def writing_for(record: faust.EventT) -> None:
    """Table writes that follow go to the changelog partition of `record`.

    A faust table writes its changelog to the partition of the stream's current event, read from
    a context variable. Within a batch the agent sets it per record; the variable is local to the
    agent's task, so the stream's own buffering task (which tracks the events to ack) is not
    affected.
    """
    faust_streams._current_event.set(weakref.ref(record))


def create_app(settings: Settings) -> faust.App:
    brokers = [f"kafka://{address.strip()}" for address in settings.bootstrap.split(",")]
    partitions = next(t.partitions for t in PIPELINE_TOPICS if t.name == USAGE_EVENTS)
    (settings.data_dir / "streams").mkdir(parents=True, exist_ok=True)
    app = App(
        APP_ID,
        broker=brokers,
        store="memory://",
        datadir=str(settings.data_dir / "streams"),
        topic_partitions=partitions,
        topic_replication_factor=1,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Tansu answers a group join after about half the session timeout; keep it short.
        broker_session_timeout=10.0,
        broker_rebalance_timeout=10.0,
        broker_heartbeat_interval=3.0,
        # record batches of up to 256 KiB (Kafka's default is 16 KiB, ~15 priced events): fewer,
        # larger produce requests for the worker and the broker
        producer_max_batch_size=256 * 1024,
        # Fetch up to 8 MiB per partition and buffer up to 16,384 events per stream (faust's
        # defaults: 1 MiB and 4,096): a backlog then arrives in a few large fetches instead of
        # many small ones, and the stream never stalls the fetcher (~20 % more events/s here).
        consumer_max_fetch_size=8 * 1024**2,
        stream_buffer_maxsize=16_384,
    )

    usage_topic = app.topic(
        USAGE_EVENTS, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    async def emit(topic: str, key: bytes | None, value: bytes) -> None:
        """Hand a record to the Kafka producer without waiting for the broker. faust flushes the
        producer before it commits the offsets of the events that caused it (at-least-once)."""
        await app.producer.send(topic, key, value, partition=None, timestamp=None, headers=None)

    pricer = load_pricer(settings)
    book = BudgetBook(load_budgets(settings.config_dir / "budgets.yaml"))
    retention = timedelta(seconds=settings.ledger_mark_retention_s)
    ledger = BudgetLedger(book, partitions, retention)
    anomalies = AnomalyDetector(load_anomaly_config(settings.config_dir / "anomaly.yaml"))
    # Counts and seen marks share one table so one changelog orders them (see BudgetLedger).
    ledger_table = app.Table("budget_ledger", key_type=str, value_type=str, partitions=partitions)
    # faust restores str and int table values from a changelog, not bool: 1 means seen.
    unpriced_seen = app.Table(
        "unpriced_models", key_type=str, value_type=int, partitions=partitions
    )

    async def send_alerts(alerts: list[AlertEvent]) -> None:
        for alert in alerts:
            await emit(ALERTS, alert.alert_id.encode(), alert.to_wire())

    async def price(key: bytes | None, value: bytes) -> tuple[UsageEvent, bytes] | None:
        """The priced event and its wire form, or None once the record is dead-lettered with
        its reason."""
        try:
            event = UsageEvent.from_wire(value)
        except (ValidationError, ValueError) as exc:
            reason = rejection(exc)
            await emit(DEAD_LETTERS, key, dead_letter(USAGE_EVENTS, value, reason))
            return None
        try:
            priced = pricer.price_event(event)
        except UsageInvariantError as exc:
            reason = rejection(exc)
            await emit(DEAD_LETTERS, key, dead_letter(USAGE_EVENTS, value, reason))
            return None
        anomalies.observe(priced)
        model_key = f"{priced.provider}/{priced.provider_model}"
        if priced.price_status == "unpriced" and not unpriced_seen.get(model_key):
            unpriced_seen[model_key] = 1
            await send_alerts([unpriced_alert(priced)])
        return priced, priced.to_wire()

    @app.agent(usage_topic)
    async def price_and_count(events: faust.StreamT[Any]) -> None:
        stream = cast(faust.Stream[Any], events)  # take_events is on the concrete class
        assigned: set[Any] = set()
        async for batch in stream.take_events(2000, within=0.05):
            if app.assignor.assigned_actives() != assigned:  # a rebalance: re-read the marks
                assigned = set(app.assignor.assigned_actives())
                ledger.forget_marks()
            by_partition: dict[int, list[tuple[faust.EventT, UsageEvent]]] = {}
            out = RecordBatches(cast(FaustProducer, app.producer)._ensure_producer(), PRICED_USAGE)
            for record in batch:
                writing_for(record)
                done = await price(record.key, record.value)
                if done is not None:
                    priced, wire = done
                    partition = record.message.partition
                    out.add(partition, record.key, wire)
                    by_partition.setdefault(partition, []).append((record, priced))
            await out.send()
            for partition, items in by_partition.items():
                writing_for(items[-1][0])
                batch_id = str(items[0][0].message.offset)
                step = ledger.apply((e for _, e in items), partition, ledger_table, batch_id)
                await send_alerts(step.alerts)
                for state in step.states:
                    await emit(BUDGET_STATE, state.key(), state.to_wire())

    @app.timer(interval=5.0)
    async def review_budgets() -> None:
        """RECOVERED when a period ends or a changed budget no longer crosses a threshold."""
        await send_alerts(ledger.review(ledger_table, datetime.now(UTC)))

    @app.timer(interval=min(5.0, anomalies.config.bucket_s / 2))
    async def detect_anomalies() -> None:
        """One explained alert when a key's spend pattern leaves its baseline, one when it
        returns (see streams.anomaly)."""
        await send_alerts(anomalies.evaluate(datetime.now(UTC)))

    @app.task
    async def follow_price_versions() -> None:
        """Every worker reads every price version (no consumer group) into its price book."""

        def add(record: ConsumerRecord) -> None:
            pricer.book.add(PriceVersion.model_validate_json(record.value or b""))

        await follow(settings.bootstrap, PRICE_VERSIONS, add, emit)

    @app.task
    async def follow_budgets() -> None:
        """Every worker reads every budget change made at run time (no consumer group)."""

        def apply(record: ConsumerRecord) -> None:
            book.apply_record(record.key, record.value)

        await follow(settings.bootstrap, BUDGETS, apply, emit)

    return app


async def follow(
    bootstrap: str,
    topic: str,
    apply: Callable[[ConsumerRecord], None],
    emit: Callable[[str, bytes | None, bytes], Awaitable[None]],
) -> None:
    """Read a compacted topic from its beginning and keep applying its records; a record that
    does not validate goes to the dead-letter topic with the reason."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        async for record in consumer:
            try:
                apply(record)
            except ValidationError as exc:
                reason = rejection(exc)
                await emit(DEAD_LETTERS, None, dead_letter(topic, record.value, reason))
    finally:
        await consumer.stop()
