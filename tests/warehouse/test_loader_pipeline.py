"""The loader's pipeline (batch N+1 prepared while batch N is written) on a real DuckDB file:
batches are written in order, a price version is in force for the batch after it, and every
batch's outcome and offsets come back."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from ingest.fetch import next_batch
from ingest.loader import Loaded, Pipeline, Prepared, WarehouseLoader
from ingest.price_book import ClassRates, PriceBook, PriceVersion
from ingest.pricing import Pricer
from ingest.topics import PRICE_VERSIONS, USAGE_EVENTS
from ingest.usage_event import UsageEvent, new_event_id
from tests.support import consumer_record
from tests.warehouse.test_corrections import NOV, call
from warehouse.store import BatchResult, Quarantined, WarehouseStore


def usage(offset: int, event_id: str | None = None) -> ConsumerRecord[bytes, bytes]:
    event = call("qwen-turbo", "alibaba", NOV, input_uncached=1_000_000)
    if event_id is not None:
        event = event.model_copy(update={"event_id": event_id})
    return consumer_record(USAGE_EVENTS, offset % 2, offset, event.to_wire())


class SlowToApplyVersions(WarehouseLoader):
    """A loader whose writes of price versions take a while: without the pipeline's rule, the
    next batch would be prepared (priced) before the version is in the book."""

    def write(self, prepared: Prepared) -> tuple[BatchResult, list[Quarantined]]:
        if prepared.versions:
            time.sleep(1.0)
        return super().write(prepared)


async def load_all(
    loader: WarehouseLoader, batches: list[list[ConsumerRecord[bytes, bytes]]]
) -> list[Loaded]:
    pipeline = Pipeline(loader)
    loaded: list[Loaded] = []
    for records in batches:
        loaded += await pipeline.submit(records)
    return loaded + await pipeline.drain()


def test_batches_load_in_order_and_a_price_version_prices_the_batch_after_it(
    tmp_path: Path,
) -> None:
    store = WarehouseStore(tmp_path / "warehouse.duckdb")
    try:
        loader = SlowToApplyVersions("127.0.0.1:1", store, Pricer(PriceBook()))
        qwen = PriceVersion(
            provider="alibaba",
            model="qwen-turbo",
            effective_from="2026-11-01",
            source="test list price",
            per_million=ClassRates(input=Decimal("0.5"), output=Decimal("1")),
        )
        repeated = new_event_id()
        batches = [
            [usage(0), usage(1, repeated)],  # no price yet: unpriced
            [consumer_record(PRICE_VERSIONS, 0, 0, qwen.model_dump_json().encode())],
            [usage(2), usage(3)],  # prepared only once the version is in the book
            [usage(4, repeated), usage(5)],  # the repeat of batch 1 is a duplicate
        ]
        loaded = asyncio.run(load_all(loader, batches))

        assert [done.records for done in loaded] == batches
        assert [done.result.calls_loaded for done in loaded] == [2, 0, 2, 1]
        assert [done.result.calls_duplicates for done in loaded] == [0, 0, 0, 1]
        assert loaded[3].offsets == {
            TopicPartition(USAGE_EVENTS, 0): 5,
            TopicPartition(USAGE_EVENTS, 1): 6,
        }
        with store.cursor() as cur:
            rows = {
                event_id: (status, cost, version)
                for event_id, status, cost, version in cur.execute(
                    "SELECT event_id, price_status, cost_usd, price_version_id FROM calls"
                ).fetchall()
            }

        def batch(i: int) -> list[tuple[str, Decimal | None, str | None]]:
            return [rows[UsageEvent.from_wire(r.value or b"").event_id] for r in batches[i]]

        # The calls of batch 1 were priced afterwards by a correction, not in their rows.
        assert batch(0) == [("unpriced", None, None)] * 2
        assert batch(2) == [("priced", Decimal("0.5"), qwen.id)] * 2
        assert batch(3)[1] == ("priced", Decimal("0.5"), qwen.id)
        assert len(rows) == 5
        assert loader.stats.consumed == 7 and loader.stats.duplicates == 1
    finally:
        store.close()


def test_a_micro_batch_gathers_what_arrives_within_its_window_up_to_its_size(
    broker: str,
) -> None:
    """The loader's fetch (`next_batch`) against the real broker: a backlog is taken in batches
    as large as allowed, not a fetch at a time; an idle topic gives an empty batch."""
    topic = f"next-batch-{new_event_id()}"
    admin = KafkaAdminClient(bootstrap_servers=broker)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker, acks="all")
    for i in range(50):  # a record batch each: a fetch of 64 bytes takes one per partition
        producer.send(topic, value=b"%d" % i, partition=i % 2)
        producer.flush()
    producer.close()

    async def fetch() -> list[int]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker,
            group_id=None,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=64,  # a few records per partition and fetch
        )
        await consumer.start()
        try:
            sizes = []
            for _ in range(3):
                batch = await next_batch(consumer, 30, idle_ms=1_000, window_s=3.0)
                sizes.append(sum(len(records) for records in batch.values()))
            return sizes
        finally:
            await consumer.stop()

    assert asyncio.run(fetch()) == [30, 20, 0]
