"""The daily rollup answers exactly what a scan of every call answers, for any time range,
after loads, duplicate loads and corrections."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from ingest.price_book import ClassRates, PriceBook, PriceVersion
from ingest.pricing import Pricer
from ingest.usage_event import TokenCounts, UsageEvent, new_event_id
from warehouse import queries, rollup
from warehouse import store as store_module
from warehouse.store import WarehouseStore

START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)


def calls(count: int) -> list[UsageEvent]:
    rng = random.Random(3)
    models = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("alibaba", "qwen-turbo")]
    events = []
    for _ in range(count):
        provider, model = rng.choice(models)
        events.append(
            UsageEvent(
                event_id=new_event_id(),
                event_time=START + timedelta(seconds=rng.randrange(4 * 86_400)),
                tenant=rng.choice(["acme", "globex"]),
                feature=rng.choice(["search", "chat", None]),
                prompt_version=rng.choice(["v1", "v2", None]),
                endpoint="chat.completions",
                requested_model=model,
                served_model=model,
                provider=provider,
                provider_model=model,
                outcome=rng.choice(["ok", "ok", "ok", "upstream_error"]),
                fallback_reason=rng.choice([None, None, "http_503"]),
                latency_ms=rng.randrange(10, 2000),
                tokens=TokenCounts(
                    input_uncached=rng.randrange(1, 5000),
                    cache_read=rng.choice([0, 1024]),
                    output=rng.randrange(0, 800),
                ),
            )
        )
    return events


def scanned(store: WarehouseStore, start: datetime | None, end: datetime | None) -> dict:
    """The same question answered from every call (call_costs), the slow way."""
    with store.cursor() as cur:
        rows = cur.execute(
            """SELECT tenant, feature, count(*), sum(effective_cost_usd),
                      count(*) FILTER (WHERE effective_price_status = 'unpriced'),
                      count(*) FILTER (WHERE outcome <> 'ok'), sum(output_tokens)
               FROM call_costs
               WHERE event_time >= coalesce(?, '-infinity'::TIMESTAMPTZ)
                 AND event_time < coalesce(?, 'infinity'::TIMESTAMPTZ)
               GROUP BY ALL""",
            [start, end],
        ).fetchall()
    return {
        (t, f): (n, queries.money(c), unpriced, failed, out)
        for t, f, n, c, unpriced, failed, out in rows
    }


def from_rollup(store: WarehouseStore, start: datetime | None, end: datetime | None) -> dict:
    with store.cursor() as cur:
        rows = queries.cost_rows(cur, ["tenant", "feature"], start, end)
    return {
        (r["tenant"], r["feature"]): (
            r["requests"],
            r["cost_usd"],
            r["unpriced_requests"],
            r["failed_requests"],
            r["output_tokens"],
        )
        for r in rows
    }


RANGES = [
    (None, None),
    (START + timedelta(days=1), START + timedelta(days=3)),  # whole days
    (START + timedelta(hours=7, minutes=13), START + timedelta(days=2, hours=5)),  # ragged
    (START + timedelta(hours=30), START + timedelta(hours=31)),  # inside one day
    (START + timedelta(days=2, hours=12), None),
]


@pytest.mark.parametrize("start,end", RANGES)
def test_the_rollup_equals_a_scan_of_every_call(tmp_path: Path, start, end) -> None:
    store = WarehouseStore(tmp_path / "warehouse.duckdb")
    pricer = Pricer(PriceBook())
    events = [pricer.price_event(e) for e in calls(600)]
    store.load(events[:400], [], [])
    store.load(events[300:], [], [])  # 100 duplicates
    cut = PriceVersion(
        provider="openai",
        model="gpt-4o",
        effective_from=START + timedelta(days=1, hours=6),
        source="test cut",
        per_million=ClassRates(input=Decimal("1.1"), output=Decimal("4.4")),
    )
    pricer.book.add(cut)
    assert store.apply_price_version(cut, pricer) > 0
    qwen = PriceVersion(
        provider="alibaba",
        model="qwen-turbo",
        effective_from=START,
        source="test list price",
        per_million=ClassRates(input=Decimal("0.05"), output=Decimal("0.2")),
    )
    pricer.book.add(qwen)
    assert store.apply_price_version(qwen, pricer) > 0  # prices calls that were unpriced

    expected = scanned(store, start, end)
    assert from_rollup(store, start, end) == expected
    assert sum(v[0] for v in expected.values()) > 0

    with store.cursor() as cur:
        kept = cur.execute("SELECT * FROM daily_costs ORDER BY ALL").fetchall()
    store.rebuild_rollup()
    with store.cursor() as cur:
        assert cur.execute("SELECT * FROM daily_costs ORDER BY ALL").fetchall() == kept
    store.close()


def rollup_rows(store: WarehouseStore) -> tuple[int, int]:
    """(rows, distinct keys) of the rollup."""
    with store.cursor() as cur:
        found = cur.execute(
            f"SELECT count(*), count(DISTINCT ({', '.join(rollup.KEY)})) FROM daily_costs"
        ).fetchone()
    assert found is not None
    return found[0], found[1]


def test_partial_sums_pile_up_and_merge_without_changing_any_answer(tmp_path: Path) -> None:
    store = WarehouseStore(tmp_path / "warehouse.duckdb")
    pricer = Pricer(PriceBook())
    events = [pricer.price_event(e) for e in calls(600)]
    for i in range(0, 600, 50):  # twelve small batches, as live traffic loads them
        store.load(events[i : i + 50], [], [])
    rows, keys = rollup_rows(store)
    assert rows > keys  # the same key got rows from several batches
    before = {r: from_rollup(store, *r) for r in RANGES}
    assert store.compact_rollup() == rows - keys
    assert rollup_rows(store) == (keys, keys)
    assert {r: from_rollup(store, *r) for r in RANGES} == before
    assert before[(None, None)] == scanned(store, None, None)
    store.close()


def test_the_store_merges_the_days_it_touched_once_enough_rows_piled_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "ROLLUP_SLACK", 40)
    store = WarehouseStore(tmp_path / "warehouse.duckdb")
    pricer = Pricer(PriceBook())
    events = [pricer.price_event(e) for e in calls(400)]
    merged_at = []
    for i in range(0, 400, 20):
        store.load(events[i : i + 20], [], [])
        rows, keys = rollup_rows(store)
        if rows == keys:
            merged_at.append(i)
    assert len(merged_at) >= 3  # merged again and again, not only once
    assert from_rollup(store, None, None) == scanned(store, None, None)
    store.close()


def test_reopening_merges_what_a_stop_left_unmerged(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    store = WarehouseStore(path)
    pricer = Pricer(PriceBook())
    events = [pricer.price_event(e) for e in calls(300)]
    for i in range(0, 300, 30):
        store.load(events[i : i + 30], [], [])
    rows, keys = rollup_rows(store)
    assert rows > keys
    store.close()
    store = WarehouseStore(path)
    assert rollup_rows(store) == (keys, keys)
    assert from_rollup(store, None, None) == scanned(store, None, None)
    store.close()
