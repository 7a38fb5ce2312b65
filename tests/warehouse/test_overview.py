"""The dashboard's headline on a real DuckDB file: today, month to date and the month's pace."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.warehouse.test_economics import call
from warehouse.overview import overview
from warehouse.store import WarehouseStore

NOW = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)  # 10.5 of November's 30 days have passed


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WarehouseStore]:
    store = WarehouseStore(tmp_path / "warehouse.duckdb")
    at = datetime(2026, 11, 3, 9, tzinfo=UTC)
    store.load(
        [
            call("n1", at, "acme", "search", "v1", "openai", "gpt-4o-mini", "ok", (1, 1), "1.5", 9),
            call("n2", NOW, "acme", "chat", "v1", "openai", "gpt-4o", "ok", (1, 1), "0.25", 9),
            call(
                "n3",
                NOW,
                "globex",
                "sum",
                "g1",
                "deepseek",
                "deepseek-chat",
                "ok",
                (1, 1),
                "0.35",
                9,
            ),
            call(
                "o1",
                datetime(2026, 10, 30, tzinfo=UTC),
                "acme",
                "search",
                "v1",
                "openai",
                "gpt-4o-mini",
                "ok",
                (1, 1),
                "9",
                9,
            ),
        ],
        [],
        [],
    )
    yield store
    store.close()


def test_today_month_to_date_and_the_pace_to_month_end(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        head = overview(cur, "2026-11", NOW)
    assert head["today"] == {"cost_usd": "0.6", "requests": 2}
    assert head["month_to_date"] == {"cost_usd": "2.1", "requests": 3}
    # 2.10 spent in 10.5 days: 2.10 x 30 / 10.5 = 6.00 by November 30th
    assert Decimal(head["forecast_month_usd"]) == Decimal("6")
    assert not head["month_complete"]


def test_filters_and_scope_narrow_every_figure(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        acme = overview(cur, "2026-11", NOW, tenant="acme")
        model = overview(cur, "2026-11", NOW, model="deepseek-chat")
        scoped = overview(cur, "2026-11", NOW, tenants=frozenset({"globex"}))
    assert acme["month_to_date"] == {"cost_usd": "1.75", "requests": 2}
    assert model["month_to_date"] == scoped["month_to_date"] == {"cost_usd": "0.35", "requests": 1}


def test_a_past_month_has_its_total_and_no_today(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        october = overview(cur, "2026-10", NOW)
    assert october["today"] is None and october["month_complete"]
    assert october["month_to_date"]["cost_usd"] == october["forecast_month_usd"] == "9"
    with store.cursor() as cur, pytest.raises(ValueError, match="not a month"):
        overview(cur, "2026-Q4", NOW)
