"""The faust app: usage -> price -> priced usage -> budget ledger -> alerts.

Delivery is at-least-once (faust acks an event after its agent step finished); the ledger is
idempotent by event_id, so redelivery never counts twice. Events that cannot be decoded, or whose
usage contradicts the provider's totals, go to the dead-letter topic with the reason and the
agents keep running. A model without a price raises one `unpriced` alert (its id is derived from
provider and model, so repeats collapse into one alert downstream).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from ingest.alert_event import AlertEvent, alert_id
from ingest.budget_state import BudgetState
from ingest.price_book import PriceVersion
from ingest.pricing import UsageInvariantError
from ingest.topics import (
    ALERTS,
    BUDGET_STATE,
    DEAD_LETTERS,
    PRICE_VERSIONS,
    PRICED_USAGE,
    USAGE_EVENTS,
)
from ingest.usage_event import UsageEvent
from streams.budget_ledger import BudgetLedger
from streams.budgets import load_budgets
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


def create_app(settings: Settings) -> faust.App:
    brokers = [f"kafka://{address.strip()}" for address in settings.bootstrap.split(",")]
    app = faust.App(
        APP_ID,
        broker=brokers,
        store="memory://",
        datadir=str(settings.data_dir / "streams"),
        topic_partitions=3,
        topic_replication_factor=1,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Tansu answers a group join after about half the session timeout; keep it short.
        broker_session_timeout=10.0,
        broker_rebalance_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(
            name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    usage_topic = raw_topic(USAGE_EVENTS)
    priced_topic = raw_topic(PRICED_USAGE)
    alerts_topic = raw_topic(ALERTS)
    dead_letters = raw_topic(DEAD_LETTERS)
    budget_state_topic = raw_topic(BUDGET_STATE)

    pricer = load_pricer(settings)
    ledger = BudgetLedger(load_budgets(settings.config_dir / "budgets.yaml"))
    spend = app.Table("budget_spend", key_type=str, value_type=str, partitions=3)
    seen = app.Table("budget_seen_events", key_type=str, value_type=bool, partitions=3)
    unpriced_seen = app.Table("unpriced_models", key_type=str, value_type=bool, partitions=3)

    async def decoded(
        stream: faust.StreamT[Any], source: str
    ) -> AsyncIterator[tuple[bytes, UsageEvent]]:
        async for key, value in stream.items():
            try:
                yield key, UsageEvent.from_wire(value)
            except (ValidationError, ValueError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                await dead_letters.send(key=key, value=dead_letter(source, value, reason))

    @app.agent(usage_topic)
    async def price_usage(stream: faust.StreamT[Any]) -> None:
        async for key, event in decoded(stream, USAGE_EVENTS):
            try:
                priced = pricer.price_event(event)
            except UsageInvariantError as exc:
                reason = f"usage invariant: {exc}"
                await dead_letters.send(
                    key=key, value=dead_letter(USAGE_EVENTS, event.to_wire(), reason)
                )
                continue
            await priced_topic.send(key=key, value=priced.to_wire())
            model_key = f"{priced.provider}/{priced.provider_model}"
            if priced.price_status == "unpriced" and not unpriced_seen.get(model_key):
                unpriced_seen[model_key] = True
                await alerts_topic.send(key=key, value=unpriced_alert(priced).to_wire())

    @app.agent(priced_topic)
    async def budget_ledger(stream: faust.StreamT[Any]) -> None:
        async for key, event in decoded(stream, PRICED_USAGE):
            states: list[BudgetState] = []
            for alert in ledger.apply(event, spend, seen, states):
                await alerts_topic.send(key=key, value=alert.to_wire())
            for state in states:
                await budget_state_topic.send(key=state.key(), value=state.to_wire())

    @app.task
    async def follow_price_versions() -> None:
        """Every worker reads every price version (no consumer group) into its price book."""
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(PRICE_VERSIONS) or {0}
            consumer.assign([TopicPartition(PRICE_VERSIONS, p) for p in partitions])
            await consumer.seek_to_beginning()
            async for record in consumer:
                try:
                    pricer.book.add(PriceVersion.model_validate_json(record.value or b""))
                except ValidationError as exc:
                    reason = str(exc).splitlines()[0]
                    await dead_letters.send(value=dead_letter(PRICE_VERSIONS, record.value, reason))
        finally:
            await consumer.stop()

    return app
