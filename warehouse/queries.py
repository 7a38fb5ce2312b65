"""Unit-economics queries over the warehouse. Money leaves as Decimal, never float."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb

COST_DIMENSIONS = (
    "tenant",
    "feature",
    "prompt_version",
    "model",
    "requested_model",
    "provider",
    "endpoint",
    "outcome",
    "day",
)
_DIMENSION_SQL = {
    "model": "served_model",
    "day": "CAST(date_trunc('day', event_time AT TIME ZONE 'UTC') AS DATE)",
}


def money(value: Decimal | None) -> str:
    """A decimal string with no exponent and no trailing zeros ('0' for nothing)."""
    if value is None or value == 0:
        return "0"
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def cost_rows(
    cur: duckdb.DuckDBPyConnection,
    group_by: list[str],
    start: datetime | None = None,
    end: datetime | None = None,
    tenant: str | None = None,
) -> list[dict[str, Any]]:
    unknown = [g for g in group_by if g not in COST_DIMENSIONS]
    if unknown:
        raise ValueError(f"cannot group by {unknown}; choose from {list(COST_DIMENSIONS)}")
    select = [f"{_DIMENSION_SQL.get(g, g)} AS {g}" for g in group_by]
    where: list[str] = ["TRUE"]
    params: list[object] = []
    if start is not None:
        where.append("event_time >= ?")
        params.append(start)
    if end is not None:
        where.append("event_time < ?")
        params.append(end)
    if tenant is not None:
        where.append("tenant = ?")
        params.append(tenant)
    sql = f"""
        SELECT {", ".join([*select, ""])}
               count(*) AS requests,
               sum(input_uncached_tokens + cache_read_tokens + cache_write_tokens
                   + cache_write_1h_tokens) AS input_tokens,
               sum(output_tokens + reasoning_tokens) AS output_tokens,
               sum(cache_read_tokens) AS cache_read_tokens,
               sum(effective_cost_usd) AS cost_usd,
               count(*) FILTER (WHERE effective_price_status = 'unpriced') AS unpriced_requests,
               count(*) FILTER (WHERE outcome <> 'ok') AS failed_requests
        FROM call_costs
        WHERE {" AND ".join(where)}
        {"GROUP BY ALL" if group_by else ""}
        ORDER BY cost_usd DESC NULLS LAST{"".join(f", {g}" for g in group_by)}
    """
    result = cur.execute(sql, params)
    columns = [d[0] for d in result.description]
    rows = []
    for values in result.fetchall():
        row = dict(zip(columns, values, strict=True))
        row["cost_usd"] = money(row["cost_usd"])
        if "day" in row and row["day"] is not None:
            row["day"] = row["day"].isoformat()
        rows.append(row)
    return rows


def alert_rows(
    cur: duckdb.DuckDBPyConnection, tenant: str | None = None, kind: str | None = None
) -> list[dict[str, Any]]:
    where: list[str] = ["TRUE"]
    params: list[object] = []
    if tenant is not None:
        where.append("tenant = ?")
        params.append(tenant)
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    result = cur.execute(
        f"""SELECT alert_id AS id, kind, tenant, scope, state, period, period_start, threshold,
                   limit_usd, spend_usd, created_at, trigger_event_id, message, budget_id,
                   explanation
            FROM alerts WHERE {" AND ".join(where)} ORDER BY created_at DESC""",
        params,
    )
    columns = [d[0] for d in result.description]
    rows = []
    for values in result.fetchall():
        row = dict(zip(columns, values, strict=True))
        row["scope"] = json.loads(row["scope"])
        row["explanation"] = json.loads(row["explanation"]) if row["explanation"] else None
        for key in ("limit_usd", "spend_usd"):
            row[key] = money(row[key]) if row[key] is not None else None
        row["threshold"] = money(row["threshold"]) if row["threshold"] is not None else None
        for key in ("period_start", "created_at"):
            row[key] = row[key].isoformat()
        rows.append(row)
    return rows


def correction_rows(
    cur: duckdb.DuckDBPyConnection, tenant: str | None = None
) -> list[dict[str, Any]]:
    result = cur.execute(
        """SELECT k.correction_id AS id, k.event_id, c.tenant, c.provider, c.provider_model,
                  c.event_time, k.previous_price_version_id, k.price_version_id, k.delta_usd,
                  k.cost_usd, k.reason, k.created_at
           FROM corrections k JOIN calls c USING (event_id)
           WHERE (CAST(? AS VARCHAR) IS NULL OR c.tenant = ?)
           ORDER BY k.created_at DESC, k.event_id""",
        [tenant, tenant],
    )
    columns = [d[0] for d in result.description]
    rows = []
    for values in result.fetchall():
        row = dict(zip(columns, values, strict=True))
        row["delta_usd"] = (
            money(row["delta_usd"]) if row["delta_usd"] >= 0 else "-" + money(-row["delta_usd"])
        )
        row["cost_usd"] = money(row["cost_usd"])
        for key in ("event_time", "created_at"):
            row[key] = row[key].isoformat()
        rows.append(row)
    return rows


def delivery_rows(
    cur: duckdb.DuckDBPyConnection, alert_id: str | None = None, webhook: str | None = None
) -> list[dict[str, Any]]:
    """Every webhook attempt recorded for alerts, newest first."""
    where: list[str] = ["TRUE"]
    params: list[object] = []
    if alert_id is not None:
        where.append("alert_id = ?")
        params.append(alert_id)
    if webhook is not None:
        where.append("webhook = ?")
        params.append(webhook)
    result = cur.execute(
        f"""SELECT alert_id, webhook, tenant, attempt, status, http_status, error, delivered_at,
                   latency_ms
            FROM alert_deliveries WHERE {" AND ".join(where)}
            ORDER BY delivered_at DESC, attempt DESC LIMIT 1000""",
        params,
    )
    columns = [d[0] for d in result.description]
    rows = [dict(zip(columns, values, strict=True)) for values in result.fetchall()]
    for row in rows:
        row["delivered_at"] = row["delivered_at"].isoformat()
    return rows
