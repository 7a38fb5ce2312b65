"""The relay's hard budget gate: a local cache of the budget-state topic.

A background thread follows the compacted budget-state topic from its beginning (no consumer
group: every relay reads everything) and keeps the latest state per (tenant, period). The
request path only reads a dict. A state blocks only while its period is the current one, so a
new day or month opens the gate without any message. If the broker is away the cache keeps its
last known states (fail open for tenants it never saw blocked).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from pydantic import ValidationError

from ingest.budget_state import BudgetState
from ingest.topics import BUDGET_STATE
from streams.budgets import PERIODS, period_start

log = logging.getLogger(__name__)


class BudgetGate:
    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._states: dict[tuple[str, str], BudgetState] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="budget-gate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def blocked(self, tenant: str, now: datetime | None = None) -> BudgetState | None:
        """The state that blocks `tenant` now, or None."""
        now = now or datetime.now(UTC)
        for period in PERIODS:
            state = self._states.get((tenant, period))
            if state is not None and state.blocked and state.in_force(period_start(now, period)):
                return state
        return None

    def apply(self, payload: bytes) -> None:
        try:
            state = BudgetState.model_validate_json(payload)
        except ValidationError:
            log.warning("ignoring an undecodable budget state record")
            return
        current = self._states.get((state.tenant, state.period))
        if current is None or (state.period_start, state.updated_at) >= (
            current.period_start,
            current.updated_at,
        ):
            self._states[(state.tenant, state.period)] = state

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                consumer = KafkaConsumer(
                    bootstrap_servers=self._bootstrap,
                    client_id="tokenops-relay-budget-gate",
                    enable_auto_commit=False,
                    consumer_timeout_ms=1000,
                    bootstrap_timeout_ms=5_000,
                )
            except (KafkaError, OSError, ValueError):
                self._stop.wait(2.0)
                continue
            try:
                partitions = consumer.partitions_for_topic(BUDGET_STATE) or set()
                if not partitions:
                    self._stop.wait(2.0)
                    continue
                consumer.assign([TopicPartition(BUDGET_STATE, p) for p in partitions])
                consumer.seek_to_beginning()
                while not self._stop.is_set():
                    for records in consumer.poll(timeout_ms=500).values():
                        for record in records:
                            if record.value is not None:
                                self.apply(record.value)
            except (KafkaError, OSError) as exc:
                log.warning("budget gate lost Kafka at %s (%s); retrying", self._bootstrap, exc)
                self._stop.wait(2.0)
            finally:
                consumer.close()
