"""The budget registry: budgets in force and what they have used, for the budgets API.

It follows the compacted budgets topic (run-time changes over the budgets file) and the budget
state topic (the ledger's partials) from their beginning, and writes changes to the budgets topic
with acks=all. A change is applied locally once the broker has it, so the API reads its own
writes; the streams workers and relays pick it up from the topic within a poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from ingest.budget_state import BudgetPartials, BudgetState, BudgetUsage
from ingest.topics import BUDGET_STATE, BUDGETS
from streams.budgets import Budget, BudgetBook

log = logging.getLogger(__name__)


class BudgetRegistry:
    def __init__(self, bootstrap: str, budgets: list[Budget]) -> None:
        self._bootstrap = bootstrap
        self.book = BudgetBook(budgets)
        self._partials = BudgetPartials()
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # A budget record is keyed and compacted: a retried send that lands twice is harmless.
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        await self._producer.start()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
            try:
                await consumer.start()
                consumer.assign(
                    [
                        TopicPartition(topic, p)
                        for topic in (BUDGETS, BUDGET_STATE)
                        for p in consumer.partitions_for_topic(topic) or {0}
                    ]
                )
                await consumer.seek_to_beginning()
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=200)
                    for partition, records in batches.items():
                        for record in records:
                            self._apply(partition.topic, record.key, record.value)
            except KafkaError as exc:
                log.warning("budget registry lost Kafka (%s); retrying in 2 s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
            finally:
                await consumer.stop()

    def _apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        try:
            if topic == BUDGETS:
                self.book.apply_record(key, value)
            elif value is not None:
                self._partials.apply(BudgetState.model_validate_json(value))
        except ValidationError:
            log.warning("ignoring an undecodable record on %s", topic)

    async def put(self, budget: Budget) -> Budget:
        await self._send(budget.id, budget.to_wire())
        self.book.put(budget)
        return budget

    async def delete(self, budget_id: str) -> None:
        await self._send(budget_id, None)
        self.book.delete(budget_id)

    async def _send(self, budget_id: str, value: bytes | None) -> None:
        assert self._producer is not None, "start() the registry first"
        await self._producer.send_and_wait(BUDGETS, key=budget_id.encode(), value=value)

    def usage(self, budget: Budget, now: datetime | None = None) -> BudgetUsage:
        start, end = budget.window(now or datetime.now(UTC))
        return self._partials.usage(budget.id, start, end)

    def view(self, budget: Budget, now: datetime | None = None) -> dict[str, Any]:
        """The budget as the API shows it: its definition, this period's use and the pace."""
        now = now or datetime.now(UTC)
        usage = self.usage(budget, now)
        elapsed = Decimal(int((now - usage.period_start).total_seconds()))
        length = Decimal(int((usage.period_end - usage.period_start).total_seconds()))
        measures = {}
        for measure, limit in budget.limits():
            used = usage.measure(measure)
            pace = used * length / elapsed if elapsed > 0 else used
            measures[measure] = {
                "used": format(used, "f"),
                "limit": format(limit, "f"),
                "used_pct": format((100 * used / limit).quantize(Decimal("0.01")), "f"),
                "forecast": format(pace.quantize(Decimal("0.000001")), "f"),
                "forecast_pct": format((100 * pace / limit).quantize(Decimal("0.01")), "f"),
            }
        return {
            **budget.model_dump(mode="json", exclude_none=True),
            "current_period": {
                "start": usage.period_start.isoformat(),
                "end": usage.period_end.isoformat(),
                "measures": measures,
            },
        }
