"""Unit economics on a real DuckDB file, against figures computed by hand.

The fixture: November 2026, ISO week 46 (Mon 9th to Sun 15th) and week 47 (16th to 22nd), UTC.

  call  week tenant  feature       version  provider   outcome           in    out  cost  latency
  a0    46   acme    search        v1       openai     ok              1500    300  0.45   150
  a1    47   acme    search        v1       openai     ok              1000    200  0.30   100
  a2    47   acme    search        v1       openai     ok              3000    300  0.50   200
  a3    47   acme    search        v2       openai     ok               500    100  0.20   300
  a4    47   acme    search        v2       openai     timeout          400      0  0.04 30000
  a5    47   acme    search        v2       anthropic  ok (fallback)    400    100  0.16   900
  g0    46   globex  support-chat  s1       deepseek   ok              5000   1000  2.50   400
  g1    47   globex  support-chat  s1       deepseek   ok               800    200  0.40   500
  g2    47   globex  support-chat  s1       deepseek   ok              1200    300  0.60   700
  g3    47   globex  support-chat  s1       deepseek   connection_err     0      0  0        5
  i0    46   initech batch         -        openai     ok               100     50  0.05    80
  i9    October 31st 23:59:59 UTC: initech, 1.00 (counts in October, not November)

Cache savings: a1 0.05, a2 0.10, a3 -0.02 (its cache write cost more than reads saved).
Revenue (a revenue file): acme plan 2.00 a month Oct-Dec and a November credit of -0.25;
globex plan 1.50 in November and 3.00 of usage over Oct 17th - Nov 15th (15 days in each month:
1.50 + 1.50); umbrella plan 1.00 in November (no calls); initech nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ingest.usage_event import TokenCounts, UsageEvent
from tests.support import REPO, api_as_finance, usage_event, warehouse_api_on_loopback
from tokenops.cli import app as cli
from tokenops.errors import ConfigError
from tokenops.report_cli import Column, render_table
from warehouse import economics
from warehouse.economics_api import router
from warehouse.revenue import load_revenue, split_by_month, sync_revenue
from warehouse.store import WarehouseStore

W46 = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)
W47 = datetime(2026, 11, 17, 10, 0, tzinfo=UTC)
WEEK47 = (datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC))

REVENUE = """
plans:
  - {tenant: acme, monthly_fee_usd: "2.00", from: "2026-10", to: "2026-12"}
  - {tenant: globex, monthly_fee_usd: "1.50", from: "2026-11", to: "2026-11"}
  - {tenant: umbrella, monthly_fee_usd: "1", from: "2026-11", to: "2026-11"}
lines:
  - {tenant: acme, kind: credit, amount_usd: "-0.25", period_start: 2026-11-01,
     period_end: 2026-11-30, description: incident credit}
  - {tenant: globex, kind: usage, amount_usd: "3.00", period_start: 2026-10-17,
     period_end: 2026-11-15}
"""


def call(
    name: str,
    at: datetime,
    tenant: str,
    feature: str | None,
    version: str | None,
    provider: str,
    model: str,
    outcome: str,
    tokens: tuple[int, int],
    cost: str,
    latency_ms: int,
    **fields: Any,
) -> UsageEvent:
    return usage_event(
        TokenCounts(input_uncached=tokens[0], output=tokens[1]),
        event_id=name,
        event_time=at,
        tenant=tenant,
        feature=feature,
        prompt_version=version,
        requested_model=model,
        served_model=model,
        provider=provider,
        provider_model=model,
        outcome=outcome,
        latency_ms=latency_ms,
        price_status="priced",
        price_version_id=f"test:{provider}/{model}",
        billing_currency="USD",
        cost_usd=Decimal(cost),
        cost_by_class={"input_uncached": Decimal(cost)},
        **fields,
    )


def acme(name: str, at: datetime, version: str, outcome: str, *rest: Any, **kw: Any) -> UsageEvent:
    return call(name, at, "acme", "search", version, "openai", "gpt-4o-mini", outcome, *rest, **kw)


def globex(name: str, at: datetime, outcome: str, *rest: Any) -> UsageEvent:
    return call(
        name, at, "globex", "support-chat", "s1", "deepseek", "deepseek-chat", outcome, *rest
    )


CALLS = [
    acme("a0", W46, "v1", "ok", (1500, 300), "0.45", 150),
    acme("a1", W47, "v1", "ok", (1000, 200), "0.30", 100),
    acme("a2", W47, "v1", "ok", (3000, 300), "0.50", 200),
    acme("a3", W47, "v2", "ok", (500, 100), "0.20", 300),
    acme("a4", W47, "v2", "timeout", (400, 0), "0.04", 30000),
    call(
        "a5",
        W47,
        "acme",
        "search",
        "v2",
        "anthropic",
        "claude-3-5-haiku",
        "ok",
        (400, 100),
        "0.16",
        900,
        attempt=2,
        fallback_reason="timeout",
    ),
    globex("g0", W46, "ok", (5000, 1000), "2.50", 400),
    globex("g1", W47, "ok", (800, 200), "0.40", 500),
    globex("g2", W47, "ok", (1200, 300), "0.60", 700),
    globex("g3", W47, "connection_error", (0, 0), "0", 5),
    call("i0", W46, "initech", "batch", None, "openai", "gpt-4o-mini", "ok", (100, 50), "0.05", 80),
    call(
        "i9",
        datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC),
        "initech",
        "batch",
        None,
        "openai",
        "gpt-4o-mini",
        "ok",
        (100, 50),
        "1.00",
        80,
    ),
]
SAVINGS = {"a1": Decimal("0.05"), "a2": Decimal("0.10"), "a3": Decimal("-0.02")}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WarehouseStore]:
    store = WarehouseStore(tmp_path / "warehouse.duckdb")
    store.load(CALLS, [], [], cache_savings=SAVINGS)
    (tmp_path / "revenue.yaml").write_text(REVENUE)
    sync_revenue(store, load_revenue(tmp_path / "revenue.yaml"))
    yield store
    store.close()


def by(rows: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    return {row[key]: row for row in rows}


# --- unit costs --------------------------------------------------------------------------------


def test_unit_costs_carry_failed_and_fallback_calls_as_real_cost(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        rows = economics.unit_costs(cur, ["tenant"], *WEEK47)
    assert [r["tenant"] for r in rows] == ["acme", "globex"]  # most expensive first
    acme_row, globex_row = rows
    # acme: a1..a5, 5 requests (4 ok); 1000+3000+500+400+400 in, 200+300+100+0+100 out = 6000
    # tokens; 0.30+0.50+0.20+0.04+0.16 = 1.20.
    assert acme_row == {
        "tenant": "acme",
        "requests": 5,
        "successful_requests": 4,
        "failed_requests": 1,
        "fallback_requests": 1,
        "unpriced_requests": 0,
        "input_tokens": 5300,
        "output_tokens": 700,
        "tokens": 6000,
        "cost_usd": "1.2",
        "cost_per_request_usd": "0.24",  # 1.20 / 5
        "cost_per_successful_request_usd": "0.3",  # 1.20 / 4: the timeout is paid by the rest
        "cost_per_1k_tokens_usd": "0.2",  # 1.20 x 1000 / 6000
        "error_cost_usd": "0.04",  # a4
        "fallback_cost_usd": "0.16",  # a5 ran on the fallback target
        "cache_savings_usd": "0.13",  # 0.05 + 0.10 - 0.02
    }
    # globex: g1..g3, 1.00 over 3 requests = 0.333... rounded half-even to 18 places.
    assert globex_row["cost_per_request_usd"] == "0.333333333333333333"
    assert globex_row["cost_per_successful_request_usd"] == "0.5"  # 1.00 / 2
    assert globex_row["cost_per_1k_tokens_usd"] == "0.4"  # 1.00 x 1000 / 2500
    assert (globex_row["error_cost_usd"], globex_row["cache_savings_usd"]) == ("0", "0")


def test_unit_costs_over_a_month_round_half_even_at_18_places(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        (row,) = economics.unit_costs(
            cur, ["tenant"], datetime(2026, 11, 1), datetime(2026, 12, 1), tenant="acme"
        )
    # a0..a5: 1.65 over 6 requests, 5 ok, 6800 + 1000 = 7800 tokens.
    assert row["cost_per_request_usd"] == "0.275"
    assert row["cost_per_successful_request_usd"] == "0.33"
    # 1650 / 7800 = 0.21153846153846153846...: the 19th digit is 4, so it rounds down.
    assert row["cost_per_1k_tokens_usd"] == "0.211538461538461538"


def test_unit_costs_by_provider_and_by_day(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        providers = economics.unit_costs(cur, ["provider"], *WEEK47, tenant="acme")
        days = economics.unit_costs(cur, ["day", "model"], tenant="globex")
    assert [(r["provider"], r["cost_usd"], r["fallback_cost_usd"]) for r in providers] == [
        ("openai", "1.04", "0"),  # a1..a4
        ("anthropic", "0.16", "0.16"),  # a5
    ]
    assert [(r["day"], r["model"], r["requests"], r["cost_usd"]) for r in days] == [
        ("2026-11-10", "deepseek-chat", 1, "2.5"),
        ("2026-11-17", "deepseek-chat", 3, "1"),
    ]


def test_unit_costs_use_the_corrected_cost(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        cur.execute(
            """INSERT INTO corrections VALUES ('k1', 'a1', 'test:v2', 'test:openai/gpt-4o-mini',
               -0.10, 0.20, '{}', 'price cut', now())"""
        )
    store.rebuild_rollup()  # written behind the store's back: recompute the daily rollup
    with store.cursor() as cur:
        (row,) = economics.unit_costs(cur, [], *WEEK47, tenant="acme")
    assert row["cost_usd"] == "1.1"  # 1.20 - 0.10
    assert row["cost_per_successful_request_usd"] == "0.275"  # 1.10 / 4


def test_an_unknown_dimension_or_an_empty_window_is_refused(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        with pytest.raises(ValueError, match="cannot group by colour; choose from tenant"):
            economics.unit_costs(cur, ["tenant", "colour"])
        with pytest.raises(ValueError, match="start must be before end"):
            economics.unit_costs(cur, ["tenant"], WEEK47[1], WEEK47[0])


# --- margins -----------------------------------------------------------------------------------


def test_margins_per_tenant_against_revenue(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        november = economics.margins(cur, "2026-11")
    rows = november["tenants"]
    # least profitable first
    assert [r["tenant"] for r in rows] == ["globex", "initech", "acme", "umbrella"]
    tenants = by(rows, "tenant")
    # acme: plan 2.00 - credit 0.25 = 1.75; cost a0..a5 = 1.65; margin 0.10 = 5.714...%.
    assert tenants["acme"] == {
        "tenant": "acme",
        "revenue_usd": "1.75",
        "plan_fee_usd": "2",
        "other_revenue_usd": "-0.25",
        "cost_usd": "1.65",
        "margin_usd": "0.1",
        "margin_pct": "5.71",
        "requests": 6,
        "successful_requests": 5,
        "cost_per_successful_request_usd": "0.33",  # 1.65 / 5
    }
    # globex: plan 1.50 + half of the usage line 1.50 = 3.00; cost 3.50; -0.50 = -16.67 %.
    globex_row = tenants["globex"]
    assert (globex_row["revenue_usd"], globex_row["cost_usd"]) == ("3", "3.5")
    assert (globex_row["margin_usd"], globex_row["margin_pct"]) == ("-0.5", "-16.67")
    # 3.50 / 3 ok requests = 1.1666...: the 19th digit is 6, so it rounds up.
    assert globex_row["cost_per_successful_request_usd"] == "1.166666666666666667"
    # initech: no revenue (no margin %); i9 at 23:59:59 on Oct 31st is October's.
    assert (tenants["initech"]["cost_usd"], tenants["initech"]["margin_pct"]) == ("0.05", None)
    assert (tenants["umbrella"]["margin_usd"], tenants["umbrella"]["margin_pct"]) == ("1", "100")
    # total: 5.75 - 5.20 = 0.55 = 9.565...%
    total = november["total"]
    assert (total["revenue_usd"], total["cost_usd"], total["margin_usd"]) == ("5.75", "5.2", "0.55")
    assert total["margin_pct"] == "9.57"
    assert (november["start"], november["end"]) == ("2026-11-01", "2026-12-01")


def test_margins_for_october_and_the_quarter(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        october = economics.margins(cur, "2026-10")
        quarter = economics.margins(cur, "2026-Q4", tenant="globex")
    assert [(r["tenant"], r["revenue_usd"], r["cost_usd"]) for r in october["tenants"]] == [
        ("initech", "0", "1"),
        ("globex", "1.5", "0"),
        ("acme", "2", "0"),
    ]
    (globex_row,) = quarter["tenants"]
    assert (globex_row["revenue_usd"], globex_row["margin_usd"]) == ("4.5", "1")  # 4.50 - 3.50


@pytest.mark.parametrize("period", ["2026-13", "2026-11-01", "Q4", "2026-Q5", "next month"])
def test_a_malformed_period_is_refused(period: str, store: WarehouseStore) -> None:
    with store.cursor() as cur, pytest.raises(ValueError, match="is not a month"):
        economics.margins(cur, period)


# --- movers ------------------------------------------------------------------------------------


def test_week_over_week_movers_largest_change_first(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        tenants = economics.movers(cur, ["tenant"], "2026-W47")
        versions = economics.movers(cur, ["prompt_version"], "2026-w47", tenant="acme")
    assert tenants["start"] == "2026-11-16T00:00:00+00:00"
    assert [
        (r["tenant"], r["previous_cost_usd"], r["cost_usd"], r["delta_usd"], r["delta_pct"])
        for r in tenants["rows"]
    ] == [
        ("globex", "2.5", "1", "-1.5", "-60"),  # 2.50 -> 1.00
        ("acme", "0.45", "1.2", "0.75", "166.67"),  # 0.75 / 0.45 = 1.666...
        ("initech", "0.05", "0", "-0.05", "-100"),
    ]
    assert [(r["prompt_version"], r["delta_usd"], r["delta_pct"]) for r in versions["rows"]] == [
        ("v2", "0.4", None),  # new this week: no previous cost to compare with
        ("v1", "0.35", "77.78"),  # 0.45 -> 0.80
    ]


def test_movers_refuse_days_and_bad_weeks(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        with pytest.raises(ValueError, match="not an ISO week"):
            economics.movers(cur, ["tenant"], "2026-47")
        with pytest.raises(ValueError, match="anything but day"):
            economics.movers(cur, ["day"], "2026-W47")


def test_default_periods_are_this_month_and_the_last_complete_week() -> None:
    now = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)  # a Sunday in week 47
    assert economics.current_month(now) == "2026-11"
    assert economics.last_complete_week(now) == "2026-W46"


# --- prompt versions ---------------------------------------------------------------------------


def test_prompt_versions_side_by_side(store: WarehouseStore) -> None:
    with store.cursor() as cur:
        rows = economics.prompt_versions(cur, feature="search")
    assert rows == [
        {
            "feature": "search",
            "prompt_version": "v1",
            "requests": 3,  # a0, a1, a2
            "successful_requests": 3,
            "error_pct": "0",
            "cost_usd": "1.25",
            "cost_per_request_usd": "0.416666666666666667",  # 1.25 / 3, rounded half-even
            "cost_per_successful_request_usd": "0.416666666666666667",
            "input_tokens_per_request": "1833.33",  # 5500 / 3
            "output_tokens_per_request": "266.67",  # 800 / 3
            "latency_p50_ms": 150,  # of 100, 150, 200
            "latency_p95_ms": 200,
        },
        {
            "feature": "search",
            "prompt_version": "v2",
            "requests": 3,  # a3, a4, a5
            "successful_requests": 2,
            "error_pct": "33.33",
            "cost_usd": "0.4",
            "cost_per_request_usd": "0.133333333333333333",
            "cost_per_successful_request_usd": "0.2",
            "input_tokens_per_request": "433.33",  # 1300 / 3
            "output_tokens_per_request": "66.67",  # 200 / 3
            "latency_p50_ms": 300,  # of the successful 300 and 900; the 30 s timeout is not one
            "latency_p95_ms": 900,
        },
    ]


# --- revenue -----------------------------------------------------------------------------------


def test_a_line_over_months_is_spread_by_day_and_adds_up_exactly() -> None:
    pieces = split_by_month(Decimal("0.10"), date(2026, 1, 1), date(2026, 3, 31))
    # 90 days: 31 + 28 + 31. 0.10 x 31/90 = 0.0344444...; the last piece takes the remainder.
    assert pieces == [
        (date(2026, 1, 1), date(2026, 1, 31), Decimal("0.034444444444444444")),
        (date(2026, 2, 1), date(2026, 2, 28), Decimal("0.031111111111111111")),
        (date(2026, 3, 1), date(2026, 3, 31), Decimal("0.034444444444444445")),
    ]
    assert sum(p[2] for p in pieces) == Decimal("0.10")


def test_revenue_sync_replaces_the_file_lines(store: WarehouseStore, tmp_path: Path) -> None:
    (tmp_path / "revenue.yaml").write_text(
        'plans: [{tenant: acme, monthly_fee_usd: "5", from: "2026-11", to: "2026-11"}]'
    )
    sync_revenue(store, load_revenue(tmp_path / "revenue.yaml"))
    sync_revenue(store, load_revenue(tmp_path / "revenue.yaml"))
    with store.cursor() as cur:
        lines = cur.execute("SELECT line_id, amount_usd FROM revenue").fetchall()
    assert lines == [("plan:acme:2026-11", Decimal("5"))]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("plans: [{tenant: a, monthly_fee_usd: 9.99, from: 2026-01, to: 2026-02}]", "quoted"),
        ("plans: [{tenant: a, monthly_fee_usd: '9', from: 2026-13, to: 2026-12}]", "not a month"),
        ("plans: [{tenant: a, monthly_fee_usd: '9', from: 2026-03, to: 2026-01}]", "before"),
        (
            "plans: [{tenant: a, monthly_fee_usd: '9', from: 2026-01, to: 2026-03},"
            " {tenant: a, monthly_fee_usd: '9', from: 2026-03, to: 2026-04}]",
            "a has two plans in 2026-03",
        ),
        (
            "lines: [{tenant: a, kind: credit, amount_usd: '5', period_start: 2026-01-01,"
            " period_end: 2026-01-31}]",
            "lines.0: a credit has a negative amount",
        ),
        (
            "lines: [{tenant: a, kind: gift, amount_usd: '5', period_start: 2026-01-01,"
            " period_end: 2026-01-31}]",
            "lines.0.kind",
        ),
        (
            "plans: [{tenant: a, monthly_fee_usd: '0.0000000000000000001', from: 2026-01,"
            " to: 2026-01}]",
            "18 decimal places",
        ),
    ],
)
def test_an_invalid_revenue_file_is_one_clear_error(text: str, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "revenue.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"invalid revenue file {path}: .*{reason}"):
        load_revenue(path)


def test_the_demo_revenue_file_loads() -> None:
    rows = load_revenue(REPO / "tokenops" / "demo_config" / "revenue.yaml")
    tenants = {row["tenant"] for row in rows}
    assert tenants == {"acme", "globex", "initech"}


# --- the API -----------------------------------------------------------------------------------


def api(store: WarehouseStore) -> FastAPI:
    return api_as_finance(store, router)


def test_api_serves_unit_costs_margins_movers_and_prompt_versions(store: WarehouseStore) -> None:
    client = TestClient(api(store))
    costs = client.get(
        "/api/unit-costs",
        params={"group_by": "tenant,feature", "start": "2026-11-16", "end": "2026-11-23"},
    )
    assert costs.status_code == 200
    first = costs.json()["rows"][0]
    assert (first["tenant"], first["feature"], first["cost_per_successful_request_usd"]) == (
        "acme",
        "search",
        "0.3",
    )
    margins = client.get("/api/margins", params={"period": "2026-11", "tenant": "globex"}).json()
    assert [(r["tenant"], r["margin_usd"]) for r in margins["tenants"]] == [("globex", "-0.5")]
    movers = client.get("/api/movers", params={"week": "2026-W47", "limit": 1}).json()
    assert [(r["tenant"], r["delta_usd"]) for r in movers["rows"]] == [("globex", "-1.5")]
    prompts = client.get("/api/prompt-versions", params={"feature": "search"}).json()
    assert [r["prompt_version"] for r in prompts["rows"]] == ["v1", "v2"]


@pytest.mark.parametrize(
    ("path", "params", "status", "detail"),
    [
        ("/api/unit-costs", {"group_by": "colour"}, 400, "cannot group by colour"),
        ("/api/unit-costs", {"start": "2026-11-20", "end": "2026-11-01"}, 400, "start must be"),
        ("/api/margins", {"period": "2026-13"}, 400, "period '2026-13' is not a month"),
        ("/api/movers", {"week": "47"}, 400, "week '47' is not an ISO week"),
        ("/api/prompt-versions", {"start": "yesterday"}, 422, None),
        ("/api/movers", {"limit": "0"}, 422, None),
    ],
)
def test_api_refuses_bad_parameters_clearly(
    store: WarehouseStore, path: str, params: dict[str, str], status: int, detail: str | None
) -> None:
    response = TestClient(api(store)).get(path, params=params)
    assert response.status_code == status
    if detail is not None:
        assert detail in response.json()["detail"]


# --- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def service(store: WarehouseStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The economics API on a free loopback port, where `tokenops report` looks for it."""
    with warehouse_api_on_loopback(api(store), monkeypatch):
        yield


def test_report_margins_prints_an_aligned_table(service: None) -> None:
    result = CliRunner().invoke(cli, ["report", "margins", "--period", "2026-11"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "2026-11 (2026-11-01 to 2026-12-01, end excluded)",
        "tenant    revenue $    cost $   margin $   margin  ok requests  $/ok request",
        "--------  ---------  --------  ---------  -------  -----------  ------------",
        "globex     3.000000  3.500000  -0.500000  -16.67%            3      1.166667",
        "initech    0.000000  0.050000  -0.050000        -            1      0.050000",
        "acme       1.750000  1.650000   0.100000    5.71%            5      0.330000",
        "umbrella   1.000000  0.000000   1.000000  100.00%            0             -",
        "total      5.750000  5.200000   0.550000    9.57%            9      0.577778",
    ]


def test_report_commands_json_and_errors(service: None) -> None:
    runner = CliRunner()
    costs = runner.invoke(
        cli, ["report", "costs", "--by", "provider", "--tenant", "acme", "--start", "2026-11-16"]
    )
    assert costs.exit_code == 0, costs.output
    assert costs.stdout.splitlines()[0].split() == [
        "provider",
        "requests",
        "ok",
        "tokens",
        "cost",
        "$",
        "$/request",
        "$/ok",
        "request",
        "$/1k",
        "tokens",
        "errors",
        "$",
        "fallbacks",
        "$",
        "cache",
        "saved",
        "$",
    ]
    movers = runner.invoke(cli, ["report", "movers", "--week", "2026-W47", "--json"])
    assert movers.exit_code == 0, movers.output
    assert '"delta_usd": "-1.5"' in movers.stdout
    prompts = runner.invoke(cli, ["report", "prompts", "--feature", "search"])
    assert prompts.exit_code == 0, prompts.output
    # One column per version, as wide as "1,833.33"; metric names as wide as the longest one.
    assert prompts.stdout.splitlines()[:5] == [
        f"{'feature search':<21}  {'v1':>8}  {'v2':>8}",
        f"{'-' * 21}  {'-' * 8}  {'-' * 8}",
        f"{'requests':<21}  {'3':>8}  {'3':>8}",
        f"{'errors':<21}  {'0.00%':>8}  {'33.33%':>8}",
        f"{'$/request':<21}  {'0.416667':>8}  {'0.133333':>8}",
    ]
    assert f"{'input tokens/request':<21}  {'1,833.33':>8}  {'433.33':>8}" in prompts.stdout
    bad = runner.invoke(cli, ["report", "costs", "--by", "colour"])
    assert bad.exit_code == 2
    assert "HTTP 400: cannot group by colour" in bad.stderr


def test_table_aligns_text_left_and_numbers_right() -> None:
    columns = [Column("name", "name"), Column("cost", "cost $", "money")]
    table = render_table(columns, [{"name": "a", "cost": "-0.5"}, {"name": "bbbb", "cost": "12"}])
    assert table.splitlines() == [
        "name     cost $",
        "----  ---------",
        "a     -0.500000",
        "bbbb  12.000000",
    ]
