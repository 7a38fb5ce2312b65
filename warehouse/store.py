"""The DuckDB store: set-based, idempotent loads and read-only queries on cursors.

One process owns the file (DuckDB takes an exclusive lock); a second writer gets WarehouseLocked
naming the holder. Loads are set-based `INSERT ... BY NAME` from Arrow tables or DataFrames of
only the rows whose key the table does not hold yet, so a redelivered event (same event_id) is
skipped and counted as a duplicate. The two big tables, `calls` and the daily rollup, carry no
DuckDB key constraint: the store is their only writer and keeps `event_id` unique itself, and
appends partial sums to the rollup that it merges now and then (see `compact_rollup`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ingest.alert_delivery import AlertDelivery
from ingest.alert_event import AlertEvent
from ingest.price_book import PriceVersion
from ingest.pricing import Pricer
from ingest.usage_event import TokenCounts, UsageEvent
from tokenops.errors import TokenopsError
from tokenops.processes import pid_alive
from warehouse import rollup


class WarehouseError(TokenopsError):
    pass


class WarehouseLocked(WarehouseError):
    pass


class WarehouseOutdated(WarehouseError):
    """The file was written by an earlier tokenops in a form this one cannot carry over."""


SCHEMA = Path(__file__).with_name("schema.sql")
ECONOMICS = Path(__file__).with_name("economics.sql")
TOKEN_COLUMNS = {name: f"{name}_tokens" for name in TokenCounts.model_fields}
COST_CLASSES = (*TOKEN_COLUMNS, "request")
COST_BY_CLASS = "STRUCT(" + ", ".join(f"{name} DECIMAL(38, 18)" for name in COST_CLASSES) + ")"
"""How `calls` and `corrections` hold a cost per token class (`request`: a per-request fee), in
USD, NULL for a class not charged. Earlier files held it as JSON text; opening one converts it."""
_COST_BY_CLASS_JSON = "{" + ", ".join(f'"{c}": "DECIMAL(38, 18)"' for c in COST_CLASSES) + "}"
COSTED_TABLES = ("calls", "corrections")


def cost_by_class_from_json(column: str) -> str:
    """SQL for the COST_BY_CLASS value of the JSON text in `column` (as `money_json` writes)."""
    return f"json_transform(CAST({column} AS VARCHAR), '{_COST_BY_CLASS_JSON}')"


KEYLESS = ("calls", "daily_costs")
"""Tables that files written by earlier versions keyed with a DuckDB PRIMARY KEY; opening such a
file moves their rows into the keyless tables once."""
ROLLUP_SLACK = 200_000
"""Rollup rows appended since the last merge that make the store merge the days they touched."""
CHECKPOINT_THRESHOLD = "512MiB"
"""How much write-ahead log makes DuckDB checkpoint at a commit. A large micro-batch's calls go
straight to the file, but its partial rollup rows and their merge are logged, which is more than
DuckDB's default (16 MiB) for a backlog's batch: every such commit paid for a checkpoint, about
5 µs of a row's ~20, growing with the file. Checkpointing every 512 MiB
costs about 1.7 µs per row in all. The price is on a crash: a restart replays up to that much
log first (a 200 MB log took 5.6 s on the 2-core development machine). A clean close
checkpoints."""


@dataclass(frozen=True)
class LoadResult:
    inserted: int
    duplicates: int


@dataclass(frozen=True)
class Origin:
    """Where a record came from: its topic, partition and offset, and the hour (of its Kafka
    timestamp) it is counted in by the conservation report."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    @property
    def hour(self) -> datetime:
        at = datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)
        return at.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Quarantined:
    topic: str
    partition: int
    offset: int
    reason: str
    payload: str | None
    stage: str = "decode"
    """decode (not a valid event), pricing (usage contradicts itself) or expectations."""
    timestamp_ms: int | None = None

    @property
    def payload_sha256(self) -> str:
        return hashlib.sha256((self.payload or "").encode()).hexdigest()

    @property
    def origin(self) -> Origin | None:
        if self.timestamp_ms is None:
            return None
        return Origin(self.topic, self.partition, self.offset, self.timestamp_ms)


@dataclass
class MicroBatch:
    """Everything one poll of the topics turned into, each item with the record it came from.
    Items without an origin (direct loads) are stored but not counted in the conservation
    report."""

    calls: list[tuple[UsageEvent, Decimal | None, Origin | None]] = field(default_factory=list)
    alerts: list[tuple[AlertEvent, Origin | None]] = field(default_factory=list)
    deliveries: list[tuple[AlertDelivery, Origin | None]] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    applied_elsewhere: list[tuple[Origin, bool]] = field(default_factory=list)
    """Records loaded by another path (price versions): (origin, new) — new ones count as
    loaded, repeats as duplicates."""
    call_table: pa.Table | None = None
    """Calls decoded and priced as columns (ingest.usage_batch): the columns of table `calls`
    but loaded_at, plus `position` (order in the batch) and the origin columns
    `origin_topic`, `origin_partition` and `origin_hour`."""


@dataclass
class Tally:
    consumed: int = 0
    loaded: int = 0
    quarantined: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class BatchResult:
    calls_loaded: int
    calls_duplicates: int
    alerts_loaded: int
    deliveries_loaded: int
    quarantined: int
    tallies: dict[tuple[str, int, datetime], Tally]


def _money(value: Any) -> str | None:
    return None if value is None else str(value)


def money_json(amounts: dict[str, Decimal] | None) -> str | None:
    if amounts is None:
        return None
    return json.dumps({name: _fixed(value) for name, value in amounts.items()})


def _fixed(amount: Decimal) -> str:
    """Fixed-point, no trailing zeros ("0.00000015", never "1.5E-7"), as ingest.usage_batch."""
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


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


def quarantine_row(q: Quarantined, quarantined_at: datetime) -> dict[str, Any]:
    return {
        "source_topic": q.topic,
        "source_partition": q.partition,
        "source_offset": q.offset,
        "payload_sha256": q.payload_sha256,
        "stage": q.stage,
        "reason": q.reason,
        "payload": q.payload,
        "quarantined_at": quarantined_at,
    }


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


def _per_origin(table: pa.Table) -> dict[tuple[str, int, datetime], int]:
    """Rows of a staged call table per (topic, partition, hour) they came from."""
    columns = ["origin_topic", "origin_partition", "origin_hour"]
    counts = table.select(columns).group_by(columns).aggregate([([], "count_all")])
    return {
        (row["origin_topic"], row["origin_partition"], row["origin_hour"]): row["count_all"]
        for row in counts.to_pylist()
    }


def _first_of_each_id(table: pa.Table) -> pa.Table:
    """`table` without the rows that repeat an event id of an earlier row in batch order
    (`position`); the check for a repeat is one pass over the ids, the sort only when one is."""
    ids = table.column("event_id")
    if pc.count_distinct(ids).as_py() == table.num_rows:
        return table
    table = table.take(pc.sort_indices(table.column("position")))
    repeated = table.column("event_id").to_pandas().duplicated().to_numpy()
    return table.filter(pa.array(~repeated))


def _present_ids(cur: duckdb.DuckDBPyConnection, offered: str) -> pa.Array:
    """The event ids of the registered relation `offered` that `calls` already holds. Time-ordered
    ids (UUIDv7, as the relay writes them) let DuckDB skip every row group whose id range misses
    the batch's: the batch's lowest and highest id bound the scan as constants, which DuckDB
    checks against each row group's min/max before reading it (a semi join alone left the id
    column read more and more as the table grew: 0.2 µs per offered row at 1 million calls,
    1.3 µs at 10 million)."""
    [(low, high)] = cur.execute(f"SELECT min(event_id), max(event_id) FROM {offered}").fetchall()
    if low is None:
        return pa.array([], pa.string())
    return (
        cur.sql(
            f"""SELECT event_id FROM calls
                WHERE event_id BETWEEN $low AND $high
                  AND event_id IN (SELECT event_id FROM {offered})""",
            params={"low": low, "high": high},
        )
        .to_arrow_table()
        .column("event_id")
        .combine_chunks()
    )


def owner_path(path: Path) -> Path:
    """Beside the DuckDB file: who holds it open for writing (pid, role, since)."""
    return path.with_name(path.name + ".owner")


def _holder(path: Path, detail: str) -> str:
    try:
        owner = json.loads(owner_path(path).read_text())
        return (
            f"pid {owner['pid']} ({owner['role']}, since {owner['since']})"
            if pid_alive(int(owner["pid"]))
            else f"another process ({detail})"
        )
    except (OSError, ValueError, KeyError):
        return f"another process ({detail})"


class WarehouseStore:
    """The DuckDB file, opened for writing by exactly one process (`role` names it to others)."""

    def __init__(self, path: Path, role: str = "tokenops") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            raise WarehouseLocked(
                f"the warehouse {path} is open for writing by {_holder(path, str(exc))}; "
                "tokenops allows one writer: query it through that process's API, or stop it "
                "first"
            ) from None
        self._con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        self._write_lock = threading.Lock()
        self._rollup_appended = 0
        self._rollup_days: set[date] = set()
        self.path = path
        try:
            self._create_schema()
        except WarehouseError:
            self._con.close()
            raise
        self._fill_rollup()
        self.compact_rollup(None)
        owner_path(path).write_text(
            json.dumps({"pid": os.getpid(), "role": role, "since": datetime.now(UTC).isoformat()})
        )

    def _create_schema(self) -> None:
        """Create what is missing; a file whose `calls` or rollup still has a PRIMARY KEY has
        its rows moved into the keyless table (one transaction)."""
        con = self._con
        keyed = [
            r[0]
            for r in con.execute(
                """SELECT table_name FROM duckdb_constraints()
                   WHERE constraint_type = 'PRIMARY KEY' AND schema_name = 'main'
                     AND list_contains(CAST($tables AS VARCHAR[]), table_name)""",
                {"tables": list(KEYLESS)},
            ).fetchall()
        ]
        con.execute("BEGIN TRANSACTION")
        try:
            for table in keyed:
                con.execute(f"ALTER TABLE {table} RENAME TO {table}_keyed")
            con.execute(SCHEMA.read_text())
            con.execute(ECONOMICS.read_text())
            for table in keyed:
                self._carry_over(table)
            self._structure_costs_by_class()
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise

    def _structure_costs_by_class(self) -> None:
        """Convert a `cost_by_class` still held as JSON text (files of earlier versions)."""
        for table in COSTED_TABLES:
            [(kind,)] = self._con.execute(
                """SELECT data_type FROM information_schema.columns
                   WHERE table_schema = 'main' AND table_name = $table
                     AND column_name = 'cost_by_class'""",
                {"table": table},
            ).fetchall()
            if kind == "JSON":
                self._con.execute(
                    f"ALTER TABLE {table} ALTER cost_by_class TYPE {COST_BY_CLASS} "
                    f"USING {cost_by_class_from_json('cost_by_class')}"
                )

    def _carry_over(self, table: str) -> None:
        """Move the rows of `{table}_keyed` into `table`; an error that names the file when
        its columns are not ones this version knows (the file is left as it was)."""
        con = self._con

        def columns(name: str) -> list[str]:
            return [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]

        unknown = sorted(set(columns(f"{table}_keyed")) - set(columns(table)))
        try:
            if unknown:
                raise WarehouseError(f"columns this version does not know: {', '.join(unknown)}")
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {table}_keyed")
        except (WarehouseError, duckdb.Error) as exc:
            raise WarehouseOutdated(
                f"the warehouse {self.path} was written by an earlier tokenops whose `{table}` "
                f"table cannot be carried over ({exc}); the file is unchanged. Rebuild it from "
                "the topics: `tokenops ingest replay --replace`"
            ) from exc
        con.execute(f"DROP TABLE {table}_keyed")

    def close(self) -> None:
        self._con.close()
        try:
            if json.loads(owner_path(self.path).read_text()).get("pid") == os.getpid():
                owner_path(self.path).unlink()
        except (OSError, ValueError):
            pass

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for one reader thread (DuckDB cursors are not shared between threads)."""
        return self._con.cursor()

    @staticmethod
    def _insert(cur: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> int:
        """INSERT OR IGNORE `rows`; a `cost_by_class` column holds `money_json` text."""
        if not rows:
            return 0
        cur.register("batch_frame", pd.DataFrame.from_records(rows))
        structured = (
            f" REPLACE ({cost_by_class_from_json('cost_by_class')} AS cost_by_class)"
            if "cost_by_class" in rows[0]
            else ""
        )
        try:
            result = cur.execute(
                f"INSERT OR IGNORE INTO {table} BY NAME SELECT *{structured} FROM batch_frame"
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
        """Write records that have no Kafka origin (tests, tools) in one transaction."""
        savings = cache_savings or {}
        result = self.load_batch(
            MicroBatch(
                calls=[(e, savings.get(e.event_id), None) for e in calls],
                alerts=[(a, None) for a in alerts],
                deliveries=[(d, None) for d in deliveries or ()],
                quarantined=quarantined,
            )
        )
        return LoadResult(inserted=result.calls_loaded, duplicates=result.calls_duplicates)

    def load_batch(self, batch: MicroBatch) -> BatchResult:
        """Write one micro-batch and its conservation counts in one transaction; safe to repeat.

        Each table is idempotent by its id (event_id, alert_id, delivery_id; a quarantined
        record by topic, partition, offset and payload hash), so a redelivered batch inserts
        nothing and counts every record as a duplicate: per topic, partition and hour,
        consumed = loaded + quarantined + duplicates holds whatever was redelivered."""
        now = datetime.now(UTC)
        tallies: dict[tuple[str, int, datetime], Tally] = defaultdict(Tally)

        def count(origin: Origin | None, outcome: str) -> None:
            if origin is None:
                return
            tally = tallies[(origin.topic, origin.partition, origin.hour)]
            tally.consumed += 1
            setattr(tally, outcome, getattr(tally, outcome) + 1)

        with self._write_lock, self._con.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                table_loaded = self._insert_call_table(cur, batch.call_table, now, tallies)
                rows = {e.event_id: call_row(e, now, saved) for e, saved, _ in batch.calls}
                new_calls = self._insert_new_calls(cur, rows)
                alert_rows = {a.alert_id: alert_row(a, now) for a, _ in batch.alerts}
                new_alerts = self._insert_new(cur, "alerts", "alert_id", list(alert_rows.values()))
                delivery_rows = {d.delivery_id: delivery_row(d, now) for d, _ in batch.deliveries}
                new_deliveries = self._insert_new(
                    cur, "alert_deliveries", "delivery_id", list(delivery_rows.values())
                )
                quarantine_rows = {
                    (q.topic, q.partition, q.offset, q.payload_sha256): quarantine_row(q, now)
                    for q in batch.quarantined
                }
                new_quarantine = self._insert_new(
                    cur,
                    "quarantine",
                    "source_topic, source_partition, source_offset, payload_sha256",
                    list(quarantine_rows.values()),
                )
                calls_loaded, alerts_loaded = len(new_calls) + table_loaded, len(new_alerts)
                for event, _, origin in batch.calls:
                    fresh = event.event_id in new_calls
                    new_calls.discard(event.event_id)
                    count(origin, "loaded" if fresh else "duplicates")
                for alert, origin in batch.alerts:
                    fresh = alert.alert_id in new_alerts
                    new_alerts.discard(alert.alert_id)
                    count(origin, "loaded" if fresh else "duplicates")
                deliveries_loaded = len(new_deliveries)
                for delivery, origin in batch.deliveries:
                    fresh = delivery.delivery_id in new_deliveries
                    new_deliveries.discard(delivery.delivery_id)
                    count(origin, "loaded" if fresh else "duplicates")
                quarantined = len(new_quarantine)
                for q in batch.quarantined:
                    key = (q.topic, q.partition, q.offset, q.payload_sha256)
                    fresh = key in new_quarantine
                    new_quarantine.discard(key)
                    count(q.origin, "quarantined" if fresh else "duplicates")
                for origin, new in batch.applied_elsewhere:
                    count(origin, "loaded" if new else "duplicates")
                self._add_tallies(cur, tallies, now)
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
            self._compact_when_due(cur)
        table_rows = 0 if batch.call_table is None else batch.call_table.num_rows
        return BatchResult(
            calls_loaded=calls_loaded,
            calls_duplicates=len(batch.calls) + table_rows - calls_loaded,
            alerts_loaded=alerts_loaded,
            deliveries_loaded=deliveries_loaded,
            quarantined=quarantined,
            tallies=dict(tallies),
        )

    def _insert_call_table(
        self,
        cur: duckdb.DuckDBPyConnection,
        table: pa.Table | None,
        now: datetime,
        tallies: dict[tuple[str, int, datetime], Tally],
    ) -> int:
        """Insert the batch's columnar calls whose event id `calls` does not hold yet (of an id
        repeated within the batch, the first is the one offered); add them to the rollup and
        every row to `tallies`. Returns how many were new. Batches of a row group or more
        (122,880 rows) are written to the file as they are inserted rather than through the
        write-ahead log."""
        if table is None or not table.num_rows:
            return 0
        offered = _first_of_each_id(table)
        cur.register("offered", offered)
        try:
            present = _present_ids(cur, "offered")
            fresh = (
                offered
                if not len(present)
                else offered.filter(pc.invert(pc.is_in(offered.column("event_id"), present)))
            )
            cur.register("new_calls", fresh)
            cur.execute(
                """INSERT INTO calls BY NAME
                   SELECT * EXCLUDE (position, origin_topic, origin_partition, origin_hour),
                          $now AS loaded_at
                   FROM new_calls""",
                {"now": now},
            )
            self._append_rollup(cur, rollup.NEW_CALLS, "new_calls")
        finally:
            cur.unregister("offered")
            cur.unregister("new_calls")
        for key, count in _per_origin(table).items():
            tally = tallies[key]
            tally.consumed += count
            tally.duplicates += count
        for key, count in _per_origin(fresh).items():
            tallies[key].loaded += count
            tallies[key].duplicates -= count
        return fresh.num_rows

    def _insert_new_calls(
        self, cur: duckdb.DuckDBPyConnection, rows: dict[str, dict[str, Any]]
    ) -> set[str]:
        """Insert the call rows (by event id) that `calls` does not hold yet and add them to
        the rollup; their event ids."""
        if not rows:
            return set()
        cur.register("offered_calls", pd.DataFrame.from_records(list(rows.values())))
        try:
            present = set(_present_ids(cur, "offered_calls").to_pylist())
        finally:
            cur.unregister("offered_calls")
        fresh = [row for key, row in rows.items() if key not in present]
        if fresh:
            cur.register("new_calls", pd.DataFrame.from_records(fresh))
            try:
                cur.execute(
                    "INSERT INTO calls BY NAME SELECT * REPLACE "
                    f"({cost_by_class_from_json('cost_by_class')} AS cost_by_class) FROM new_calls"
                )
                self._append_rollup(cur, rollup.NEW_CALLS, "new_calls")
            finally:
                cur.unregister("new_calls")
        return {row["event_id"] for row in fresh}

    def _append_rollup(self, cur: duckdb.DuckDBPyConnection, sql: str, source: str) -> None:
        """Run `sql`, which appends the rollup rows of the registered `source`, and note the
        days it touched for the next merge."""
        appended = cur.execute(sql).fetchone()
        self._rollup_appended += appended[0] if appended else 0
        self._rollup_days.update(
            r[0]
            for r in cur.execute(
                f"SELECT DISTINCT CAST(event_time AT TIME ZONE 'UTC' AS DATE) FROM {source}"
            ).fetchall()
        )

    def _compact_when_due(self, cur: duckdb.DuckDBPyConnection) -> None:
        """After a commit, under the write lock: merge the rollup's touched days once enough
        partial rows piled up."""
        if self._rollup_appended >= ROLLUP_SLACK:
            self._compact(cur, sorted(self._rollup_days))

    def _compact(self, cur: duckdb.DuckDBPyConnection, days: list[date] | None) -> int:
        cur.execute("BEGIN TRANSACTION")
        try:
            removed = rollup.compact(cur, days)
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
        self._rollup_appended = 0
        self._rollup_days.clear()
        return removed

    def compact_rollup(self, days: list[date] | None = None) -> int:
        """Merge the rollup's partial sums into one row per key and day, on `days` (None: every
        day that has a key with several rows). Sums are unchanged; returns the rows removed."""
        with self._write_lock, self._con.cursor() as cur:
            return self._compact(cur, days)

    @staticmethod
    def _run_on(
        cur: duckdb.DuckDBPyConnection, name: str, rows: list[dict[str, Any]], sql: str
    ) -> None:
        cur.register(name, pd.DataFrame.from_records(rows))
        try:
            cur.execute(sql)
        finally:
            cur.unregister(name)

    @staticmethod
    def _insert_new(
        cur: duckdb.DuckDBPyConnection, table: str, key: str, rows: list[dict[str, Any]]
    ) -> set[Any]:
        """INSERT OR IGNORE `rows`; the keys of the rows that were new."""
        if not rows:
            return set()
        cur.register("batch_frame", pd.DataFrame.from_records(rows))
        try:
            inserted = cur.execute(
                f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM batch_frame RETURNING {key}"
            ).fetchall()
        finally:
            cur.unregister("batch_frame")
        return {r[0] if len(r) == 1 else tuple(r) for r in inserted}

    @staticmethod
    def _add_tallies(
        cur: duckdb.DuckDBPyConnection,
        tallies: dict[tuple[str, int, datetime], Tally],
        now: datetime,
    ) -> None:
        if not tallies:
            return
        frame = pd.DataFrame.from_records(
            [
                {
                    "topic": topic,
                    "partition": partition,
                    "hour": hour,
                    "consumed": t.consumed,
                    "loaded": t.loaded,
                    "quarantined": t.quarantined,
                    "duplicates": t.duplicates,
                    "updated_at": now,
                }
                for (topic, partition, hour), t in tallies.items()
            ]
        )
        cur.register("tally_frame", frame)
        try:
            cur.execute(
                """INSERT INTO conservation BY NAME SELECT * FROM tally_frame
                   ON CONFLICT DO UPDATE SET
                       consumed = conservation.consumed + excluded.consumed,
                       loaded = conservation.loaded + excluded.loaded,
                       quarantined = conservation.quarantined + excluded.quarantined,
                       duplicates = conservation.duplicates + excluded.duplicates,
                       updated_at = excluded.updated_at"""
            )
        finally:
            cur.unregister("tally_frame")

    def _fill_rollup(self) -> None:
        """A file written before the rollup existed gets it computed once, on open."""
        with self._con.cursor() as cur:
            empty = cur.execute("SELECT count(*) = 0 FROM daily_costs").fetchone()
            calls = cur.execute("SELECT count(*) > 0 FROM (SELECT 1 FROM calls LIMIT 1)").fetchone()
            if empty and empty[0] and calls and calls[0]:
                self.rebuild_rollup()

    def rebuild_rollup(self) -> None:
        with self._write_lock, self._con.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                rollup.rebuild(cur)
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise

    def sync_tenants(self, names: dict[str, str]) -> None:
        """Make the tenants table match the configuration; tenants no longer configured stay,
        marked `configured = false`, because their calls do."""
        now = datetime.now(UTC)
        with self._write_lock, self._con.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute("UPDATE tenants SET configured = false, synced_at = ?", [now])
                for tenant, name in names.items():
                    cur.execute(
                        """INSERT INTO tenants VALUES (?, ?, true, ?) ON CONFLICT DO UPDATE
                           SET name = excluded.name, configured = true,
                               synced_at = excluded.synced_at""",
                        [tenant, name, now],
                    )
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise

    SNAPSHOT_TABLES = (
        ("calls", "SELECT * EXCLUDE (raw_usage) FROM call_costs"),
        ("corrections", "SELECT * FROM corrections"),
        ("price_versions", "SELECT * FROM price_versions"),
        ("alerts", "SELECT * FROM alerts"),
        ("alert_deliveries", "SELECT * FROM alert_deliveries"),
        ("quarantine", "SELECT * FROM quarantine"),
        ("conservation", "SELECT * FROM conservation"),
        ("tenants", "SELECT * FROM tenants"),
        ("revenue", "SELECT * FROM revenue"),
    )

    def snapshot(self, root: Path) -> Path:
        """Parquet copies of the tables for readers outside the service (DuckDB, Spark, pandas),
        one consistent read: written to a new folder under `root`, then renamed into place, so
        a reader never sees half a snapshot. Returns the folder."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        staging = root / f".{stamp}.partial"
        staging.mkdir(parents=True)
        with self._con.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                for name, query in self.SNAPSHOT_TABLES:
                    target = str(staging / f"{name}.parquet").replace("'", "''")
                    cur.execute(f"COPY ({query}) TO '{target}' (FORMAT PARQUET)")
            finally:
                cur.execute("ROLLBACK")
        final = root / stamp
        staging.rename(final)
        return final

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
                if rows:
                    self._run_on(cur, "new_corrections", rows, rollup.CORRECTIONS)
                    rollup.compact(cur)  # rare: merge wherever the deltas landed
                self._insert(cur, "price_versions", [version_row(version, written, now)])
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
        return written
