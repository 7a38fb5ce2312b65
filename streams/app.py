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

import json
import os
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import faust
import faust.streams as faust_streams
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.structs import TopicPartition
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
from tokenops.settings import Settings, load_pricer

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
    app = faust.App(
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
    ledger = BudgetLedger(book, partitions)
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

    async def price(key: bytes | None, value: bytes) -> UsageEvent | None:
        """The priced event, or None once the record is dead-lettered with its reason."""
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
        await emit(PRICED_USAGE, key, priced.to_wire())
        anomalies.observe(priced)
        model_key = f"{priced.provider}/{priced.provider_model}"
        if priced.price_status == "unpriced" and not unpriced_seen.get(model_key):
            unpriced_seen[model_key] = 1
            await send_alerts([unpriced_alert(priced)])
        return priced

    @app.agent(usage_topic)
    async def price_and_count(events: faust.StreamT[Any]) -> None:
        stream = cast(faust.Stream[Any], events)  # take_events is on the concrete class
        assigned: set[Any] = set()
        async for batch in stream.take_events(2000, within=0.05):
            if app.assignor.assigned_actives() != assigned:  # a rebalance: re-read the marks
                assigned = set(app.assignor.assigned_actives())
                ledger.forget_marks()
            by_partition: dict[int, list[tuple[faust.EventT, UsageEvent]]] = {}
            for record in batch:
                writing_for(record)
                priced = await price(record.key, record.value)
                if priced is not None:
                    by_partition.setdefault(record.message.partition, []).append((record, priced))
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
