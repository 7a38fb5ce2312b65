"""What the loader does with each record it consumes, before anything is written."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from aiokafka.structs import ConsumerRecord

from ingest.loader import WarehouseLoader
from ingest.pricing import Pricer
from ingest.topics import USAGE_EVENTS
from ingest.usage_event import TokenCounts, UsageEvent, new_event_id
from tests.support import consumer_record
from warehouse.store import WarehouseStore


def record(value: bytes, offset: int) -> ConsumerRecord[bytes, bytes]:
    return consumer_record(USAGE_EVENTS, 0, offset, value)


def event(**changes: object) -> UsageEvent:
    base = UsageEvent(
        event_id=new_event_id(),
        event_time=datetime(2026, 11, 3, 12, tzinfo=UTC),
        tenant="acme",
        endpoint="chat.completions",
        requested_model="gpt-4o-mini",
        served_model="gpt-4o-mini",
        provider="openai",
        provider_model="gpt-4o-mini",
        tokens=TokenCounts(input_uncached=10, output=5),
        raw_usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    )
    return base.model_copy(update=changes)


def test_bad_records_are_quarantined_with_the_reason_and_good_ones_priced(tmp_path: Path) -> None:
    store = WarehouseStore(tmp_path / "w.duckdb")
    loader = WarehouseLoader("127.0.0.1:1", store, Pricer())
    tampered = event(tokens=TokenCounts(input_uncached=9, output=5))
    contradictory = event(
        tokens=TokenCounts(),
        raw_usage={"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}},
        usage_error="cache read 50 + cache write 0 exceed prompt_tokens 10",
    )
    batch, _ = loader.micro_batch(
        [
            record(event().to_wire(), 0),
            record(tampered.to_wire(), 1),
            record(contradictory.to_wire(), 2),
            record(b"\xff not json", 3),
            record(b'{"schema_version": 1, "event_id": "x"}', 4),
        ]
    )
    store.close()
    assert batch.calls == []  # the one good record took the columnar path
    assert batch.call_table is not None
    assert batch.call_table.column("price_status").to_pylist() == ["priced"]
    assert batch.call_table.column("origin_partition").to_pylist() == [0]
    reasons = {q.offset: q.reason for q in batch.quarantined}
    stages = {q.offset: q.stage for q in batch.quarantined}
    assert stages == {1: "pricing", 2: "pricing", 3: "decode", 4: "decode"}
    assert reasons[1].startswith("usage invariant: token classes")
    assert reasons[2] == "usage invariant: cache read 50 + cache write 0 exceed prompt_tokens 10"
    assert "json" in reasons[3].lower()
    assert reasons[4].endswith("Field required")
