"""The DuckDB store: set-based, idempotent loads and read-only queries on cursors.

One process owns the file (DuckDB takes an exclusive lock); a second writer gets WarehouseLocked
naming the holder. Loads are `INSERT OR IGNORE ... BY NAME` from a DataFrame, so a redelivered
event (same event_id) is skipped and counted as a duplicate.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from ingest.alert_delivery import AlertDelivery
from ingest.alert_event import AlertEvent
from ingest.price_book import PriceVersion
from ingest.pricing import Pricer
from ingest.usage_event import TokenCounts, UsageEvent
from tokenops.errors import TokenopsError


class WarehouseError(TokenopsError):
    pass


class WarehouseLocked(WarehouseError):
    pass


SCHEMA = Path(__file__).with_name("schema.sql")
TOKEN_COLUMNS = {name: f"{name}_tokens" for name in TokenCounts.model_fields}


@dataclass(frozen=True)
class LoadResult:
    inserted: int
    duplicates: int


@dataclass(frozen=True)
class Quarantined:
    topic: str
    partition: int
    offset: int
    reason: str
    payload: str | None


def _money(value: Any) -> str | None:
    return None if value is None else str(value)


def money_json(amounts: dict[str, Decimal] | None) -> str | None:
    if amounts is None:
        return None
    return json.dumps({name: str(value) for name, value in amounts.items()})


def call_row(
    event: UsageEvent, loaded_at: datetime, cache_savings_usd: Decimal | None = None
) -> dict[str, Any]:
    row = event.model_dump(exclude={"tokens"})
    for name, column in TOKEN_COLUMNS.items():
        row[column] = getattr(event.tokens, name)
    row["tags"] = list(event.tags)
    row["raw_usage"] = json.dumps(event.raw_usage) if event.raw_usage is not None else None
    for money in ("cost_usd", "cost_billed", "fx_rate"):
        row[money] = _money(row[money])
    row["cost_by_class"] = money_json(event.cost_by_class)
    row["loaded_at"] = loaded_at
    row["cache_savings_usd"] = _money(cache_savings_usd)
    return row


def alert_row(alert: AlertEvent, loaded_at: datetime) -> dict[str, Any]:
    row = alert.model_dump(exclude={"schema_version"})
    row["scope"] = json.dumps(alert.scope)
    row["explanation"] = json.dumps(alert.explanation) if alert.explanation is not None else None
    for money in ("threshold", "limit_usd", "spend_usd"):
        row[money] = _money(row[money])
    row["loaded_at"] = loaded_at
    return row


def delivery_row(delivery: AlertDelivery, loaded_at: datetime) -> dict[str, Any]:
    row = delivery.model_dump(exclude={"schema_version"})
    row["loaded_at"] = loaded_at
    return row


class WarehouseStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            raise WarehouseLocked(
                f"the warehouse {path} is open for writing by another process ({exc}); "
                "tokenops allows one writer: query it through that process's API"
            ) from exc
        self._con.execute(SCHEMA.read_text())
        self._write_lock = threading.Lock()
        self.path = path

    def close(self) -> None:
        self._con.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for one reader thread (DuckDB cursors are not shared between threads)."""
        return self._con.cursor()

    @staticmethod
    def _insert(cur: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        cur.register("batch_frame", pd.DataFrame.from_records(rows))
        try:
            result = cur.execute(
                f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM batch_frame"
            ).fetchone()
        finally:
            cur.unregister("batch_frame")
        return int(result[0]) if result else 0

    def load(
        self,
        calls: list[UsageEvent],
        alerts: list[AlertEvent],
        quarantined: list[Quarantined],
        deliveries: list[AlertDelivery] | None = None,
        cache_savings: dict[str, Decimal] | None = None,
    ) -> LoadResult:
        """Write one micro-batch in one transaction; safe to repeat (idempotent by id)."""
        now = datetime.now(UTC)
        unique_calls = {event.event_id: event for event in calls}
        unique_alerts = {alert.alert_id: alert for alert in alerts}
        unique_deliveries = {d.delivery_id: d for d in deliveries or ()}
        savings = cache_savings or {}
        with self._write_lock, self._con.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                inserted = self._insert(
                    cur, "calls", [call_row(e, now, savings.get(e.event_id)) for e in unique_calls.values()]
                )
                self._insert(cur, "alerts", [alert_row(a, now) for a in unique_alerts.values()])
                self._insert(
                    cur,
                    "alert_deliveries",
                    [delivery_row(d, now) for d in unique_deliveries.values()],
                )
                self._insert(
                    cur,
                    "quarantine",
                    [
                        {
                            "source_topic": q.topic,
                            "source_partition": q.partition,
                            "source_offset": q.offset,
                            "reason": q.reason,
                            "payload": q.payload,
                            "quarantined_at": now,
                        }
                        for q in quarantined
                    ],
                )
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
        return LoadResult(inserted=inserted, duplicates=len(calls) - inserted)

    def applied_price_versions(self) -> set[str]:
        with self._con.cursor() as cur:
            return {
                r[0] for r in cur.execute("SELECT price_version_id FROM price_versions").fetchall()
            }

    def apply_price_version(self, version: PriceVersion, pricer: Pricer) -> int:
        """Record `version` and the corrections it causes, in one transaction; returns how many
        corrections were written (0 when the version was already applied)."""
        from warehouse.corrections import corrections_for, version_row

        now = datetime.now(UTC)
        with self._write_lock, self._con.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                known = cur.execute(
                    "SELECT 1 FROM price_versions WHERE price_version_id = ?", [version.id]
                ).fetchone()
                if known:
                    cur.execute("ROLLBACK")
                    return 0
                rows = corrections_for(cur, pricer, version, now)
                written = self._insert(cur, "corrections", rows)
                self._insert(cur, "price_versions", [version_row(version, written, now)])
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
        return written
