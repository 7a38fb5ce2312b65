"""The price-and-count agent in faust's test context: the real agent, tables and ledger on
faust's in-memory transport; what it hands the Kafka producer (records one by one, priced events
as record batches) is recorded (the real-broker behaviour is covered by test_ledger_recovery.py
and the end-to-end tests)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.errors import KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder

from ingest.alert_event import AlertEvent
from ingest.budget_state import BudgetState
from ingest.topics import ALERTS, BUDGET_STATE, DEAD_LETTERS, PRICED_USAGE
from ingest.usage_event import TokenCounts, UsageEvent
from streams.app import create_app, report_undelivered
from tests.support import usage_event
from tokenops.settings import Settings

NOW = datetime.now(UTC)


def call(input_tokens: int = 1_000_000) -> UsageEvent:
    # gpt-4o-mini input: $0.15 per million tokens
    return usage_event(TokenCounts(input_uncached=input_tokens), event_time=NOW)


class RecordedBatch(BatchBuilder):
    """A real record batch that also keeps what was appended to it."""

    def __init__(self) -> None:
        super().__init__(256 * 1024, 0)
        self.records: list[tuple[bytes | None, bytes]] = []

    def append(self, *, timestamp: Any, key: Any, value: Any, headers: Any = ()) -> Any:
        metadata = super().append(timestamp=timestamp, key=key, value=value, headers=[])
        if metadata is not None:
            self.records.append((key, value))
        return metadata


class BatchRecorder:
    """The aiokafka producer's batch interface, recording each batch it is handed."""

    def __init__(self, sent: list[tuple[str, bytes | None, bytes]]) -> None:
        self._sent = sent

    def create_batch(self) -> RecordedBatch:
        return RecordedBatch()

    async def send_batch(
        self, batch: RecordedBatch, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        """Records the batch; like aiokafka's, the future says when the broker took it."""
        self._sent.extend((topic, key, value) for key, value in batch.records)
        taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        taken.set_result(None)
        return taken


async def run_agent(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    records: list[tuple[int, bytes]],
    pause_s: float = 0.0,
    ledger_keys: list[str] | None = None,
    **settings_: Any,
) -> list[tuple[str, bytes | None, bytes]]:
    config = tmp_path / "config"
    config.mkdir()
    budget = {"id": "acme-day", "tenant": "acme", "period": "day", "limit_usd": "0.40",
              "thresholds": ["0.5", "1.0"], "hard": True}  # fmt: skip
    (config / "budgets.yaml").write_text(yaml.safe_dump({"budgets": [budget]}))
    settings = Settings(
        kafka_bootstrap="127.0.0.1:1", config_dir=config, data_dir=tmp_path, **settings_
    )
    app = create_app(settings)
    sent: list[tuple[str, bytes | None, bytes]] = []

    async def record(topic: str, key: bytes | None, value: bytes, **_: Any) -> None:
        sent.append((topic, key, value))

    monkeypatch.setattr(app.producer, "send", record)
    monkeypatch.setattr(app.producer, "_ensure_producer", lambda: BatchRecorder(sent))
    async with app.agents["streams.app.price_and_count"].test_context() as agent:
        for partition, value in records:
            await agent.put(key=b"acme", value=value, partition=partition)
            await asyncio.sleep(pause_s)
        await asyncio.sleep(0.3)  # the agent takes batches of at most 50 ms
        if ledger_keys is not None:
            ledger_keys.extend(app.tables["budget_ledger"].keys())
    return sent


def on(sent: list[tuple[str, bytes | None, bytes]], topic: str) -> list[bytes]:
    return [value for t, _, value in sent if t == topic]


def test_the_agent_prices_counts_once_and_alerts_per_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, third = call(), call(), call()
    records = [(0, e.to_wire()) for e in (first, second, first, third, second)]
    sent = asyncio.run(run_agent(tmp_path, monkeypatch, records))

    priced = [UsageEvent.from_wire(v) for v in on(sent, PRICED_USAGE)]
    assert {p.cost_usd for p in priced} == {Decimal("0.15")}
    states = [BudgetState.model_validate_json(v) for v in on(sent, BUDGET_STATE)]
    assert states[-1].events == 3 and states[-1].spend_usd == Decimal("0.45")
    assert {e for s in states for e in s.counted} == {
        first.event_id,
        second.event_id,
        third.event_id,
    }
    alerts = [AlertEvent.model_validate_json(v) for v in on(sent, ALERTS)]
    assert [(a.state, a.threshold) for a in alerts] == [
        ("WARN", Decimal("0.5")),
        ("BREACH", Decimal("1.0")),
    ]
    assert alerts[1].trigger_event_id == third.event_id and alerts[1].budget_id == "acme-day"


def test_the_agent_forgets_an_event_once_its_marks_expire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a retention of 0.2 s, a duplicate 0.5 s later counts again (in production the
    window is hours); the faust table drops the expired marks record."""
    event = call()
    records = [(0, event.to_wire()), (0, event.to_wire())]
    keys: list[str] = []
    sent = asyncio.run(
        run_agent(
            tmp_path,
            monkeypatch,
            records,
            pause_s=0.5,
            ledger_keys=keys,
            ledger_mark_retention_s=0.2,
        )
    )
    states = [BudgetState.model_validate_json(v) for v in on(sent, BUDGET_STATE)]
    assert [s.events for s in states] == [1, 2]
    assert len([k for k in keys if k.startswith("m|")]) == 1  # the first batch's record is gone


def test_bad_records_are_dead_lettered_and_the_agent_keeps_going(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = call(1000)
    records = [
        (1, b"\xff not json"),
        (1, good.to_wire().replace(b'"schema_version":1', b'"schema_version":2')),
        (1, call(5).model_copy(update={"usage_error": "negative tokens"}).to_wire()),
        (1, good.to_wire()),
    ]
    sent = asyncio.run(run_agent(tmp_path, monkeypatch, records))
    letters = [json.loads(v) for v in on(sent, DEAD_LETTERS)]
    assert [letter["reason"] for letter in letters][1:] == [
        "schema_version: Input should be 1",
        "usage invariant: negative tokens",
    ]
    assert "JSON" in letters[0]["reason"] or "json" in letters[0]["reason"]
    assert [UsageEvent.from_wire(v).event_id for v in on(sent, PRICED_USAGE)] == [good.event_id]


def test_a_batch_the_broker_refuses_for_good_is_logged_with_its_size(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        refused: asyncio.Future[Any] = loop.create_future()
        refused.add_done_callback(partial(report_undelivered, PRICED_USAGE, 2, 17))
        refused.set_exception(KafkaTimeoutError("batch expired"))
        written: asyncio.Future[Any] = loop.create_future()
        written.add_done_callback(partial(report_undelivered, PRICED_USAGE, 1, 5))
        written.set_result(None)
        await asyncio.sleep(0)  # done callbacks run on the next loop pass

    with caplog.at_level("ERROR", logger="streams.app"):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        f"17 records for {PRICED_USAGE} partition 2 were not written: "
        "KafkaTimeoutError('batch expired')"
    ]
