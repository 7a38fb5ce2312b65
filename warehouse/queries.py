"""Unit-economics queries over the warehouse. Money leaves as Decimal, never float."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb

from warehouse.rollup import fact_sums, in_tenants

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


def money(value: Decimal | None) -> str:
    """A decimal string with no exponent and no trailing zeros ('0' for nothing)."""
    if value is None or value == 0:
        return "0"
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _scoped(
    where: list[str], params: list[object], tenants: frozenset[str] | None, column: str = "tenant"
) -> None:
    """Limit a query to `tenants` (None: every tenant); rows without a tenant are then hidden."""
    if tenants is not None:
        where.append(in_tenants("?", column))
        params.append(sorted(tenants))


def cost_rows(
    cur: duckdb.DuckDBPyConnection,
    group_by: list[str],
    start: datetime | None = None,
    end: datetime | None = None,
    tenant: str | None = None,
    *,
    feature: str | None = None,
    model: str | None = None,
    tenants: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """Cost per group of `group_by`, of `tenants` only (None: every tenant), optionally of one
    tenant, feature or served model."""
    unknown = [g for g in group_by if g not in COST_DIMENSIONS]
    if unknown:
        raise ValueError(f"cannot group by {unknown}; choose from {list(COST_DIMENSIONS)}")
    rows = []
    for sums in fact_sums(
        cur, group_by, start, end, tenant=tenant, feature=feature, model=model, tenants=tenants
    ):
        row = {g: sums[g] for g in group_by}
        for name in ("requests", "input_tokens", "output_tokens", "cache_read_tokens"):
            row[name] = sums[name]
        row["cost_usd"] = money(sums["cost_usd"])
        row["unpriced_requests"] = sums["unpriced_requests"]
        row["failed_requests"] = sums["requests"] - sums["successful_requests"]
        rows.append(row)
    return rows


def alert_rows(
    cur: duckdb.DuckDBPyConnection,
    tenant: str | None = None,
    kind: str | None = None,
    *,
    tenants: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """Alerts, newest first; of `tenants` only (organisation-wide alerts have no tenant and are
    shown only when every tenant is)."""
    where: list[str] = ["TRUE"]
    params: list[object] = []
    _scoped(where, params, tenants)
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
    cur: duckdb.DuckDBPyConnection,
    tenant: str | None = None,
    *,
    tenants: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    where: list[str] = ["(CAST(? AS VARCHAR) IS NULL OR c.tenant = ?)"]
    params: list[object] = [tenant, tenant]
    _scoped(where, params, tenants, column="c.tenant")
    result = cur.execute(
        f"""SELECT k.correction_id AS id, k.event_id, c.tenant, c.provider, c.provider_model,
                   c.event_time, k.previous_price_version_id, k.price_version_id, k.delta_usd,
                   k.cost_usd, k.reason, k.created_at
            FROM corrections k JOIN calls c USING (event_id)
            WHERE {" AND ".join(where)}
            ORDER BY k.created_at DESC, k.event_id""",
        params,
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
    cur: duckdb.DuckDBPyConnection,
    alert_id: str | None = None,
    webhook: str | None = None,
    *,
    tenants: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """Every webhook attempt recorded for alerts of `tenants` (None: every tenant), newest
    first."""
    where: list[str] = ["TRUE"]
    params: list[object] = []
    _scoped(where, params, tenants)
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


def conservation_rows(
    cur: duckdb.DuckDBPyConnection, topic: str | None = None, since: datetime | None = None
) -> dict[str, Any]:
    """The loader's conservation report per topic, partition and hour, and whether every row
    balances (consumed = loaded + quarantined + duplicates)."""
    result = cur.execute(
        """SELECT topic, partition, hour, consumed, loaded, quarantined, duplicates
           FROM conservation
           WHERE (CAST(? AS VARCHAR) IS NULL OR topic = ?)
             AND (CAST(? AS TIMESTAMPTZ) IS NULL OR hour >= ?)
           ORDER BY hour DESC, topic, partition""",
        [topic, topic, since, since],
    )
    columns = [d[0] for d in result.description]
    rows = [dict(zip(columns, values, strict=True)) for values in result.fetchall()]
    totals = {
        k: sum(r[k] for r in rows) for k in ("consumed", "loaded", "quarantined", "duplicates")
    }
    for row in rows:
        row["hour"] = row["hour"].isoformat()
        row["balanced"] = row["consumed"] == row["loaded"] + row["quarantined"] + row["duplicates"]
    return {"rows": rows, "totals": totals, "balanced": all(r["balanced"] for r in rows)}


def quarantine_rows(
    cur: duckdb.DuckDBPyConnection,
    stage: str | None = None,
    topic: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """Quarantined records, newest first, with counts per topic and stage."""
    where = (
        "(CAST(? AS VARCHAR) IS NULL OR stage = ?)"
        " AND (CAST(? AS VARCHAR) IS NULL OR source_topic = ?)"
    )
    params = [stage, stage, topic, topic]
    counts = cur.execute(
        f"""SELECT source_topic AS topic, stage, count(*) AS records FROM quarantine
            WHERE {where} GROUP BY ALL ORDER BY records DESC, topic, stage""",
        params,
    )
    count_rows = [
        dict(zip([d[0] for d in counts.description], v, strict=True)) for v in counts.fetchall()
    ]
    result = cur.execute(
        f"""SELECT source_topic AS topic, source_partition AS partition,
                   source_offset AS offset, stage, reason, payload, quarantined_at
            FROM quarantine WHERE {where}
            ORDER BY quarantined_at DESC, source_offset DESC LIMIT ?""",
        [*params, limit],
    )
    columns = [d[0] for d in result.description]
    rows = [dict(zip(columns, values, strict=True)) for values in result.fetchall()]
    for row in rows:
        row["quarantined_at"] = row["quarantined_at"].isoformat()
    return {"counts": count_rows, "rows": rows}


def warehouse_totals(cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """What a rebuild must reproduce exactly: calls, their effective cost in total and per
    tenant, unpriced calls, corrections, alerts, deliveries and quarantined records."""
    calls, cost, unpriced = cur.execute(
        """SELECT count(*), sum(effective_cost_usd),
                  count(*) FILTER (WHERE effective_price_status = 'unpriced')
           FROM call_costs"""
    ).fetchone() or (0, None, 0)
    per_tenant = cur.execute(
        "SELECT tenant, count(*), sum(effective_cost_usd) FROM call_costs GROUP BY 1 ORDER BY 1"
    ).fetchall()

    def count(table: str) -> int:
        row = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    return {
        "calls": calls,
        "cost_usd": money(cost),
        "unpriced_calls": unpriced,
        "corrections": count("corrections"),
        "alerts": count("alerts"),
        "alert_deliveries": count("alert_deliveries"),
        "quarantined": count("quarantine"),
        "tenants": {t: {"calls": n, "cost_usd": money(c)} for t, n, c in per_tenant},
    }
