"""The monthly cost report: one month of one tenant (or of every tenant a viewer may see), with
the dashboard's numbers, for finance to send on.

Every figure comes from the unit-economics and alert queries (warehouse.economics,
warehouse.queries), so the report shows what the API and the dashboard show; definitions and
rounding are warehouse.economics'. Money stays the API's exact decimal strings. All sections read
one DuckDB snapshot, so they add up to the headline even while the loader writes.

The month is [first day, first day of the next month) in UTC; its alerts are those created in
it. The previous month is there for comparison (change = this month - previous month).
Renderers: `to_csv` here (exact figures), HTML and PDF in warehouse.report_documents.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Context, Decimal, localcontext
from typing import Any

import duckdb

from warehouse import economics
from warehouse.queries import alert_rows, money

ALERT_KINDS = ("budget", "anomaly")
"""Alert kinds always counted, even at 0 (any other kind in the month is counted too)."""
_WIDE = Context(prec=80)  # DECIMAL(38, 18) amounts subtract exactly


@dataclass(frozen=True)
class MonthlyReport:
    """One month's costs. Rows are the API's rows (unit_costs, margins, prompt_versions,
    alert_rows); `daily` has every day of the month, 0 on days without calls."""

    period: str
    start: date
    end: date
    """The first day of the next month (excluded)."""
    tenant: str | None
    """The one tenant reported on; None: every tenant the viewer may see."""
    generated_at: datetime
    headline: dict[str, Any]
    """unit_costs totals; with revenue_usd, margin_usd and margin_pct when there is revenue."""
    previous: dict[str, Any]
    """The previous month's unit_costs totals, and its period."""
    change: dict[str, Any]
    """cost_usd, cost_pct (None without previous cost) and requests, against the previous month."""
    tenants: list[dict[str, Any]] = field(default_factory=list)
    """Spend per tenant (empty when the report is for one tenant)."""
    margins: list[dict[str, Any]] = field(default_factory=list)
    """Gross margin per tenant (empty without revenue)."""
    features: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    """Per served model and provider."""
    prompt_versions: list[dict[str, Any]] = field(default_factory=list)
    daily: list[dict[str, Any]] = field(default_factory=list)
    """day, requests, cost_usd."""
    alert_counts: dict[str, int] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    """The month's alerts, oldest first."""

    @property
    def has_revenue(self) -> bool:
        return "revenue_usd" in self.headline


def file_name(period: str, tenant: str | None, extension: str) -> str:
    """tokenops-report-2026-11.pdf or tokenops-report-2026-11-acme.pdf; a character a file name
    should not hold becomes '_'."""
    stem = f"tokenops-report-{period}"
    if tenant is not None:
        stem += "-" + "".join(c if c.isalnum() or c in "_-" else "_" for c in tenant)
    return f"{stem}.{extension}"


def month_bounds(period: str) -> tuple[date, date]:
    """'2026-11' -> (2026-11-01, 2026-12-01); anything but one month is a ValueError."""
    first, end = economics.parse_period(period)
    if (end - first).days > 31:
        raise ValueError(f"period {period!r} is not a month such as 2026-11")
    return first, end


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _minus(amount: str, other: str) -> str:
    with localcontext(_WIDE):
        return money(Decimal(amount) - Decimal(other))


def build_report(
    cur: duckdb.DuckDBPyConnection,
    period: str,
    tenant: str | None,
    tenants: frozenset[str] | None,
) -> MonthlyReport:
    """The report of `period` (a month, '2026-11') for `tenant` (None: all), within the tenants
    a viewer may see (None: all). A malformed period is a ValueError."""
    first, end = month_bounds(period)
    previous_first = (first - timedelta(days=1)).replace(day=1)
    lo, hi = _midnight(first), _midnight(end)
    scope: dict[str, Any] = {"tenant": tenant, "tenants": tenants}
    cur.begin()  # one snapshot for every section; read-only, so it is rolled back
    try:
        (headline,) = economics.unit_costs(cur, [], lo, hi, **scope)
        (previous,) = economics.unit_costs(cur, [], _midnight(previous_first), lo, **scope)
        by_tenant = (
            [] if tenant is not None else economics.unit_costs(cur, ["tenant"], lo, hi, **scope)
        )
        features = economics.unit_costs(cur, ["feature"], lo, hi, **scope)
        models = economics.unit_costs(cur, ["model", "provider"], lo, hi, **scope)
        versions = economics.prompt_versions(cur, None, tenant, lo, hi, tenants=tenants)
        days = economics.unit_costs(cur, ["day"], lo, hi, **scope)
        margins = economics.margins(cur, f"{first:%Y-%m}", tenant, tenants=tenants)
        alerts = alert_rows(cur, tenant, tenants=tenants)
    finally:
        cur.rollback()

    margin_rows = margins["tenants"]
    has_revenue = any(
        r["plan_fee_usd"] != "0" or r["other_revenue_usd"] != "0" for r in margin_rows
    )
    if has_revenue:
        total = margins["total"]
        headline = {
            **headline,
            **{k: total[k] for k in ("revenue_usd", "margin_usd", "margin_pct")},
        }
    delta = _minus(headline["cost_usd"], previous["cost_usd"])
    spent = {row["day"]: row for row in days}
    daily = []
    for day in (d.isoformat() for d in _days(first, end)):
        row = spent.get(day, {"requests": 0, "cost_usd": "0"})
        daily.append({"day": day, "requests": row["requests"], "cost_usd": row["cost_usd"]})
    month_alerts = [
        row for row in reversed(alerts) if lo <= datetime.fromisoformat(row["created_at"]) < hi
    ]
    counts = Counter({kind: 0 for kind in ALERT_KINDS})
    counts.update(row["kind"] for row in month_alerts)
    return MonthlyReport(
        period=f"{first:%Y-%m}",
        start=first,
        end=end,
        tenant=tenant,
        generated_at=datetime.now(UTC).replace(microsecond=0),
        headline=headline,
        previous={"period": f"{previous_first:%Y-%m}", **previous},
        change={
            "cost_usd": delta,
            "cost_pct": _pct(Decimal(delta), Decimal(previous["cost_usd"])),
            "requests": headline["requests"] - previous["requests"],
        },
        tenants=by_tenant,
        margins=margin_rows if has_revenue else [],
        features=features,
        models=models,
        prompt_versions=versions,
        daily=daily,
        alert_counts=dict(counts),
        alerts=month_alerts,
    )


def _pct(change: Decimal, base: Decimal) -> str | None:
    pct = economics.ratio(change, base, 2, times=100)
    return None if pct is None else money(pct)


def _days(first: date, end: date) -> Iterator[date]:
    day = first
    while day < end:
        yield day
        day += timedelta(days=1)


# --- CSV ---------------------------------------------------------------------------------------

CSV_HEADER = ("period", "section", "dimension", "key", "metric", "value")
NONE_KEY = "(none)"


def csv_rows(report: MonthlyReport) -> Iterator[tuple[str, str, str, str, str, str]]:
    """The report as tidy (long) rows; see to_csv."""

    def rows(section: str, dimension: str, key: str, values: dict[str, Any]) -> Iterator[Any]:
        for metric, value in values.items():
            if value is not None and metric not in dimension.split("/"):
                yield (report.period, section, dimension, _cell(key), metric, _cell(str(value)))

    def key(*parts: Any) -> str:
        return "/".join(NONE_KEY if part is None else str(part) for part in parts)

    yield from rows("headline", "", "", report.headline)
    yield from rows("previous_month", "period", report.previous["period"], report.previous)
    yield from rows("change", "", "", report.change)
    for row in report.tenants:
        yield from rows("by_tenant", "tenant", key(row["tenant"]), row)
    for row in report.margins:
        yield from rows("margin_by_tenant", "tenant", key(row["tenant"]), row)
    for row in report.features:
        yield from rows("by_feature", "feature", key(row["feature"]), row)
    for row in report.models:
        yield from rows("by_model", "provider/model", key(row["provider"], row["model"]), row)
    for row in report.prompt_versions:
        yield from rows(
            "by_prompt_version",
            "feature/prompt_version",
            key(row["feature"], row["prompt_version"]),
            row,
        )
    for row in report.daily:
        yield from rows("daily", "day", row["day"], row)
    for kind, count in report.alert_counts.items():
        yield from rows("alert_counts", "kind", kind, {"alerts": count})
    for alert in report.alerts:
        values = {k: alert[k] for k in ("kind", "tenant", "state", "created_at", "message")}
        values.update(spend_usd=alert["spend_usd"], limit_usd=alert["limit_usd"])
        yield from rows("alerts", "alert_id", alert["id"], values)


def _cell(text: str) -> str:
    """Text a spreadsheet would run as a formula gets a leading quote; numbers stay as they are."""
    if text[:1] in ("=", "+", "@", "-", "\t", "\r"):
        try:
            Decimal(text)
        except ArithmeticError:
            return "'" + text
    return text


def to_csv(report: MonthlyReport) -> str:
    """One tidy CSV, a row per figure: period, section, dimension, key, metric, value.

    Long rather than wide so one pivot table (rows: key, columns: metric, filter: section) or a
    SUMIFS reads any section, and months append below each other. Sections: headline, change
    and previous_month (no dimension), by_tenant, margin_by_tenant, by_feature, by_model
    (provider/model), by_prompt_version (feature/prompt_version), daily (every day of the
    month), alert_counts and alerts (one row per field). Values are exact: money as the API's
    decimal strings (cost_usd of any by_* or daily section sums to the headline cost_usd), counts
    as integers; '(none)' keys calls without that attribute; figures without a value (a ratio
    over 0) are left out; text a spreadsheet would run as a formula starts with a quote."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(csv_rows(report))
    return out.getvalue()
