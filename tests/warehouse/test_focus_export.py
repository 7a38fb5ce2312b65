"""The FOCUS 1.2 export, on a real DuckDB warehouse, checked by the FinOps Foundation's validator.

The fixture: November 2026, UTC.

  call            tenant   provider   model                 tokens (in/cache/out)  price
  cached          acme     openai     gpt-4o-mini           1000 + 2048 read / 300  catalog, then
  plain           acme     openai     gpt-4o-mini           500 / 100              acme contract
  big             globex   openai     gpt-4o-mini           1,000,000 / 0          catalog
  sonnet          acme     anthropic  claude-3-5-sonnet     1200 + 4000 w + 10000 r / 800
  last-second     globex   deepseek   deepseek-chat         3000 / 700 at Nov 30 23:59:59
  yuan            acme     alibaba    qwen-turbo (CNY)      12345 / 777            0.3 / 0.6 CNY
  priced-later    acme     alibaba    qwen-plus (CNY)       10000 / 1000           none; 0.8 / 2
  mystery         initech  openai     mystery-model         10 / 0                 never
  october         acme     openai     gpt-4o-mini           Oct 31 23:59:59 (another period)

acme's contract for gpt-4o-mini (0.1 input, 0.4 output per million, back-dated) corrects the
cached, plain and october calls; the qwen-plus price prices the priced-later call.
"""

from __future__ import annotations

import csv
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ingest.price_book import ClassRates, FxRate, PriceBook, PriceVersion
from ingest.pricing import Pricer
from ingest.usage_event import TokenCounts, UsageEvent
from tests.support import REPO, api_as_finance, usage_event, warehouse_api_on_loopback
from tokenops.cli import app as cli
from warehouse.export_api import router
from warehouse.focus import BillingPeriod, FocusPeriodError, export_focus, parse_period
from warehouse.store import WarehouseError, WarehouseStore

NOVEMBER = parse_period("2026-11")
CNY = FxRate(currency="CNY", usd_per_unit="0.14", effective_from="2026-01-01", source="test")
VALIDATOR = REPO / ".bench" / "focus-validator"
# focus-validator 2.2.1 checks InvoiceId's two nullability rules one by one over every row: C-004
# ("MUST be null when the charge is not associated with an invoice") and C-005 ("MUST NOT be null
# when it is"), so any file with an InvoiceId column fails one of them (and one without it fails
# seven). tokenops issues no invoices: InvoiceId is null, and only C-005 may fail.
VALIDATOR_CONTRADICTION = {"InvoiceId-C-005-C"}


def call(
    name: str,
    provider: str,
    model: str,
    at: datetime,
    tenant: str = "acme",
    feature: str | None = None,
    prompt_version: str | None = None,
    **tokens: int,
) -> UsageEvent:
    return usage_event(
        TokenCounts(**tokens),
        event_id=name,
        event_time=at,
        tenant=tenant,
        feature=feature,
        prompt_version=prompt_version,
        requested_model=model,
        served_model=model,
        provider=provider,
        provider_model=model,
    )


def nov(day: int, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


def cny_version(model: str, per_million: ClassRates) -> PriceVersion:
    return PriceVersion(
        provider="alibaba",
        model=model,
        currency="CNY",
        effective_from="2026-01-01",
        source="Model Studio list price",
        per_million=per_million,
    )


CALLS = [
    call("cached", "openai", "gpt-4o-mini", nov(3), feature="search", prompt_version="v2",
         input_uncached=1000, cache_read=2048, output=300),
    call("plain", "openai", "gpt-4o-mini", nov(3, 15), feature="search", prompt_version="v2",
         input_uncached=500, output=100),
    call("big", "openai", "gpt-4o-mini", nov(3), tenant="globex", input_uncached=1_000_000),
    call("sonnet", "anthropic", "claude-3-5-sonnet-latest", nov(4), feature="chat",
         input_uncached=1200, cache_write=4000, cache_read=10000, output=800),
    call("last-second", "deepseek", "deepseek-chat", nov(30, 23, 59, 59), tenant="globex",
         feature="support", input_uncached=3000, output=700),
    call("yuan", "alibaba", "qwen-turbo", nov(5), input_uncached=12345, output=777),
    call("priced-later", "alibaba", "qwen-plus", nov(6), input_uncached=10000, output=1000),
    call("mystery", "openai", "mystery-model", nov(7), tenant="initech", input_uncached=10),
    call("october", "openai", "gpt-4o-mini", datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC),
         input_uncached=10),
]  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WarehouseStore]:
    turbo = cny_version("qwen-turbo", ClassRates(input=Decimal("0.3"), output=Decimal("0.6")))
    pricer = Pricer(PriceBook([turbo], fx=[CNY]))
    store = WarehouseStore(tmp_path / "warehouse.duckdb")
    store.load([pricer.price_event(e) for e in CALLS], [], [])
    contract = PriceVersion(
        provider="openai",
        model="gpt-4o-mini",
        tenant="acme",
        effective_from="2026-01-01",
        source="acme agreement",
        per_million=ClassRates(input=Decimal("0.1"), output=Decimal("0.4")),
    )
    plus = cny_version("qwen-plus", ClassRates(input=Decimal("0.8"), output=Decimal("2")))
    for version in (contract, plus):
        pricer.book.add(version)
        assert store.apply_price_version(version, pricer) > 0
    yield store
    store.close()


def effective_cost(store: WarehouseStore, period: BillingPeriod) -> Decimal:
    """The warehouse's own figure: originals plus corrections of the period's calls."""
    with store.cursor() as cur:
        found = cur.execute(
            """SELECT sum(effective_cost_usd) FROM call_costs
               WHERE event_time >= ? AND event_time < ?""",
            [period.start, period.end],
        ).fetchone()
    assert found is not None
    total: Decimal = found[0]
    return total


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def total(rows: list[dict[str, str]], column: str = "BilledCost", **where: str) -> Decimal:
    return sum(
        (Decimal(r[column]) for r in rows if all(r[k] == v for k, v in where.items())),
        Decimal(0),
    )


def test_the_csv_restates_the_period_to_the_last_atto_dollar(
    store: WarehouseStore, tmp_path: Path
) -> None:
    with store.cursor() as cur:
        export = export_focus(cur, NOVEMBER, "csv", tmp_path / "focus.csv")
    rows = read_csv(export.path)
    expected = effective_cost(store, NOVEMBER)
    assert export.rows == len(rows) and export.unpriced_calls == 1  # the mystery model
    for column in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"):
        assert total(rows, column) == expected == export.billed_cost
    assert {"x_Tenant", "x_Feature", "x_PromptVersion", "x_TokenClass"} <= set(rows[0])
    assert {r["BillingCurrency"] for r in rows} == {"USD"}
    assert {r["ProviderName"] for r in rows} == {"OpenAI", "Anthropic", "DeepSeek", "Alibaba Cloud"}
    assert "mystery-model" not in {r["x_ProviderModel"] for r in rows}

    # acme's gpt-4o-mini at its contract: (1000 + 2048) * 0.1 + 300 * 0.4 and 500 * 0.1 + 100 * 0.4
    # per million, the catalog charge plus the correction rows that bring it there.
    assert total(rows, x_Tenant="acme", x_ProviderModel="gpt-4o-mini") == Decimal("0.0005148")
    corrections = [r for r in rows if r["ChargeClass"] == "Correction"]
    assert {(r["x_ProviderModel"], r["x_TokenClass"]) for r in corrections} == {
        ("gpt-4o-mini", "input_uncached"),
        ("gpt-4o-mini", "cache_read"),
        ("gpt-4o-mini", "output"),
        ("qwen-plus", "input_uncached"),
        ("qwen-plus", "output"),
    }
    assert all(r["x_CorrectedAt"] and not r["PricingQuantity"] for r in corrections)
    assert {r["ChargeClass"] for r in rows if r not in corrections} == {""}
    # The call priced only by a correction: (10000 * 0.8 + 1000 * 2) / 1M CNY at 0.14 USD.
    assert total(corrections, x_ProviderModel="qwen-plus") == Decimal("0.0014")
    assert {r["ChargePeriodStart"] for r in corrections} == {
        "2026-11-03T00:00:00Z",
        "2026-11-06T00:00:00Z",
    }

    charges = [r for r in rows if r not in corrections]
    for row in charges:  # one rate per row: unit price x quantity is the cost, exactly
        assert Decimal(row["ListUnitPrice"]) * Decimal(row["PricingQuantity"]) == Decimal(
            row["ListCost"]
        ), row
    cached = [
        r for r in charges if r["x_Tenant"] == "acme" and r["x_ProviderModel"] == "gpt-4o-mini"
    ]
    assert {r["x_TokenClass"]: (r["ConsumedQuantity"], r["x_Calls"]) for r in cached} == {
        "input_uncached": ("1500", "2"),
        "cache_read": ("2048", "1"),
        "output": ("400", "2"),
    }
    yuan = {r["x_TokenClass"]: r for r in charges if r["x_ProviderModel"] == "qwen-turbo"}
    assert (yuan["input_uncached"]["ListUnitPrice"], yuan["output"]["ListUnitPrice"]) == (
        "0.042",
        "0.084",
    )
    assert (yuan["output"]["x_PricingCurrency"], yuan["output"]["x_FxRate"]) == ("CNY", "0.14")
    last = next(r for r in charges if r["x_ProviderModel"] == "deepseek-chat")
    assert (last["ChargePeriodStart"], last["ChargePeriodEnd"]) == (
        "2026-11-30T00:00:00Z",
        "2026-12-01T00:00:00Z",
    )
    assert (last["BillingPeriodStart"], last["PricingUnit"], last["SkuId"]) == (
        "2026-11-01T00:00:00Z",
        "1000000 Tokens",
        "deepseek/deepseek-chat/input_uncached",
    )


def test_a_range_of_days_and_october_are_their_own_exports(
    store: WarehouseStore, tmp_path: Path
) -> None:
    last_day = parse_period("2026-11-30..2026-11-30")
    october = parse_period("2026-10")
    with store.cursor() as cur:
        day = export_focus(cur, last_day, "csv", tmp_path / "day.csv")
        oct_export = export_focus(cur, october, "csv", tmp_path / "october.csv")
    assert {r["x_ProviderModel"] for r in read_csv(day.path)} == {"deepseek-chat"}
    assert day.billed_cost == effective_cost(store, last_day)
    # October's call at the contract price: 10 * 0.1 / 1M, its correction in October's export.
    assert oct_export.billed_cost == effective_cost(store, october) == Decimal("0.000001")


def test_an_export_that_would_not_add_up_writes_no_file(
    store: WarehouseStore, tmp_path: Path
) -> None:
    with store.cursor() as cur:
        cur.execute("UPDATE calls SET cost_by_class = NULL WHERE event_id = 'big'")
        with pytest.raises(
            WarehouseError, match=r"rows of 2026-11 add up to .* but the warehouse holds"
        ):
            export_focus(cur, NOVEMBER, "csv", tmp_path / "focus.csv")
    assert not (tmp_path / "focus.csv").exists()


def test_parquet_keeps_money_as_decimal_38_18(store: WarehouseStore, tmp_path: Path) -> None:
    with store.cursor() as cur:
        export = export_focus(cur, NOVEMBER, "parquet", tmp_path / "focus.parquet")
    with duckdb.connect() as con:
        types = dict(
            con.execute(
                f"SELECT column_name, column_type FROM (DESCRIBE '{export.path}')"
            ).fetchall()
        )
        found = con.execute(
            f"SELECT count(*), sum(BilledCost), count(*) FILTER (ChargeClass = 'Correction') "
            f"FROM '{export.path}'"
        ).fetchone()
    assert types["BilledCost"] == types["ListUnitPrice"] == "DECIMAL(38,18)"
    assert types["ChargePeriodStart"] == "TIMESTAMP WITH TIME ZONE"
    assert found == (export.rows, effective_cost(store, NOVEMBER), 5)


def validate(data: Path) -> tuple[str, int, set[str]]:
    """Run focus-validator 2.2.1 from its package folder (it reads its rules by a relative path);
    returns its summary line, how many rules passed and the ids of those that failed."""
    program = VALIDATOR / "bin" / "focus-validator"
    packages = sorted(VALIDATOR.glob("lib/python3.*/site-packages"))
    if not program.is_file() or not packages:
        pytest.fail(f"focus-validator is not installed in {VALIDATOR}: run `make focus-validator`")
    result = subprocess.run(
        [str(program), "--data-file", str(data), "--validate-version", "1.2", "--block-download"],
        cwd=packages[0],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    summary = re.search(
        r"Total: (\d+) \| Pass: (\d+) \| Fail: (\d+) \| Skipped: \d+", result.stdout
    )
    assert summary is not None, result.stdout[-2000:]
    failed = set(re.findall(r"^\S+ ([\w-]+): FAIL", result.stdout, flags=re.MULTILINE))
    assert len(failed) == int(summary[3]), summary[0]
    return summary[0], int(summary[2]), failed


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_finops_foundation_validator_accepts_the_export(
    fmt: Any, store: WarehouseStore, tmp_path: Path
) -> None:
    with store.cursor() as cur:
        export = export_focus(cur, NOVEMBER, fmt, tmp_path / f"focus.{fmt}")
    summary, passed, failed = validate(export.path)
    # 136 rules of FOCUS 1.2 apply to this file without applicability criteria (the rest are
    # dynamic or conditional on them): fewer passing would mean columns went unchecked.
    assert passed >= 136, summary
    assert failed <= VALIDATOR_CONTRADICTION, f"{summary}; failed: {sorted(failed)}"


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026-11", nov(1, 0), datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("2026-11-03..2026-11-04", nov(3, 0), nov(5, 0)),
    ],
)
def test_a_period_is_a_month_or_a_range_of_days(text: str, start: datetime, end: datetime) -> None:
    assert parse_period(text) == BillingPeriod(text, start, end)


@pytest.mark.parametrize(
    "text", ["2026-13", "2026-11-31..2026-12-01", "2026-11-05..2026-11-04", "nov"]
)
def test_a_malformed_period_is_refused(text: str) -> None:
    with pytest.raises(FocusPeriodError, match="is not a month"):
        parse_period(text)


# --- the API and the CLI -----------------------------------------------------------------------


def api(store: WarehouseStore) -> FastAPI:
    return api_as_finance(store, router)


def test_api_returns_the_file_as_an_attachment(store: WarehouseStore) -> None:
    client = TestClient(api(store))
    response = client.get("/api/export/focus", params={"period": "2026-11", "format": "csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == 'attachment; filename="focus-2026-11.csv"'
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(response.text.splitlines()))
    assert response.headers["x-tokenops-focus-rows"] == str(len(rows))
    assert response.headers["x-tokenops-unpriced-calls"] == "1"
    assert Decimal(response.headers["x-tokenops-billed-cost-usd"]) == total(rows)
    assert total(rows) == effective_cost(store, NOVEMBER)


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"period": "2026-13"}, 400, "period '2026-13' is not a month (YYYY-MM"),
        ({"period": "2026-11", "format": "xlsx"}, 422, None),
        ({}, 422, None),
    ],
)
def test_api_refuses_a_bad_period_or_format(
    store: WarehouseStore, params: dict[str, str], status: int, detail: str | None
) -> None:
    response = TestClient(api(store)).get("/api/export/focus", params=params)
    assert response.status_code == status
    if detail is not None:
        assert detail in response.json()["detail"]


@pytest.fixture
def service(store: WarehouseStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The export API on a free loopback port, where `tokenops export` looks for it."""
    with warehouse_api_on_loopback(api(store), monkeypatch):
        yield


def test_cli_writes_the_file_it_gets_from_the_service(
    service: None, store: WarehouseStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    out = tmp_path / "november.parquet"
    parquet = runner.invoke(
        cli, ["export", "focus", "--period", "2026-11", "--format", "parquet", "--out", str(out)]
    )
    assert parquet.exit_code == 0, parquet.output
    expected = effective_cost(store, NOVEMBER)
    assert (
        parquet.stdout.strip() == f"{out}: 17 FOCUS 1.2 rows, BilledCost {expected.normalize()} USD"
    )
    assert "1 unpriced calls of the period are not in the file" in parquet.stderr
    with duckdb.connect() as con:
        assert con.execute(f"SELECT sum(BilledCost) FROM '{out}'").fetchone() == (expected,)

    monkeypatch.chdir(tmp_path)
    default = runner.invoke(cli, ["export", "focus", "--period", "2026-11-03..2026-11-03"])
    assert default.exit_code == 0, default.output
    assert {
        r["ChargePeriodStart"] for r in read_csv(tmp_path / "focus-2026-11-03..2026-11-03.csv")
    } == {"2026-11-03T00:00:00Z"}

    one = runner.invoke(cli, ["export", "focus", "--period", "2026-11", "--tenant", "acme"])
    assert one.exit_code == 0, one.output
    assert {r["x_Tenant"] for r in read_csv(tmp_path / "focus-2026-11-acme.csv")} == {"acme"}

    bad = runner.invoke(cli, ["export", "focus", "--period", "last month"])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("tokenops: period 'last month' is not a month")
