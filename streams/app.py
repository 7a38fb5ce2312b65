"""The faust app: usage -> price -> priced usage -> budget ledger -> alerts.

Delivery is at-least-once (faust acks an event after its agent step finished); the ledger is
idempotent by event_id, so redelivery never counts twice. Events that cannot be decoded go to
the dead-letter topic with the reason and the agents keep running.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import faust
from pydantic import ValidationError

from ingest.pricing import price_event
from ingest.topics import ALERTS, DEAD_LETTERS, PRICED_USAGE, USAGE_EVENTS
from ingest.usage_event import UsageEvent
from streams.budget_ledger import BudgetLedger
from streams.budgets import load_budgets
from tokenops.settings import Settings

APP_ID = os.environ.get("TOKENOPS_STREAMS_APP_ID", "tokenops-streams")


def dead_letter(source: str, payload: bytes | None, reason: str) -> bytes:
    text = payload.decode("utf-8", errors="replace") if payload is not None else None
    return json.dumps({"source_topic": source, "reason": reason, "payload": text}).encode()


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

    ledger = BudgetLedger(load_budgets(settings.config_dir / "budgets.yaml"))
    spend = app.Table("budget_spend", key_type=str, value_type=str, partitions=3)
    seen = app.Table("budget_seen_events", key_type=str, value_type=bool, partitions=3)

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
            await priced_topic.send(key=key, value=price_event(event).to_wire())

    @app.agent(priced_topic)
    async def budget_ledger(stream: faust.StreamT[Any]) -> None:
        async for key, event in decoded(stream, PRICED_USAGE):
            for alert in ledger.apply(event, spend, seen):
                await alerts_topic.send(key=key, value=alert.to_wire())

    return app
