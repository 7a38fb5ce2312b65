"""The loader's quality gate and conservation report on a real DuckDB file: every consumed
record is loaded, quarantined with its reason, or counted as a duplicate; nothing vanishes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from aiokafka.structs import ConsumerRecord

from ingest.loader import WarehouseLoader
from ingest.pricing import Pricer
from ingest.quality import CallChecks
from ingest.topics import USAGE_EVENTS, USAGE_IMPORTS
from ingest.usage_event import TokenCounts, UsageEvent, new_event_id
from tests.support import consumer_record
from warehouse.store import WarehouseStore

HOUR_MS = 1_795_000_000_000 // 3_600_000 * 3_600_000  # an hour boundary in Nov 2026
NOW = datetime.now(UTC)


def record(topic: str, partition: int, offset: int, value: bytes, at_ms: int) -> ConsumerRecord:
    return consumer_record(topic, partition, offset, value, at_ms)


def wire(**changes: object) -> bytes:
    event = UsageEvent(
        event_id=new_event_id(),
        event_time=NOW - timedelta(hours=1),
        tenant="acme",
        feature="search",
        endpoint="chat.completions",
        requested_model="gpt-4o-mini",
        served_model="gpt-4o-mini",
        provider="openai",
        provider_model="gpt-4o-mini",
        tokens=TokenCounts(input_uncached=1000, cache_read=3000, output=200),
    )
    return event.model_copy(update=changes).to_wire()


@pytest.fixture
def loader(tmp_path: Path) -> WarehouseLoader:
    store = WarehouseStore(tmp_path / "warehouse.duckdb")
    yield WarehouseLoader("127.0.0.1:1", store, Pricer(), CallChecks(["acme", "globex"]))
    store.close()


def test_bad_rows_are_quarantined_with_the_failed_check_and_good_rows_load(
    loader: WarehouseLoader,
) -> None:
    negative = wire().replace(b'"input_uncached":1000', b'"input_uncached":-5')
    bad = {
        1: b"{not json",
        2: b'{"schema_version": 1, "event_id": "e-2"}',
        3: negative,
        4: wire(event_time=datetime(2019, 6, 1, tzinfo=UTC)),
        5: wire(event_time=NOW + timedelta(hours=2)),
        6: wire(tenant="umbrella"),
    }
    records = [record(USAGE_EVENTS, 0, 0, wire(), HOUR_MS)]
    records += [record(USAGE_EVENTS, 0, offset, value, HOUR_MS) for offset, value in bad.items()]
    result, quarantined = loader.load_records(records)

    assert result.calls_loaded == 1
    reasons = {q.offset: (q.stage, q.reason) for q in quarantined}
    assert reasons[1][0] == "decode" and "json" in reasons[1][1].lower()
    assert reasons[2] == ("decode", "event_time: Field required")
    assert reasons[3] == (
        "decode",
        "tokens.input_uncached: Input should be greater than or equal to 0",
    )
    assert reasons[4][0] == "expectations"
    assert "expect_column_values_to_be_between failed on event_time" in reasons[4][1]
    assert "before 2020-01-01" in reasons[4][1]
    assert "min in the future" in reasons[5][1]
    assert reasons[6] == (
        "expectations",
        "expectation expect_column_values_to_be_in_set failed on tenant: tenant is not "
        "configured in tenants.yaml (value 'umbrella')",
    )
    with loader._store.cursor() as cur:
        stored = dict(cur.execute("SELECT source_offset, reason FROM quarantine").fetchall())
    assert stored == {offset: reason for offset, (_, reason) in reasons.items()}


def test_conservation_holds_per_partition_and_hour_across_redelivery(
    loader: WarehouseLoader,
) -> None:
    duplicate = wire()
    first = [
        record(USAGE_EVENTS, 0, 0, wire(), HOUR_MS + 5),
        record(USAGE_EVENTS, 0, 1, duplicate, HOUR_MS + 6),
        record(USAGE_EVENTS, 1, 0, b"garbage", HOUR_MS + 7),
        record(USAGE_EVENTS, 1, 1, wire(tenant="globex"), HOUR_MS + 3_600_000),
        record(USAGE_IMPORTS, 0, 0, duplicate, HOUR_MS + 8),  # the same event imported again
    ]
    loader.load_records(first)
    loader.load_records(first)  # a crash before the offset commit redelivers the batch

    with loader._store.cursor() as cur:
        rows = cur.execute(
            """SELECT topic, partition, epoch_ms(hour), consumed, loaded, quarantined, duplicates
               FROM conservation ORDER BY ALL"""
        ).fetchall()
        calls = cur.execute("SELECT count(*) FROM calls").fetchone()
    hour = HOUR_MS
    assert rows == [
        (USAGE_IMPORTS, 0, hour, 2, 0, 0, 2),
        (USAGE_EVENTS, 0, hour, 4, 2, 0, 2),
        (USAGE_EVENTS, 1, hour, 2, 0, 1, 1),
        (USAGE_EVENTS, 1, hour + 3_600_000, 2, 1, 0, 1),
    ]
    for _, _, _, consumed, loaded, quarantined, duplicates in rows:
        assert consumed == loaded + quarantined + duplicates
    assert calls == (3,)


def test_snapshots_are_parquet_files_with_the_same_rows(
    loader: WarehouseLoader, tmp_path: Path
) -> None:
    loader.load_records([record(USAGE_EVENTS, 0, i, wire(), HOUR_MS) for i in range(5)])
    loader.load_records([record(USAGE_EVENTS, 0, 9, b"bad", HOUR_MS)])
    folder = loader._store.snapshot(tmp_path / "snapshots")
    reader = duckdb.connect()
    calls = reader.execute(
        f"SELECT count(*), sum(effective_cost_usd) FROM '{folder / 'calls.parquet'}'"
    ).fetchone()
    with loader._store.cursor() as cur:
        live = cur.execute("SELECT count(*), sum(effective_cost_usd) FROM call_costs").fetchone()
    assert calls == live and calls[0] == 5
    assert reader.execute(f"SELECT count(*) FROM '{folder / 'quarantine.parquet'}'").fetchone() == (
        1,
    )
    assert not [p for p in (tmp_path / "snapshots").iterdir() if p.name.startswith(".")]
