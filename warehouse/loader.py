"""Kafka -> DuckDB loader.

Per micro-batch (up to 5,000 records or 1 s): decode, price with ingest.pricing, write the
batch to DuckDB in one transaction, apply any new price versions (correction rows for the calls
they re-price), send undecodable or invalid records to the dead-letter topic, and only then
commit the Kafka offsets. A crash anywhere before the offset commit re-delivers the batch, which
the store skips by event_id, alert_id, delivery_id and price version id: at-least-once
delivery, exactly-once effect.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from ingest.alert_delivery import AlertDelivery
from ingest.alert_event import AlertEvent
from ingest.price_book import PriceVersion
from ingest.pricing import Pricer
from ingest.rejection import rejection
from ingest.topics import ALERT_DELIVERIES, ALERTS, DEAD_LETTERS, PRICE_VERSIONS, USAGE_EVENTS
from ingest.usage_event import UsageEvent
from warehouse.store import Quarantined, WarehouseStore

log = logging.getLogger("tokenops.warehouse.loader")

GROUP_ID = "tokenops-warehouse"


@dataclass
class LoaderStats:
    consumed: int = 0
    loaded: int = 0
    duplicates: int = 0
    alerts: int = 0
    deliveries: int = 0
    quarantined: int = 0
    corrections: int = 0
    last_load_at: datetime | None = None


def _quarantined(record: ConsumerRecord[bytes, bytes], value: bytes, exc: Exception) -> Quarantined:
    return Quarantined(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=rejection(exc),
        payload=value.decode("utf-8", errors="replace"),
    )


class WarehouseLoader:
    def __init__(
        self,
        bootstrap: str,
        store: WarehouseStore,
        pricer: Pricer,
        *,
        max_records: int = 5_000,
    ) -> None:
        self._bootstrap = bootstrap
        self._store = store
        self.pricer = pricer
        self._max_records = max_records
        self.stats = LoaderStats()

    def decode(
        self, records: list[ConsumerRecord[bytes, bytes]]
    ) -> tuple[list[UsageEvent], list[AlertEvent], list[PriceVersion], list[Quarantined]]:
        calls: list[UsageEvent] = []
        alerts: list[AlertEvent] = []
        versions: list[PriceVersion] = []
        quarantined: list[Quarantined] = []
        for record in records:
            value = record.value or b""
            try:
                if record.topic == USAGE_EVENTS:
                    calls.append(self.pricer.price_event(UsageEvent.from_wire(value)))
                elif record.topic == PRICE_VERSIONS:
                    versions.append(PriceVersion.model_validate_json(value))
                else:
                    alerts.append(AlertEvent.model_validate_json(value))
            except (ValidationError, ValueError) as exc:
                quarantined.append(_quarantined(record, value, exc))
        return calls, alerts, versions, quarantined

    def decode_deliveries(
        self, records: list[ConsumerRecord[bytes, bytes]]
    ) -> tuple[list[AlertDelivery], list[Quarantined]]:
        """Records of the alert deliveries topic (kept apart from `decode`'s topics)."""
        deliveries: list[AlertDelivery] = []
        quarantined: list[Quarantined] = []
        for record in records:
            value = record.value or b""
            try:
                deliveries.append(AlertDelivery.model_validate_json(value))
            except ValidationError as exc:
                quarantined.append(_quarantined(record, value, exc))
        return deliveries, quarantined

    def reconcile_price_versions(self) -> int:
        """Apply every own price version the warehouse has not applied yet (e.g. added while
        it was down, or after the embedded broker lost its topics)."""
        applied = self._store.applied_price_versions()
        written = 0
        for version in self.pricer.book.versions:
            if version.id not in applied:
                written += self._store.apply_price_version(version, self.pricer)
        self.stats.corrections += written
        return written

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            USAGE_EVENTS,
            ALERTS,
            PRICE_VERSIONS,
            ALERT_DELIVERIES,
            bootstrap_servers=self._bootstrap,
            group_id=GROUP_ID,
            client_id="tokenops-warehouse",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            rebalance_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
            max_poll_records=self._max_records,
        )
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        await consumer.start()
        await producer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=1_000, max_records=self._max_records)
                records = [r for partition in batches.values() for r in partition]
                if records:
                    await self._load(records, producer)
                    await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()

    async def _load(
        self, records: list[ConsumerRecord[bytes, bytes]], producer: AIOKafkaProducer
    ) -> None:
        delivery_records = [r for r in records if r.topic == ALERT_DELIVERIES]
        calls, alerts, versions, quarantined = self.decode(
            [r for r in records if r.topic != ALERT_DELIVERIES]
        )
        deliveries, bad_deliveries = self.decode_deliveries(delivery_records)
        quarantined += bad_deliveries
        savings = {
            e.event_id: saved
            for e in calls
            if (saved := self.pricer.cache_savings_usd(e)) is not None
        }
        result = await asyncio.to_thread(
            self._store.load, calls, alerts, quarantined, deliveries, savings
        )
        for version in versions:
            self.pricer.book.add(version)
        if versions:
            self.stats.corrections += await asyncio.to_thread(self.reconcile_price_versions)
        for q in quarantined:
            await producer.send_and_wait(
                DEAD_LETTERS,
                json.dumps(
                    {
                        "source_topic": q.topic,
                        "partition": q.partition,
                        "offset": q.offset,
                        "reason": q.reason,
                        "payload": q.payload,
                    }
                ).encode(),
            )
        stats = self.stats
        stats.consumed += len(records)
        stats.loaded += result.inserted
        stats.duplicates += result.duplicates
        stats.alerts += len(alerts)
        stats.deliveries += len(deliveries)
        stats.quarantined += len(quarantined)
        stats.last_load_at = datetime.now(UTC)
