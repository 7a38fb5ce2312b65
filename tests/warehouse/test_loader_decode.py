"""What the loader does with each record it consumes, before anything is written."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord

from ingest.loader import WarehouseLoader
from ingest.price_book import ClassRates, PriceBook, PriceVersion
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


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param(
            {"tokens": TokenCounts(input_uncached=10**19)},
            "input_uncached tokens 10000000000000000000 are out of the warehouse's range",
            id="tokens-beyond-64-bit",
        ),
        pytest.param({"latency_ms": 2**31}, "latency_ms 2147483648 is out", id="latency"),
        pytest.param({"attempt": 2**31}, "attempt 2147483648 is out", id="attempt"),
        pytest.param({"http_status": -(2**31) - 1}, "http_status -2147483649 is out", id="status"),
        pytest.param(
            {"tokens": TokenCounts(input_uncached=10**18), "provider_model": "price-bomb"},
            "cost_usd 1000000000000000000000 is out of the warehouse's range (under 10^20)",
            id="cost-beyond-decimal-38-18",
        ),
    ],
)
def test_a_value_the_warehouse_cannot_hold_quarantines_its_record_not_the_batch(
    tmp_path: Path, changes: dict[str, object], reason: str
) -> None:
    """Such a record would fail the batch's write, again after every restart."""
    bomb = PriceVersion(
        provider="openai",
        model="price-bomb",
        effective_from="2026-01-01",
        source="test",
        per_million=ClassRates(input=Decimal(10**9), output=Decimal(1)),
    )
    store = WarehouseStore(tmp_path / "w.duckdb")
    loader = WarehouseLoader("127.0.0.1:1", store, Pricer(PriceBook([bomb])))
    fine = event(tokens=TokenCounts(input_uncached=10**17), raw_usage=None)  # $15 billion
    out = event(raw_usage=None, **changes)
    result, quarantined = loader.load_records([record(fine.to_wire(), 0), record(out.to_wire(), 1)])
    store.close()
    assert result.calls_loaded == 1, quarantined
    assert [(q.offset, q.stage) for q in quarantined] == [(1, "decode")]
    assert reason in quarantined[0].reason
