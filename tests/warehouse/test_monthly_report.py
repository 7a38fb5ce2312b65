"""The monthly cost report on a real DuckDB file: the query API's numbers, in HTML, PDF and CSV.

The fixture, UTC; acme has a revenue plan of 2.00 in November, globex none.

  call  when          tenant  feature        version  provider   outcome            cost
  ao    Oct 15        acme    search         v1       openai     ok                 0.40
  go    Oct 20        globex  support-chat   s1       deepseek   ok                 1.10
  a1    Nov 2         acme    search         v1       openai     ok                 0.30
  a2    Nov 2         acme    search         v2       openai     timeout            0.04
  a3    Nov 2         acme    search         v2       anthropic  ok (fallback)      0.16
  a4    Nov 17        acme    summarize      v1       openai     ok             0.123456789012345678
  a5    Nov 30 23:59  acme    -              -        openai     ok                 0.01
  g1    Nov 5         globex  support-chat   s1       deepseek   ok                 0.40
  g2    Nov 17        globex  support-chat   s1       deepseek   ok                 0.60
  g3    Nov 17        globex  support-chat   s1       deepseek   connection_error   0
  x1    Dec 1 00:00   acme    search         v1       openai     ok                 5.00 (December)

November: acme 0.633456789012345678, globex 1.00, total 1.633456789012345678 over 8 requests;
October 1.50 over 2. Alerts: an acme budget breach on Nov 3rd, a globex anomaly on Nov 17th,
and an acme budget alert on Oct 10th (not November's).
"""

from __future__ import annotations

import csv
import io
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
from tests.support import alert_event, usage_event, warehouse_api_on_loopback
from tokenops.cli import app as cli
from warehouse.access import AccessBook, Viewer, hash_token
from warehouse.economics_api import router as economics_router
from warehouse.monthly_report import CSV_HEADER, MonthlyReport, build_report, to_csv
from warehouse.query_api import router as query_router
from warehouse.report_api import router as report_router
from warehouse.report_documents import to_pdf
from warehouse.revenue import load_revenue, sync_revenue
from warehouse.store import WarehouseStore

FINANCE = {"Authorization": "Bearer fin-demo-token"}
ACME_VIEWER = {"Authorization": "Bearer acme-viewer-token"}
NOVEMBER = {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
OCTOBER = {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}
SPEND = "1.633456789012345678"
ACME_SPEND = "0.633456789012345678"


def call(
    name: str,
    at: datetime,
    tenant: str,
    feature: str | None,
    version: str | None,
    provider: str,
    model: str,
    outcome: str,
    cost: str,
    **fields: Any,
) -> UsageEvent:
    return usage_event(
        TokenCounts(input_uncached=1000, output=100),
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
        latency_ms=200,
        price_status="priced",
        price_version_id=f"test:{provider}/{model}",
        billing_currency="USD",
        cost_usd=Decimal(cost),
        cost_by_class={"input_uncached": Decimal(cost)},
        **fields,
    )


def day(month: int, day_: int, hour: int = 10, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day_, hour, minute, second, tzinfo=UTC)


def acme(name: str, at: datetime, *rest: Any, **fields: Any) -> UsageEvent:
    return call(name, at, "acme", *rest, **fields)


def globex(name: str, at: datetime, outcome: str, cost: str) -> UsageEvent:
    return call(
        name, at, "globex", "support-chat", "s1", "deepseek", "deepseek-chat", outcome, cost
    )


MINI, HAIKU = ("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku")
CALLS = [
    acme("ao", day(10, 15), "search", "v1", *MINI, "ok", "0.40"),
    globex("go", day(10, 20), "ok", "1.10"),
    acme("a1", day(11, 2), "search", "v1", *MINI, "ok", "0.30"),
    acme("a2", day(11, 2), "search", "v2", *MINI, "timeout", "0.04"),
    acme(
        "a3", day(11, 2), "search", "v2", *HAIKU, "ok", "0.16", attempt=2, fallback_reason="timeout"
    ),
    acme("a4", day(11, 17), "summarize", "v1", *MINI, "ok", "0.123456789012345678"),
    acme("a5", day(11, 30, 23, 59, 59), None, None, *MINI, "ok", "0.01"),
    globex("g1", day(11, 5), "ok", "0.40"),
    globex("g2", day(11, 17), "ok", "0.60"),
    globex("g3", day(11, 17), "connection_error", "0"),
    acme("x1", day(12, 1, 0), "search", "v1", *MINI, "ok", "5.00"),
]
ALERTS = [
    alert_event("acme", alert_id="acme-breach", created_at=day(11, 3)),
    alert_event(
        "globex",
        alert_id="globex-anomaly",
        kind="anomaly",
        scope={"tenant": "globex", "feature": "support-chat"},
        state="WARN",
        period="day",
        period_start=day(11, 17, 0),
        created_at=day(11, 17, 12),
        message="globex support-chat spend is 3x its usual day",
        budget_id=None,
        limit_usd=None,
        spend_usd=None,
        threshold=None,
    ),
    alert_event(
        "acme", alert_id="acme-october", created_at=day(10, 10), period_start=day(10, 1, 0)
    ),
]
REVENUE = 'plans: [{tenant: acme, monthly_fee_usd: "2.00", from: "2026-11", to: "2026-11"}]'


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WarehouseStore]:
    store = WarehouseStore(tmp_path / "warehouse.duckdb")
    store.load(CALLS, ALERTS, [], cache_savings={"a1": Decimal("0.05")})
    (tmp_path / "revenue.yaml").write_text(REVENUE)
    sync_revenue(store, load_revenue(tmp_path / "revenue.yaml"))
    yield store
    store.close()


def api(store: WarehouseStore) -> FastAPI:
    """The report, unit-economics and query routes, with a finance token (every tenant) and an
    acme-only token."""
    app = FastAPI()
    for router in (report_router, economics_router, query_router):
        app.include_router(router)
    app.state.store = store
    app.state.access = AccessBook(
        {},
        [
            (hash_token("fin-demo-token"), Viewer("finance-api", None)),
            (hash_token("acme-viewer-token"), Viewer("acme-viewer-api", frozenset({"acme"}))),
        ],
    )
    return app


@pytest.fixture
def client(store: WarehouseStore) -> TestClient:
    return TestClient(api(store))


def november(store: WarehouseStore, tenant: str | None = None) -> MonthlyReport:
    with store.cursor() as cur:
        return build_report(cur, "2026-11", tenant, None if tenant is None else frozenset({tenant}))


def get(client: TestClient, path: str, **params: str) -> Any:
    response = client.get(path, params=params, headers=FINANCE)
    assert response.status_code == 200, response.text
    return response.json()


def csv_figures(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == CSV_HEADER
    return list(reader)


def total(rows: list[dict[str, str]], section: str, metric: str = "cost_usd") -> Decimal:
    return sum(
        (Decimal(r["value"]) for r in rows if (r["section"], r["metric"]) == (section, metric)),
        Decimal(0),
    )


# --- the numbers -------------------------------------------------------------------------------


def test_the_report_has_the_query_apis_numbers(store: WarehouseStore, client: TestClient) -> None:
    report = november(store)
    (totals,) = get(client, "/api/unit-costs", group_by="", **NOVEMBER)["rows"]
    margins = get(client, "/api/margins", period="2026-11")
    assert report.headline == {
        **totals,
        "revenue_usd": "2",  # acme's plan
        "margin_usd": "0.366543210987654322",  # 2 - 1.633456789012345678
        "margin_pct": "18.33",
    }
    assert (report.headline["cost_usd"], report.headline["requests"]) == (SPEND, 8)
    assert report.margins == margins["tenants"]
    assert report.headline["revenue_usd"] == margins["total"]["revenue_usd"]
    # the dashboard's own cost query agrees
    (dashboard,) = get(client, "/api/costs", group_by="", **NOVEMBER)["rows"]
    assert dashboard["cost_usd"] == SPEND

    def rows(group_by: str, window: dict[str, str] = NOVEMBER) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = get(client, "/api/unit-costs", group_by=group_by, **window)[
            "rows"
        ]
        return found

    assert report.tenants == rows("tenant")
    assert [(r["tenant"], r["cost_usd"]) for r in report.tenants] == [
        ("globex", "1"),
        ("acme", ACME_SPEND),
    ]
    assert report.features == rows("feature")
    assert report.models == rows("model,provider")
    assert report.prompt_versions == get(client, "/api/prompt-versions", **NOVEMBER)["rows"]
    assert [d for d in report.daily if d["requests"]] == [
        {"day": r["day"], "requests": r["requests"], "cost_usd": r["cost_usd"]}
        for r in sorted(rows("day"), key=lambda r: r["day"])
    ]
    assert len(report.daily) == 30 and report.daily[-1] == {
        "day": "2026-11-30",
        "requests": 1,
        "cost_usd": "0.01",
    }
    (october,) = rows("", OCTOBER)
    assert report.previous == {"period": "2026-10", **october}
    assert report.change == {
        "cost_usd": "0.133456789012345678",
        "cost_pct": "8.9",  # 0.1334... / 1.50 = 8.897 %
        "requests": 6,
    }
    alerts = get(client, "/api/alerts")["alerts"]
    assert report.alert_counts == {"budget": 1, "anomaly": 1}
    assert report.alerts == [
        a for a in reversed(alerts) if a["id"] in {"acme-breach", "globex-anomaly"}
    ]


def test_a_tenants_report_holds_nothing_of_another_tenant(
    store: WarehouseStore, client: TestClient
) -> None:
    report = november(store, "acme")
    (totals,) = get(client, "/api/unit-costs", group_by="", tenant="acme", **NOVEMBER)["rows"]
    assert report.headline["cost_usd"] == totals["cost_usd"] == ACME_SPEND
    assert report.tenants == []  # one tenant: no table by tenant
    assert [a["id"] for a in report.alerts] == ["acme-breach"]
    for viewer, params in ((FINANCE, {"tenant": "acme"}), (ACME_VIEWER, {})):
        for fmt in ("csv", "html"):
            response = client.get(
                "/api/reports/monthly",
                params={"period": "2026-11", "format": fmt, **params},
                headers=viewer,
            )
            assert response.status_code == 200, response.text
            assert ACME_SPEND in response.text
            for other in ("globex", "support-chat", "deepseek"):
                assert other not in response.text


def test_a_tenant_the_viewer_may_not_see_is_forbidden(client: TestClient) -> None:
    response = client.get(
        "/api/reports/monthly",
        params={"period": "2026-11", "tenant": "globex"},
        headers=ACME_VIEWER,
    )
    assert response.status_code == 403
    assert client.get("/api/reports/monthly", params={"period": "2026-11"}).status_code == 401


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"period": "2026-13"}, 400, "period '2026-13' is not a month"),
        ({"period": "2026-Q4"}, 400, "period '2026-Q4' is not a month such as 2026-11"),
        ({}, 422, None),
        ({"period": "2026-11", "format": "xlsx"}, 422, None),
    ],
)
def test_a_bad_period_or_format_is_refused(
    client: TestClient, params: dict[str, str], status: int, detail: str | None
) -> None:
    response = client.get("/api/reports/monthly", params=params, headers=FINANCE)
    assert response.status_code == status
    if detail is not None:
        assert detail in response.json()["detail"]


# --- the files ---------------------------------------------------------------------------------


def test_html_is_one_printable_file_with_the_numbers_and_a_plotly_chart(
    client: TestClient,
) -> None:
    response = client.get(
        "/api/reports/monthly", params={"period": "2026-11", "format": "html"}, headers=FINANCE
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-disposition"] == (
        'attachment; filename="tokenops-report-2026-11.html"'
    )
    assert response.headers["x-report-spend-usd"] == SPEND
    page = response.text
    assert "<title>Cost report November 2026, all tenants</title>" in page
    for figure in (SPEND, ACME_SPEND, "0.366543210987654322", "18.33%"):
        assert f">{figure}<" in page, figure
    assert "Spend changed by $0.133456789012345678 (8.90%) against 2026-10" in page
    assert 'id="daily-spend-chart"' in page and "Plotly.newPlot" in page
    assert "<script src=" not in page  # plotly.js is inlined: the file works offline
    assert "acme-breach" not in page and "globex support-chat spend is 3x" in page


def test_pdf_has_the_headline(store: WarehouseStore, client: TestClient) -> None:
    response = client.get(
        "/api/reports/monthly",
        params={"period": "2026-11", "tenant": "acme", "format": "pdf"},
        headers=FINANCE,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == (
        'attachment; filename="tokenops-report-2026-11-acme.pdf"'
    )
    assert response.content.startswith(b"%PDF-")
    readable = to_pdf(november(store, "acme"), compress=False)
    assert b"(Cost report November 2026, tenant acme)" in readable
    assert f"({ACME_SPEND})".encode() in readable


def test_csv_is_tidy_and_its_sections_add_up_to_the_headline_exactly(client: TestClient) -> None:
    response = client.get(
        "/api/reports/monthly", params={"period": "2026-11", "format": "csv"}, headers=FINANCE
    )
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = csv_figures(response.text)
    assert {r["period"] for r in rows} == {"2026-11"}
    headline = {r["metric"]: r["value"] for r in rows if r["section"] == "headline"}
    assert (headline["cost_usd"], headline["requests"], headline["revenue_usd"]) == (
        SPEND,
        "8",
        "2",
    )
    spend = Decimal(SPEND)
    for section in ("by_tenant", "by_feature", "by_model", "by_prompt_version", "daily"):
        assert total(rows, section) == spend, section
    assert total(rows, "margin_by_tenant", "margin_usd") == Decimal(headline["margin_usd"])
    keys = {(r["section"], r["key"]) for r in rows}
    assert {("by_feature", "(none)"), ("by_model", "anthropic/claude-haiku")} <= keys
    assert ("by_prompt_version", "summarize/v1") in keys
    assert ("alert_counts", "anomaly", "1") in {(r["section"], r["key"], r["value"]) for r in rows}


def test_csv_text_a_spreadsheet_would_run_as_a_formula_is_quoted() -> None:
    report = MonthlyReport(
        period="2026-11",
        start=date(2026, 11, 1),
        end=date(2026, 12, 1),
        tenant=None,
        generated_at=day(11, 22),
        headline={"cost_usd": "-0.5"},
        previous={"period": "2026-10"},
        change={},
        features=[{"feature": '=HYPERLINK("https://example.com")', "cost_usd": "-0.5"}],
    )
    rows = csv_figures(to_csv(report))
    assert [(r["section"], r["key"], r["value"]) for r in rows] == [
        ("headline", "", "-0.5"),  # a negative amount stays a number
        ("by_feature", '\'=HYPERLINK("https://example.com")', "-0.5"),
    ]


# --- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def service(
    store: WarehouseStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Path]:
    """The API on a free loopback port, where `tokenops report` looks for it with the finance
    token; yields the working directory the CLI writes to."""
    monkeypatch.setenv("TOKENOPS_API_TOKEN", "fin-demo-token")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with warehouse_api_on_loopback(api(store), monkeypatch):
        yield work


def test_report_writes_the_monthly_file(service: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["report", "--period", "2026-11", "--tenant", "acme", "--format", "csv"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "tokenops-report-2026-11-acme.csv: cost report 2026-11, tenant acme: "
        f"spend {ACME_SPEND} USD"
    )
    rows = csv_figures((service / "tokenops-report-2026-11-acme.csv").read_text())
    assert total(rows, "by_feature") == Decimal(ACME_SPEND)

    out = service / "finance" / "november.pdf"
    out.parent.mkdir()
    result = runner.invoke(
        cli, ["report", "--period", "2026-11", "--format", "pdf", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF-")
    assert f"spend {SPEND} USD" in result.stdout

    result = runner.invoke(cli, ["report", "--period", "2026-11"])  # html by default
    assert result.exit_code == 0, result.output
    assert (service / "tokenops-report-2026-11.html").read_text().startswith("<!DOCTYPE html>")


def test_report_subcommands_help_and_misuse(service: Path) -> None:
    runner = CliRunner()
    margins = runner.invoke(cli, ["report", "margins", "--period", "2026-11"])
    assert margins.exit_code == 0, margins.output
    assert margins.stdout.splitlines()[0] == "2026-11 (2026-11-01 to 2026-12-01, end excluded)"
    helped = runner.invoke(cli, ["report"])
    assert helped.exit_code == 0
    assert "--period" in helped.stdout and "margins" in helped.stdout
    for args, message in (
        (["report", "--period", "2026-11", "margins"], "put a subcommand's options after its name"),
        (["report", "--tenant", "acme"], "the monthly report needs a month"),
        (["report", "--period", "2026-13"], "period '2026-13' is not a month"),
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, args
        assert message in result.stderr, result.stderr
    assert list(service.iterdir()) == []  # nothing written by a refused command
