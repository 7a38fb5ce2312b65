"""Rebuild a warehouse from the log: every record of the loaded topics, from the first offset to
the end of each partition, through the loader's own micro-batch code.

The replay reads without a consumer group (it commits nothing and does not disturb the running
warehouse) into a DuckDB file of its own. Calls, their effective costs, alerts, deliveries and
quarantined records come out identical to a warehouse that loaded the same records live. What
may differ is only how a cost is split: a call the live warehouse priced before a price version
arrived carries a correction row, while the replay, which may read that version first, prices
the call with it directly; the effective cost is the same.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from ingest.fetch import FETCH_SIZES, next_batch
from ingest.loader import LOADED_TOPICS, Loaded, Pipeline, WarehouseLoader


@dataclass
class ReplayProgress:
    records: Counter[str] = field(default_factory=Counter)
    calls_loaded: int = 0
    quarantined: int = 0
    unreached: dict[str, int] = field(default_factory=dict)
    """Partitions whose end offset could not be reached (the broker served nothing more)."""


async def replay(
    bootstrap: str,
    loader: WarehouseLoader,
    batch: int | None = None,
    idle_timeout_s: float = 10.0,
) -> ReplayProgress:
    """`batch`: records per load (default: the loader's largest micro-batch)."""
    batch = batch or loader.max_records
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="tokenops-replay",
        max_poll_records=batch,
        **FETCH_SIZES,
    )
    await consumer.start()
    progress = ReplayProgress()
    pipeline = Pipeline(loader)

    def count(loaded: list[Loaded]) -> None:
        for done in loaded:
            progress.records.update(r.topic for r in done.records)
            progress.calls_loaded += done.result.calls_loaded
            progress.quarantined += done.result.quarantined

    try:
        present = await consumer.topics()
        partitions = [
            TopicPartition(topic, p)
            for topic in LOADED_TOPICS
            if topic in present
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return progress
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        # The end offsets are a lower bound, not the stopping point: the embedded broker
        # (Tansu) reports the last record batch's base offset + 1 as the end, so the rest of
        # that batch lies beyond it. A partition is done once it is past its end offset and a
        # fetch returns nothing more.
        reached = {tp for tp in partitions if end[tp] == 0}
        idle_since = time.monotonic()
        while True:
            fetched = await next_batch(consumer, batch, *partitions, idle_ms=500)
            records = [r for found in fetched.values() for r in found]
            for tp, found in fetched.items():
                if found and found[-1].offset + 1 >= end[tp]:
                    reached.add(tp)
            if records:
                idle_since = time.monotonic()
                count(await pipeline.submit(records))
            elif len(reached) == len(partitions):
                break
            elif time.monotonic() - idle_since > idle_timeout_s:
                # The broker says there is more but serves nothing: report it, do not hang.
                progress.unreached = {
                    f"{tp.topic}[{tp.partition}]": end[tp] for tp in partitions if tp not in reached
                }
                break
        count(await pipeline.drain())
    finally:
        await consumer.stop()
    return progress
