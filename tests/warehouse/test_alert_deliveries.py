"""Alert delivery records land in the warehouse's `alert_deliveries` table, once each."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaProducer

from ingest.alert_delivery import AlertDelivery, DeliveryStatus, delivery_id
from ingest.loader import WarehouseLoader
from ingest.pricing import Pricer
from ingest.topics import ALERT_DELIVERIES
from ingest.usage_event import new_event_id
from warehouse import queries
from warehouse.store import WarehouseStore


def attempt(
    alert_id: str, number: int, status: DeliveryStatus, http_status: int | None
) -> AlertDelivery:
    return AlertDelivery(
        delivery_id=delivery_id(alert_id, "ops-slack", number),
        alert_id=alert_id,
        webhook="ops-slack",
        tenant="acme",
        attempt=number,
        status=status,
        http_status=http_status,
        error=None
        if status == "delivered"
        else f"HTTP {http_status}"
        if http_status
        else "Timeout",
        delivered_at=datetime(2026, 11, 3, 12, 0, number, tzinfo=UTC),
        latency_ms=12,
    )


def history(alert_id: str) -> list[AlertDelivery]:
    return [
        attempt(alert_id, 1, "retrying", 503),
        attempt(alert_id, 2, "retrying", None),
        attempt(alert_id, 3, "delivered", 200),
    ]


def test_table_matches_the_record_contract(tmp_path: Path) -> None:
    store = WarehouseStore(tmp_path / "w.duckdb")
    with store.cursor() as cur:
        columns = {row[0] for row in cur.execute("DESCRIBE alert_deliveries").fetchall()}
    store.close()
    assert columns == (set(AlertDelivery.model_fields) - {"schema_version"}) | {"loaded_at"}


def test_reloaded_records_are_stored_once(tmp_path: Path) -> None:
    store = WarehouseStore(tmp_path / "w.duckdb")
    records = history("a1")
    store.load([], [], [], records)
    store.load([], [], [], [*records, records[0]])
    with store.cursor() as cur:
        rows = cur.execute(
            "SELECT attempt, status, http_status, error FROM alert_deliveries ORDER BY attempt"
        ).fetchall()
        shown = queries.delivery_rows(cur, alert_id="a1")
        other = queries.delivery_rows(cur, webhook="pager")
    store.close()
    assert [(r["attempt"], r["status"]) for r in shown] == [
        (3, "delivered"),
        (2, "retrying"),
        (1, "retrying"),
    ]
    assert shown[0]["delivered_at"] == "2026-11-03T12:00:03+00:00" and other == []
    assert rows == [
        (1, "retrying", 503, "HTTP 503"),
        (2, "retrying", None, "Timeout"),
        (3, "delivered", 200, None),
    ]


def test_loader_stores_records_from_the_deliveries_topic(broker: str, tmp_path: Path) -> None:
    alert_id = new_event_id()
    producer = KafkaProducer(bootstrap_servers=broker)
    for record in history(alert_id):
        producer.send(ALERT_DELIVERIES, key=alert_id.encode(), value=record.to_wire())
    producer.send(ALERT_DELIVERIES, value=b'{"alert_id": "no attempt"}')
    producer.flush(10)
    producer.close()

    store = WarehouseStore(tmp_path / "w.duckdb")
    loader = WarehouseLoader(broker, store, Pricer())

    def stored() -> tuple[list[tuple[object, ...]], list[str]]:
        with store.cursor() as cur:
            rows = cur.execute(
                "SELECT attempt, status FROM alert_deliveries WHERE alert_id = ? ORDER BY attempt",
                [alert_id],
            ).fetchall()
            reasons = cur.execute(
                "SELECT reason FROM quarantine WHERE source_topic = ?", [ALERT_DELIVERIES]
            ).fetchall()
        return rows, [r[0] for r in reasons]

    async def load_until_stored() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(loader.run(stop))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not task.done():
            rows, reasons = stored()
            if len(rows) == 3 and reasons:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await task

    asyncio.run(load_until_stored())
    rows, reasons = stored()
    store.close()
    assert rows == [(1, "retrying"), (2, "retrying"), (3, "delivered")]
    assert reasons == ["delivery_id: Field required"]
