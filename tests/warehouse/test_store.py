"""The warehouse on real DuckDB files: contract, idempotent loads, exact sums, one writer."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from ingest.alert_event import AlertEvent
from ingest.pricing import price_event
from ingest.usage_event import TokenCounts, UsageEvent, new_event_id
from warehouse import queries, rollup
from warehouse.store import (
    ECONOMICS,
    SCHEMA,
    TOKEN_COLUMNS,
    Quarantined,
    WarehouseLocked,
    WarehouseOutdated,
    WarehouseStore,
)

NOON = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def call(tenant: str = "acme", feature: str = "search", **tokens: int) -> UsageEvent:
    event = UsageEvent(
        event_id=new_event_id(),
        event_time=NOON,
        tenant=tenant,
        feature=feature,
        prompt_version="v1",
        endpoint="chat.completions",
        requested_model="gpt-4o-mini",
        served_model="gpt-4o-mini",
        provider="openai",
        provider_model="gpt-4o-mini",
        tokens=TokenCounts(**tokens),
    )
    return price_event(event)


@pytest.fixture
def store(tmp_path: Path) -> WarehouseStore:
    store = WarehouseStore(tmp_path / "warehouse.duckdb")
    yield store
    store.close()


def test_calls_table_matches_the_event_contract(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        columns = {row[0] for row in cur.execute("DESCRIBE calls").fetchall()}
    contract = (set(UsageEvent.model_fields) - {"tokens"}) | set(TOKEN_COLUMNS.values())
    assert columns == contract | {"loaded_at", "cache_savings_usd"}


def test_reloading_the_same_events_counts_each_once(store: WarehouseStore) -> None:
    events = [call(input_uncached=1000, output=500), call(input_uncached=10, cache_read=2000)]
    first = store.load(events, [], [])
    again = store.load([*events, events[0]], [], [])
    assert (first.inserted, first.duplicates) == (2, 0)
    assert (again.inserted, again.duplicates) == (0, 3)
    with store.cursor() as cur:
        rows = queries.cost_rows(cur, ["tenant"])
    # 1000*0.15 + 500*0.6 + 10*0.15 + 2000*0.075 per million = 0.0006015
    assert rows == [
        {
            "tenant": "acme",
            "requests": 2,
            "input_tokens": 3010,
            "output_tokens": 500,
            "cache_read_tokens": 2000,
            "cost_usd": "0.0006015",
            "unpriced_requests": 0,
            "failed_requests": 0,
        }
    ]


def test_a_file_with_keyed_tables_keeps_every_row_and_its_keys_when_reopened(
    tmp_path: Path,
) -> None:
    """Files written before calls and the rollup lost their DuckDB PRIMARY KEY constraints."""
    path = tmp_path / "warehouse.duckdb"
    store = WarehouseStore(path)
    events = [call(input_uncached=100 * (i + 1), output=10) for i in range(5)]
    store.load(events, [], [])
    with store.cursor() as cur:
        totals = queries.cost_rows(cur, ["tenant"])
    store.close()
    con = duckdb.connect(str(path))  # rebuild both tables the way earlier versions keyed them
    for table, key in (
        ("calls", "event_id"),
        ("daily_costs", ", ".join(rollup.KEY)),
    ):
        con.execute(f"CREATE TABLE {table}_copy AS SELECT * FROM {table}")
        ddl = con.execute(
            "SELECT sql FROM duckdb_tables() WHERE table_name = ?", [table]
        ).fetchone()[0]
        con.execute(f"DROP TABLE {table} CASCADE")
        con.execute(ddl.rstrip(";").rstrip()[:-1] + f", PRIMARY KEY ({key}));")
        con.execute(f"INSERT INTO {table} SELECT * FROM {table}_copy")
        con.execute(f"DROP TABLE {table}_copy")
    con.execute(SCHEMA.read_text())  # the views over them, as such a file has them
    con.execute(ECONOMICS.read_text())
    keyed = """SELECT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'
               AND table_name IN ('calls', 'daily_costs', 'calls_keyed', 'daily_costs_keyed')"""
    assert sorted(con.execute(keyed).fetchall()) == [("calls",), ("daily_costs",)]
    con.close()

    store = WarehouseStore(path)
    with store.cursor() as cur:
        assert cur.execute(keyed).fetchall() == []
        assert queries.cost_rows(cur, ["tenant"]) == totals
    again = store.load([*events, call(input_uncached=7, output=1)], [], [])
    assert (again.inserted, again.duplicates) == (1, 5)
    store.close()


def test_costs_filter_by_time_and_tenant_and_keep_unpriced_visible(
    store: WarehouseStore,
) -> None:
    unpriced = price_event(
        call(tenant="globex", input_uncached=100).model_copy(
            update={"provider": "alibaba", "provider_model": "qwen-plus", "price_status": "pending"}
        )
    )
    store.load([call(input_uncached=1_000_000), unpriced], [], [])
    with store.cursor() as cur:
        globex = queries.cost_rows(cur, ["tenant", "model"], tenant="globex")
        later = queries.cost_rows(cur, ["tenant"], start=NOON + timedelta(seconds=1))
        acme = queries.cost_rows(cur, ["tenant"], start=NOON, end=NOON + timedelta(hours=1))
    assert globex[0]["unpriced_requests"] == 1 and globex[0]["cost_usd"] == "0"
    assert later == []
    assert [(r["tenant"], r["cost_usd"]) for r in acme] == [("acme", "0.15"), ("globex", "0")]


def test_unknown_dimension_is_refused(store: WarehouseStore) -> None:
    with store.cursor() as cur, pytest.raises(ValueError, match="cannot group by"):
        queries.cost_rows(cur, ["tenant; DROP TABLE calls"])


def test_alerts_and_quarantine_are_stored_idempotently(store: WarehouseStore) -> None:
    alert = AlertEvent(
        alert_id="a1",
        kind="budget",
        tenant="acme",
        scope={"tenant": "acme"},
        state="BREACH",
        period="day",
        period_start=NOON.replace(hour=0),
        threshold=Decimal("1.0"),
        limit_usd=Decimal("2.50"),
        spend_usd=Decimal("2.5000001"),
        created_at=NOON,
        message="over",
    )
    bad = Quarantined("tokenops.usage.v1", 0, 7, "tenant: Field required", "{}")
    store.load([], [alert, alert], [bad])
    store.load([], [alert], [bad])
    with store.cursor() as cur:
        alerts = queries.alert_rows(cur, tenant="acme")
        quarantined = cur.execute("SELECT reason FROM quarantine").fetchall()
    assert len(alerts) == 1 and alerts[0]["spend_usd"] == "2.5000001"
    assert quarantined == [("tenant: Field required",)]


def test_a_committed_load_survives_a_writer_that_dies_without_closing(tmp_path: Path) -> None:
    """The store checkpoints only every CHECKPOINT_THRESHOLD of log, so a commit's rows may live
    in the write-ahead log alone: a writer killed after the commit loses none of them."""
    path = tmp_path / "warehouse.duckdb"
    script = (
        "import os, sys\n"
        "from tests.warehouse.test_store import call\n"
        "from warehouse.store import WarehouseStore\n"
        f"store = WarehouseStore(__import__('pathlib').Path({str(path)!r}))\n"
        "result = store.load([call(input_uncached=1000, output=500) for _ in range(3)], [], [])\n"
        "print(result.inserted, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    writer = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, cwd=Path(__file__).parents[2]
    )
    assert writer.returncode == -9 and writer.stdout == b"3\n", writer.stderr
    assert path.with_name(path.name + ".wal").stat().st_size > 0, "nothing waited in the log"
    reopened = WarehouseStore(path)
    try:
        with reopened.cursor() as cur:
            assert cur.execute("SELECT count(*), sum(cost_usd) FROM calls").fetchall() == [
                (3, Decimal("0.00135"))
            ]
            assert cur.execute("SELECT sum(requests) FROM daily_costs").fetchall() == [(3,)]
    finally:
        reopened.close()


def test_a_second_writer_gets_an_error_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys, time; c = duckdb.connect({str(path)!r}); "
            "print('open', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        with pytest.raises(WarehouseLocked, match=f"PID {holder.pid}"):
            WarehouseStore(path)
    finally:
        holder.kill()
        holder.wait()
    assert duckdb.connect(str(path)).execute("SELECT 1").fetchone() == (1,)


def test_a_second_writer_is_told_which_tokenops_process_holds_the_file(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from warehouse.store import WarehouseStore; "
            f"s = WarehouseStore(Path({str(path)!r}), role='warehouse service on 127.0.0.1:8081'); "
            "print('open', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        with pytest.raises(WarehouseLocked) as refused:
            WarehouseStore(path)
    finally:
        holder.kill()
        holder.wait()
    assert f"pid {holder.pid} (warehouse service on 127.0.0.1:8081, since " in str(refused.value)


def test_a_file_whose_calls_cannot_be_carried_over_is_refused_by_name_and_left_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))  # calls as the first versions wrote it: other cost columns
    con.execute(
        """CREATE TABLE calls (event_id VARCHAR PRIMARY KEY, event_time TIMESTAMPTZ,
           tenant VARCHAR, currency VARCHAR, input_cost_usd DECIMAL(38, 18))"""
    )
    con.execute("INSERT INTO calls VALUES ('e1', now(), 'acme', 'USD', 0.5)")
    con.close()
    with pytest.raises(WarehouseOutdated) as refused:
        WarehouseStore(path)
    assert str(path) in str(refused.value)
    assert "currency, input_cost_usd" in str(refused.value)
    assert "tokenops ingest replay --replace" in str(refused.value)
    con = duckdb.connect(str(path))
    assert [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()] == [
        "calls"
    ]
    assert con.execute("SELECT currency FROM calls").fetchall() == [("USD",)]
    con.close()
    store = WarehouseStore(tmp_path / "other.duckdb")  # the process can still open a good file
    store.close()
