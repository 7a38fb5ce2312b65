"""Publishes usage events to Kafka without ever making a request wait on the broker.

`publish()` only puts the event on a bounded in-memory queue. One background thread drains it
with a kafka-python producer (acks=all, idempotent) and waits for acknowledgements per batch.
Delivery order and failure behaviour:
- broker healthy: queue -> Kafka, acknowledged per batch;
- a batch fails (broker down, timeout, fatal producer error) or the queue is full: the events go
  to the fsync'd disk spool, the producer is rebuilt, and later events follow them into the
  spool so order is kept;
- every `retry_interval_s` the thread replays the spool, oldest segment first, and deletes a
  segment only once Kafka acknowledged all of it; the spool left by a crashed relay is replayed
  on start. A replayed event may arrive twice: consumers dedupe by event_id;
- with `adopt` (relay workers, relay.spool.SpoolSlot), every `adopt_interval_s` the thread also
  takes over the spools no running relay holds, which are then replayed the same way.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaProducer
from kafka.errors import KafkaError

from ingest.topics import USAGE_EVENTS
from ingest.usage_event import UsageEvent
from relay.spool import DiskSpool, Record

log = logging.getLogger(__name__)


@dataclass
class PublisherStats:
    published: int = 0
    spooled: int = 0
    send_failures: int = 0
    producer_rebuilds: int = 0


class UsagePublisher:
    def __init__(
        self,
        bootstrap: str,
        spool_dir: Path,
        *,
        topic: str = USAGE_EVENTS,
        queue_size: int = 100_000,
        batch_size: int = 2_000,
        flush_timeout_s: float = 10.0,
        retry_interval_s: float = 1.0,
        linger_s: float = 0.05,
        adopt: Callable[[DiskSpool], int] | None = None,
        adopt_interval_s: float = 5.0,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._queue: queue.Queue[Record] = queue.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._flush_timeout_s = flush_timeout_s
        self._retry_interval_s = retry_interval_s
        self._linger_s = linger_s
        self.spool = DiskSpool(spool_dir)
        self.stats = PublisherStats()
        self._producer: KafkaProducer | None = None
        self._healthy = self.spool.depth == 0
        self._next_retry = 0.0
        self._adopt = adopt
        self._adopt_interval_s = adopt_interval_s
        self._next_adopt = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="usage-publisher", daemon=True)

    # -- called from the event loop -------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def publish(self, event: UsageEvent) -> None:
        record = (event.kafka_key(), event.to_wire())
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.spool.append([record])
            self.stats.spooled += 1

    @property
    def broker_healthy(self) -> bool:
        return self._healthy

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def close(self, timeout_s: float = 15.0) -> None:
        """Deliver or spool everything queued, then stop the thread."""
        self._stop.set()
        self._thread.join(timeout_s)
        leftover = self._take(block=False, limit=None)
        self.spool.append(leftover)
        self.stats.spooled += len(leftover)
        if self._producer is not None:
            self._producer.close(timeout=2)

    # -- the publisher thread ----------------------------------------------------------------
    def _take(self, *, block: bool, limit: int | None) -> list[Record]:
        """A batch: wait for a first event, then linger so that one wake-up of this thread
        (and of the producer's) carries many events; every wake-up competes with the event
        loop for the GIL, so batching keeps the relay's added latency low."""
        batch: list[Record] = []
        try:
            if block:
                batch.append(self._queue.get(timeout=0.05))
                if self._linger_s and not self._stop.is_set():
                    time.sleep(self._linger_s)
            while limit is None or len(batch) < limit:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._take(block=True, limit=self._batch_size)
            if self._adopt is not None and time.monotonic() >= self._next_adopt:
                self._adopt_unheld()
            if self.spool.depth and time.monotonic() >= self._next_retry:
                self._replay_spool()
            if not batch:
                continue
            if not self._healthy or self.spool.depth:
                self.spool.append(batch)
                self.stats.spooled += len(batch)
                continue
            failed = self._send(batch)
            if failed:
                self.spool.append(failed)
                self.stats.spooled += len(failed)

    def _adopt_unheld(self) -> None:
        assert self._adopt is not None
        self._next_adopt = time.monotonic() + self._adopt_interval_s
        try:
            adopted = self._adopt(self.spool)
        except OSError as exc:
            log.warning("could not take over another relay's spool: %s", exc)
            return
        if adopted:
            log.warning(
                "took over %d spool segments no running relay held; publishing them", adopted
            )

    def _ensure_producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id="tokenops-relay",
                acks="all",
                enable_idempotence=True,
                linger_ms=2,
                batch_size=256 * 1024,
                max_block_ms=2_000,
                # Without this the constructor may wait 30 s for an absent broker while the
                # batch in hand is neither sent nor spooled.
                bootstrap_timeout_ms=2_000,
                request_timeout_ms=5_000,
                delivery_timeout_ms=8_000,
                max_in_flight_requests_per_connection=5,
                # its sensors run for every record, and nothing reads them
                metrics_enabled=False,
            )
        return self._producer

    def _discard_producer(self) -> None:
        # A producer that failed may hold a dead producer id (e.g. the broker restarted empty);
        # a fresh one works at once, so never reuse it.
        if self._producer is not None:
            try:
                self._producer.close(timeout=0)
            except Exception:  # closing a broken client must not stop the publisher
                log.debug("closing a failed producer raised", exc_info=True)
            self._producer = None
            self.stats.producer_rebuilds += 1

    def _send(self, records: list[Record]) -> list[Record]:
        """Send and wait for acks; return the records that were not acknowledged."""
        try:
            producer = self._ensure_producer()
            futures = [producer.send(self._topic, key=k, value=v) for k, v in records]
            producer.flush(timeout=self._flush_timeout_s)
        except (KafkaError, OSError) as exc:
            return self._failed(records, exc)
        failed = [r for r, f in zip(records, futures, strict=True) if not f.succeeded()]
        if failed:
            errors = {type(f.exception).__name__ for f in futures if f.failed()}
            return self._failed(failed, ", ".join(sorted(errors)) or "flush timeout")
        self.stats.published += len(records)
        if not self._healthy:
            log.warning("kafka at %s is back; publishing resumed", self._bootstrap)
        self._healthy = True
        return []

    def _failed(self, records: list[Record], reason: object) -> list[Record]:
        if self._healthy:
            log.warning(
                "kafka at %s unavailable (%s); spooling usage events to disk",
                self._bootstrap,
                reason,
            )
        self._healthy = False
        self.stats.send_failures += 1
        self._discard_producer()
        self._next_retry = time.monotonic() + self._retry_interval_s
        return records

    def _replay_spool(self) -> None:
        self.spool.seal()
        for segment in self.spool.segments():
            records = self.spool.read(segment)
            if records and self._send(records):
                return  # still down; the segment stays for the next retry
            self.spool.remove(segment, len(records))
        self._healthy = True
