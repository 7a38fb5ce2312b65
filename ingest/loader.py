"""Kafka -> great-expectations -> DuckDB: the warehouse loader.

Per micro-batch (whatever arrived within 1 s, up to MAX_RECORDS: a backlog loads in big
batches, which is where the expectation suite's fixed cost per batch, ~0.2 s, stops mattering;
steps 1-2 of one batch run while the previous batch is in steps 3-5, see `Pipeline`):
1. decode usage and price it as columns (ingest.usage_batch); decode each record that path
   hands back, and every other record, against its contract (usage events, imported usage,
   alerts, alert deliveries, price versions), pricing usage with ingest.pricing;
2. run the great-expectations suite (ingest.quality) on the batch's calls;
3. write calls, alerts, deliveries, quarantined records and the batch's conservation counts to
   DuckDB in ONE transaction (set-based inserts, idempotent by id);
4. apply new price versions (correction rows), send each quarantined record to the dead-letter
   topic with its reason;
5. only then commit the Kafka offsets.
A crash anywhere before step 5 redelivers the batch, which the store counts as duplicates and
does not insert again: at-least-once delivery, exactly-once effect, and per topic, partition
and hour consumed = loaded + quarantined + duplicates.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Context, Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from ingest.alert_delivery import AlertDelivery
from ingest.alert_event import AlertEvent
from ingest.fetch import FETCH_SIZES, Record, next_batch
from ingest.price_book import PriceVersion
from ingest.pricing import Pricer, UsageInvariantError
from ingest.quality import MONEY, CallChecks
from ingest.rejection import rejection
from ingest.topics import (
    ALERT_DELIVERIES,
    ALERTS,
    DEAD_LETTERS,
    PRICE_VERSIONS,
    USAGE_EVENTS,
    USAGE_IMPORTS,
)
from ingest.usage_batch import UsageBatchPricer
from ingest.usage_event import UsageEvent
from warehouse.store import BatchResult, MicroBatch, Origin, Quarantined, WarehouseStore

log = logging.getLogger("tokenops.warehouse.loader")

GROUP_ID = "tokenops-warehouse"
USAGE_TOPICS = (USAGE_EVENTS, USAGE_IMPORTS)
HOUR_MS = 3_600_000
LOADED_TOPICS = (USAGE_EVENTS, USAGE_IMPORTS, ALERTS, PRICE_VERSIONS, ALERT_DELIVERIES)


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


def origin(record: Record) -> Origin:
    return Origin(record.topic, record.partition, record.offset, record.timestamp)


def _quarantined(
    record: Record, stage: str, reason: str, payload: str | None = None
) -> Quarantined:
    return Quarantined(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=reason,
        payload=(
            payload
            if payload is not None
            else (record.value or b"").decode("utf-8", errors="replace")
        ),
        stage=stage,
        timestamp_ms=record.timestamp,
    )


def _with_origins(calls: pa.Table, usage: Sequence[Record]) -> pa.Table:
    """The staged calls with the topic, partition and hour each came from (for the
    conservation report)."""
    count = len(usage)
    positions = calls.column("position")
    topics = pa.array([r.topic for r in usage], pa.string())
    partitions = np.fromiter((r.partition for r in usage), np.int32, count)
    hours = np.fromiter((r.timestamp for r in usage), np.int64, count) // HOUR_MS * HOUR_MS
    return (
        calls.append_column("origin_topic", topics.take(positions))
        .append_column("origin_partition", pa.array(partitions).take(positions))
        .append_column(
            "origin_hour", pa.array(hours).take(positions).cast(pa.timestamp("ms", "UTC"))
        )
    )


MONEY_TYPE = pa.decimal128(38, 18)
"""Money as table `calls` holds it (DECIMAL(38, 18))."""
MONEY_DTYPE = pd.ArrowDtype(MONEY_TYPE)
CHECKED = pa.schema(
    [
        ("tenant", pa.string()),
        ("event_time", pa.timestamp("us", "UTC")),
        ("latency_ms", pa.int64()),
        ("price_status", pa.string()),
        *[(m, MONEY_TYPE) for m in MONEY],
    ]
)
"""The columns of a batch's calls the expectation suite reads."""
ATTO = Decimal("1e-18")
_DECIMAL_38 = Context(prec=38)
INTEGER_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1
MONEY_BOUND = Decimal(10) ** 20
"""What the columns of table `calls` hold: INTEGER, BIGINT and DECIMAL(38, 18) (under 10^20)."""


def _atto_exact(amount: Decimal | None) -> Decimal | None:
    """`amount` at DECIMAL(38, 18)'s scale, rounded as DuckDB rounds it when storing it (half
    away from zero)."""
    return None if amount is None else amount.quantize(ATTO, ROUND_HALF_UP, _DECIMAL_38)


def _storable(event: UsageEvent, saved: Decimal | None) -> None:
    """A ValueError naming the first value of a call that table `calls` cannot hold (it would
    fail the batch's write, and with it every later batch); the columnar path refuses these
    before pricing."""
    for name in ("attempt", "latency_ms", "http_status"):
        value = getattr(event, name)
        if value is not None and not -INTEGER_MAX - 1 <= value <= INTEGER_MAX:
            raise ValueError(f"{name} {value} is out of the warehouse's range (32-bit)")
    for name, count in event.tokens.model_dump().items():
        if count > BIGINT_MAX:
            raise ValueError(f"{name} tokens {count} are out of the warehouse's range (64-bit)")
    amounts = {
        "cost_usd": event.cost_usd,
        "cost_billed": event.cost_billed,
        "fx_rate": event.fx_rate,
        "cache savings": saved,
        **{f"{name} cost": amount for name, amount in (event.cost_by_class or {}).items()},
    }
    for name, amount in amounts.items():
        if amount is not None and abs(amount) >= MONEY_BOUND:
            raise ValueError(f"{name} {amount} is out of the warehouse's range (under 10^20)")


def dead_letter(q: Quarantined) -> bytes:
    return json.dumps(
        {
            "source_topic": q.topic,
            "partition": q.partition,
            "offset": q.offset,
            "stage": q.stage,
            "reason": q.reason,
            "payload": q.payload,
        }
    ).encode()


MAX_RECORDS = 250_000
"""The largest micro-batch: a backlog (a restart, a replay) loads in batches this big, which
DuckDB writes straight to row groups of the file (122,880 rows each) instead of through its
write-ahead log; live traffic arrives in the batches one poll returns (at most a second's)."""


class WarehouseLoader:
    def __init__(
        self,
        bootstrap: str,
        store: WarehouseStore,
        pricer: Pricer,
        checks: CallChecks | None = None,
        *,
        max_records: int = MAX_RECORDS,
    ) -> None:
        self._bootstrap = bootstrap
        self._store = store
        self.pricer = pricer
        self.checks = checks or CallChecks(None)
        self.max_records = max_records
        self.columns = UsageBatchPricer(pricer)
        self.stats = LoaderStats()

    def micro_batch(self, records: Sequence[Record]) -> tuple[MicroBatch, list[PriceVersion]]:
        """Decode, price and check `records`; nothing is written yet. Usage records go through
        the columnar path (ingest.usage_batch) first; what it hands back, and every other
        record, is judged one by one."""
        batch = MicroBatch()
        versions: list[PriceVersion] = []
        usage = [r for r in records if r.topic in USAGE_TOPICS]
        staged = self.columns.stage(usage)
        batch.call_table = _with_origins(staged.calls, usage)
        for record in [r for r in records if r.topic not in USAGE_TOPICS] + staged.rest:
            value = record.value or b""
            try:
                if record.topic in USAGE_TOPICS:
                    try:
                        priced = self._priced(record)
                    except UsageInvariantError as exc:
                        batch.quarantined.append(_quarantined(record, "pricing", rejection(exc)))
                        continue
                    saved = self.pricer.cache_savings_usd(priced)
                    _storable(priced, saved)
                    batch.calls.append((priced, saved, origin(record)))
                elif record.topic == PRICE_VERSIONS:
                    version = PriceVersion.model_validate_json(value)
                    versions.append(version)
                    new = version.id not in self.pricer.book
                    batch.applied_elsewhere.append((origin(record), new))
                elif record.topic == ALERT_DELIVERIES:
                    batch.deliveries.append(
                        (AlertDelivery.model_validate_json(value), origin(record))
                    )
                else:
                    batch.alerts.append((AlertEvent.model_validate_json(value), origin(record)))
            except (ValidationError, ValueError) as exc:
                batch.quarantined.append(_quarantined(record, "decode", rejection(exc)))
        self._check(batch, usage)
        return batch, versions

    def _priced(self, record: Record) -> UsageEvent:
        return self.pricer.price_event(UsageEvent.from_wire(record.value or b""))

    def _check(self, batch: MicroBatch, usage: Sequence[Record]) -> None:
        """Run the expectation suite once over every call of the batch, columnar and one by
        one, and move the calls that fail it to quarantine (with the priced event as payload,
        whichever path priced it)."""
        table = batch.call_table
        parts = []
        if table is not None and table.num_rows:
            parts.append(table.select(CHECKED.names).cast(CHECKED))
        if batch.calls:
            events = [e for e, _, _ in batch.calls]
            parts.append(
                pa.table(
                    {
                        "tenant": [e.tenant for e in events],
                        "event_time": [e.event_time for e in events],
                        "latency_ms": [e.latency_ms for e in events],
                        "price_status": [e.price_status for e in events],
                        **{m: [_atto_exact(getattr(e, m)) for e in events] for m in MONEY},
                    },
                    schema=CHECKED,
                )
            )
        if not parts:
            return
        # Money stays exact decimals (no text per row) for the suite.
        frame = pa.concat_tables(parts).to_pandas(types_mapper={MONEY_TYPE: MONEY_DTYPE}.get)
        failures = self.checks.failures(frame)
        if not failures:
            return
        failed = {f.row: f.reason for f in failures}
        offset = 0 if table is None else table.num_rows
        if table is not None and any(row < offset for row in failed):
            keep = [row not in failed for row in range(offset)]
            for row, position in enumerate(table.column("position").to_pylist()):
                if row in failed:
                    record = usage[position]
                    payload = self._priced(record).to_wire().decode()
                    batch.quarantined.append(
                        _quarantined(record, "expectations", failed[row], payload)
                    )
            batch.call_table = table.filter(pa.array(keep))
        kept = []
        for row, (event, saved, where) in enumerate(batch.calls, start=offset):
            reason = failed.get(row)
            if reason is None:
                kept.append((event, saved, where))
                continue
            assert where is not None
            batch.quarantined.append(
                Quarantined(
                    topic=where.topic,
                    partition=where.partition,
                    offset=where.offset,
                    reason=reason,
                    payload=event.to_wire().decode(),
                    stage="expectations",
                    timestamp_ms=where.timestamp_ms,
                )
            )
        batch.calls = kept

    def prepare(self, records: Sequence[Record]) -> Prepared:
        """Steps 1-2: decode, price and check `records`; nothing is written yet."""
        batch, versions = self.micro_batch(records)
        return Prepared(records, batch, versions)

    def write(self, prepared: Prepared) -> tuple[BatchResult, list[Quarantined]]:
        """Steps 3-4 minus the dead letters: the one transaction, then the new price versions."""
        result = self._store.load_batch(prepared.batch)
        for version in prepared.versions:
            self.pricer.book.add(version)
        if prepared.versions:
            self.reconcile_price_versions()
        stats = self.stats
        stats.consumed += len(prepared.records)
        stats.loaded += result.calls_loaded
        stats.duplicates += sum(t.duplicates for t in result.tallies.values())
        stats.alerts += result.alerts_loaded
        stats.deliveries += result.deliveries_loaded
        stats.quarantined += result.quarantined
        stats.last_load_at = datetime.now(UTC)
        return result, prepared.batch.quarantined

    def load_records(self, records: Sequence[Record]) -> tuple[BatchResult, list[Quarantined]]:
        """Steps 1-4 minus the dead letters, synchronously (tests call this)."""
        return self.write(self.prepare(records))

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
            *LOADED_TOPICS,
            bootstrap_servers=self._bootstrap,
            group_id=GROUP_ID,
            client_id="tokenops-warehouse",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            rebalance_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
            max_poll_records=self.max_records,
            **FETCH_SIZES,
        )
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        await consumer.start()
        await producer.start()
        pipeline = Pipeline(self)

        async def finish(loaded: list[Loaded]) -> None:
            for done in loaded:
                sent = [await producer.send(DEAD_LETTERS, dead_letter(q)) for q in done.quarantined]
                await asyncio.gather(*sent)
                # A partition reassigned meanwhile is read again by its new owner from the last
                # commit; its records are then counted as duplicates, never loaded twice.
                mine = consumer.assignment()
                offsets = {tp: offset for tp, offset in done.offsets.items() if tp in mine}
                try:
                    if offsets:
                        await consumer.commit(offsets)
                except CommitFailedError as exc:
                    log.warning("offsets not committed (%s); the batch will be read again", exc)

        try:
            while not stop.is_set():
                batches = await next_batch(consumer, self.max_records)
                records = [r for partition in batches.values() for r in partition]
                await finish(await pipeline.submit(records) if records else await pipeline.drain())
            await finish(await pipeline.drain())
        finally:
            await consumer.stop()
            await producer.stop()


@dataclass
class Prepared:
    """A micro-batch decoded, priced and checked, not written yet."""

    records: Sequence[Record]
    batch: MicroBatch
    versions: list[PriceVersion]


@dataclass
class Loaded:
    """A micro-batch written: its outcome and the offsets to commit for it."""

    records: Sequence[Record]
    result: BatchResult
    quarantined: list[Quarantined]

    @property
    def offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the batch's last record there."""
        after: dict[tuple[str, int], int] = {}
        for r in self.records:
            key = (r.topic, r.partition)
            if r.offset >= after.get(key, 0):
                after[key] = r.offset + 1
        return {TopicPartition(topic, partition): at for (topic, partition), at in after.items()}


class Pipeline:
    """Micro-batches in a pipeline: batch N+1 is decoded, priced and checked (in one thread)
    while batch N is written (in another). Both stages are mostly DuckDB, which leaves the
    interpreter while it works, and each has single-threaded parts (the expectation suite, the
    commit) the other fills. Batches are written one at a time, in order, so deduplication and
    the conservation counts are as if loaded one by one. A batch with new price versions is
    written before the next is prepared: that one is priced with them, as without the pipeline.
    """

    def __init__(self, loader: WarehouseLoader) -> None:
        self._loader = loader
        self._writing: tuple[asyncio.Task[tuple[BatchResult, list[Quarantined]]], Prepared] | None
        self._writing = None

    async def submit(self, records: Sequence[Record]) -> list[Loaded]:
        """Prepare `records` (while the previous batch is written), then start writing them.
        Returns the batches whose write finished meanwhile, oldest first."""
        loaded = []
        if self._writing is not None and self._writing[1].versions:
            loaded += await self.drain()
        prepared = await asyncio.to_thread(self._loader.prepare, records)
        loaded += await self.drain()
        writing = asyncio.create_task(asyncio.to_thread(self._loader.write, prepared))
        self._writing = writing, prepared
        return loaded

    async def drain(self) -> list[Loaded]:
        """Wait for the batch being written, if any."""
        if self._writing is None:
            return []
        task, prepared = self._writing
        self._writing = None
        result, quarantined = await task
        return [Loaded(prepared.records, result, quarantined)]
