"""Adding a price version re-prices history through correction rows; originals stay intact."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from ingest.price_book import ClassRates, FxRate, PriceBook, PriceVersion
from ingest.pricing import Pricer
from ingest.usage_event import TokenCounts, UsageEvent, new_event_id
from warehouse import queries
from warehouse.store import COST_BY_CLASS, COSTED_TABLES, WarehouseStore, money_json

NOV = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
OCT = datetime(2026, 10, 3, 12, 0, tzinfo=UTC)
CNY = FxRate(currency="CNY", usd_per_unit="0.14", effective_from="2026-01-01", source="test")
QWEN_TURBO_FROM_NOVEMBER = PriceVersion(
    provider="alibaba",
    model="qwen-turbo",
    currency="CNY",
    effective_from="2026-11-01",
    source="test list price",
    per_million=ClassRates(input=Decimal("0.3"), output=Decimal("0.6")),
)


def call(
    model: str, provider: str, at: datetime, tenant: str = "acme", **tokens: int
) -> UsageEvent:
    return UsageEvent(
        event_id=new_event_id(),
        event_time=at,
        tenant=tenant,
        endpoint="chat.completions",
        requested_model=model,
        served_model=model,
        provider=provider,
        provider_model=model,
        tokens=TokenCounts(**tokens),
    )


@pytest.fixture
def store(tmp_path: Path) -> WarehouseStore:
    store = WarehouseStore(tmp_path / "warehouse.duckdb")
    yield store
    store.close()


def totals(store: WarehouseStore) -> dict[str, tuple[str, int]]:
    with store.cursor() as cur:
        rows = queries.cost_rows(cur, ["tenant", "model"])
    return {f"{r['tenant']}/{r['model']}": (r["cost_usd"], r["unpriced_requests"]) for r in rows}


def originals(store: WarehouseStore) -> list[tuple[str, str, Decimal | None]]:
    with store.cursor() as cur:
        return cur.execute(
            "SELECT provider_model, price_status, cost_usd FROM calls ORDER BY event_id"
        ).fetchall()


def test_a_new_price_prices_unpriced_history_and_a_correction_changes_totals_only(
    store: WarehouseStore,
) -> None:
    pricer = Pricer(PriceBook(fx=[CNY]))
    events = [
        call("qwen-turbo", "alibaba", NOV, input_uncached=1_000_000, output=500_000),
        call("qwen-turbo", "alibaba", OCT, input_uncached=2_000_000),
        call("gpt-4o-mini", "openai", NOV, input_uncached=1_000_000, output=1_000_000),
        call("gpt-4o-mini", "openai", NOV, tenant="globex", input_uncached=1_000_000),
    ]
    store.load([pricer.price_event(e) for e in events], [], [])
    before = originals(store)
    # gpt-4o-mini at list price: 0.15 + 0.6 = 0.75 (acme), 0.15 (globex); qwen-turbo unpriced
    assert totals(store) == {
        "acme/gpt-4o-mini": ("0.75", 0),
        "globex/gpt-4o-mini": ("0.15", 0),
        "acme/qwen-turbo": ("0", 2),
    }

    # A price for qwen-turbo from November only: the October call stays unpriced.
    # 1M * 0.3 + 0.5M * 0.6 = 0.6 CNY * 0.14 = 0.084 USD
    qwen = QWEN_TURBO_FROM_NOVEMBER
    pricer.book.add(qwen)
    assert store.apply_price_version(qwen, pricer) == 1
    assert totals(store)["acme/qwen-turbo"] == ("0.084", 1)

    # acme negotiates gpt-4o-mini, back-dated: 1M * 0.1 + 1M * 0.4 = 0.5 (was 0.75)
    contract = PriceVersion(
        provider="openai",
        model="gpt-4o-mini",
        tenant="acme",
        effective_from="2026-01-01",
        source="acme agreement",
        per_million=ClassRates(input=Decimal("0.1"), output=Decimal("0.4")),
    )
    pricer.book.add(contract)
    assert store.apply_price_version(contract, pricer) == 1
    assert totals(store)["acme/gpt-4o-mini"] == ("0.5", 0)
    assert totals(store)["globex/gpt-4o-mini"] == ("0.15", 0)

    # Applying a version twice changes nothing; the original rows were never touched.
    assert store.apply_price_version(contract, pricer) == 0
    assert originals(store) == before
    with store.cursor() as cur:
        corrections = queries.correction_rows(cur)
        applied = cur.execute("SELECT price_version_id, corrections FROM price_versions").fetchall()
    assert sorted(c["delta_usd"] for c in corrections) == ["-0.25", "0.084"]
    assert sorted(applied) == sorted([(contract.id, 1), (qwen.id, 1)])


def test_a_file_holding_costs_per_class_as_json_text_is_converted_on_open(
    tmp_path: Path,
) -> None:
    """Files of earlier versions held `cost_by_class` of calls and corrections as JSON text."""
    path = tmp_path / "warehouse.duckdb"
    pricer = Pricer(PriceBook(fx=[CNY]))
    store = WarehouseStore(path)
    store.load(
        [
            pricer.price_event(call("gpt-4o-mini", "openai", NOV, input_uncached=10, output=3)),
            pricer.price_event(call("qwen-turbo", "alibaba", NOV, input_uncached=2_000)),
        ],
        [],
        [],
    )
    qwen = QWEN_TURBO_FROM_NOVEMBER
    pricer.book.add(qwen)
    assert store.apply_price_version(qwen, pricer) == 1
    structured = "SELECT event_id, cost_by_class FROM {} ORDER BY event_id"
    with store.cursor() as cur:
        before = {t: cur.execute(structured.format(t)).fetchall() for t in COSTED_TABLES}
        kinds = cur.execute(
            """SELECT table_name, data_type FROM information_schema.columns
               WHERE column_name = 'cost_by_class' AND table_name IN ('calls', 'corrections')
               ORDER BY table_name"""
        ).fetchall()
    store.close()
    assert kinds == [(t, COST_BY_CLASS.replace(", 18", ",18")) for t in sorted(COSTED_TABLES)]
    # the calls' own charges: gpt-4o-mini's two classes, no line for the unpriced qwen call
    [(_, charged), (_, unpriced)] = sorted(before["calls"], key=lambda r: r[1] is None)
    assert {k: v for k, v in charged.items() if v is not None} == {
        "input_uncached": Decimal("0.0000015"),
        "output": Decimal("0.0000018"),
    }
    assert unpriced is None

    con = duckdb.connect(str(path))  # as an earlier version wrote it: money_json text
    for table, rows in before.items():
        con.execute(f"ALTER TABLE {table} ALTER cost_by_class TYPE JSON USING '{{}}'")
        for event_id, by_class in rows:
            text = (
                None
                if by_class is None
                else money_json({k: v for k, v in by_class.items() if v is not None})
            )
            con.execute(
                f"UPDATE {table} SET cost_by_class = ? WHERE event_id = ?", [text, event_id]
            )
    con.close()

    store = WarehouseStore(path)
    with store.cursor() as cur:
        assert {t: cur.execute(structured.format(t)).fetchall() for t in COSTED_TABLES} == before
    store.close()
