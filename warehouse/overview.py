"""The dashboard's headline: spend today and month to date, and where the month is heading.

Every figure is one of the unit-cost answers (`economics.unit_costs`) for the same filters, so
the headline adds up with every table below it. The forecast is the month-to-date spend at its
pace so far, carried to the end of the month (exact Decimal, shown to 6 decimal places).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any

import duckdb
from fastapi import APIRouter, HTTPException, Query

from warehouse.access import ViewerDep
from warehouse.economics import parse_period, unit_costs
from warehouse.query_api import StoreDep, _read

router = APIRouter(prefix="/api")


def overview(
    cur: duckdb.DuckDBPyConnection,
    month: str,
    now: datetime,
    tenant: str | None = None,
    feature: str | None = None,
    model: str | None = None,
    tenants: frozenset[str] | None = None,
) -> dict[str, Any]:
    first, end = parse_period(month)
    if end.toordinal() - first.toordinal() > 31:
        raise ValueError(f"period {month!r} is not a month (2026-11)")
    start = datetime.combine(first, datetime.min.time(), UTC)
    month_end = datetime.combine(end, datetime.min.time(), UTC)
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # Whole UTC days throughout: the daily rollup answers each figure alone.
    to_date_end = min(month_end, today + timedelta(days=1))

    def total(lo: datetime, hi: datetime) -> dict[str, Any]:
        if hi <= lo:
            return {"cost_usd": "0", "requests": 0}
        (row,) = unit_costs(cur, [], lo, hi, tenant, feature, model=model, tenants=tenants)
        return {"cost_usd": row["cost_usd"], "requests": row["requests"]}

    to_date = total(start, to_date_end)
    in_month = start <= now < month_end
    forecast = None
    if in_month:
        elapsed = Decimal(int((now - start).total_seconds()))
        length = Decimal(int((month_end - start).total_seconds()))
        pace = Decimal(to_date["cost_usd"]) * length / elapsed if elapsed > 0 else Decimal(0)
        forecast = format(pace.quantize(Decimal("0.000001"), ROUND_HALF_EVEN), "f")
    return {
        "month": month,
        "start": start.isoformat(),
        "end": month_end.isoformat(),
        "today": total(today, today + timedelta(days=1)) if in_month else None,
        "month_to_date": to_date,
        "forecast_month_usd": forecast if in_month else to_date["cost_usd"],
        "month_complete": now >= month_end,
    }


@router.get("/overview")
async def overview_route(
    store: StoreDep,
    viewer: ViewerDep,
    month: Annotated[str | None, Query(description="YYYY-MM (default: this month)")] = None,
    tenant: str | None = None,
    feature: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    scope = viewer.scope(tenant)
    try:
        found: dict[str, Any] = await asyncio.to_thread(
            _read,
            store,
            overview,
            month or f"{now:%Y-%m}",
            now,
            tenant,
            feature,
            model,
            scope,
        )
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return found
