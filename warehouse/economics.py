"""Unit economics over the warehouse: unit costs, gross margins, weekly movers, prompt versions.

Definitions (the views in economics.sql hold the per-call ones):
- cost: the effective cost (original cost plus correction deltas) of every request.
- request: one metered attempt (a row of `calls`). Failed attempts and fallbacks are requests
  and their cost is real cost; a successful request has outcome `ok`.
- cost per request = cost / requests; cost per successful request = cost / successful requests
  (the failed and retried attempts stay in the numerator: they were paid for); cost per 1,000
  tokens = cost x 1,000 / tokens, every token class counted (input, cache reads and writes,
  output, reasoning).
- error cost: the cost of requests whose outcome is not `ok`.
- fallback cost: the cost of attempts that ran on a fallback target (`fallback_reason` set: an
  earlier target of the same call failed or had its circuit open). The failed attempt that
  caused a fallback is error cost, not fallback cost: an event names why the previous attempt
  failed but not whether a later one followed, as events carry no call id.
- cache savings: what cached input would have cost billed as uncached input, minus what it cost,
  per call at load time; negative when cache writes cost more than reads saved.
- gross margin: revenue (warehouse.revenue) minus cost, per tenant and whole months (UTC).

Rounding: DuckDB divides DECIMALs in DOUBLE, so SQL returns exact sums and counts and every ratio
is taken here, on one aggregate per output row, as an exact fraction rounded half-even: money
ratios to 18 decimal places (the warehouse's scale), percentages and tokens per request to 2.
Money and ratios leave as decimal strings (negative with a leading '-'), None where the
denominator is 0; counts, tokens and latencies as integers. Time filters are [start, end) on
the event time; a time without a zone is UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal, localcontext
from fractions import Fraction
from typing import Any

import duckdb

from warehouse.queries import money
from warehouse.rollup import cost_facts, fact_sums, in_tenants

DIMENSIONS = ("tenant", "feature", "prompt_version", "model", "provider", "day")
"""Cost facts that costs can be grouped by (model: the served model, day: the UTC date)."""
_WIDE = Context(prec=80)


def ratio(
    numerator: Decimal | int, denominator: Decimal | int, places: int = 18, times: int = 1
) -> Decimal | None:
    """numerator x times / denominator, exact, then rounded half-even to `places` decimals;
    None when dividing by 0. (Fractions, not Decimal arithmetic, whose context rounds at 28
    digits while DECIMAL(38, 18) has 38.)"""
    if denominator == 0:
        return None
    exact = Fraction(numerator) * times / Fraction(denominator)
    return Decimal(f"{round(exact * 10**places)}e-{places}")


def _sum(values: Iterable[Decimal]) -> Decimal:
    """An exact sum of DECIMAL(38, 18) amounts."""
    with localcontext(_WIDE):
        return sum(values, Decimal(0))


def _text(value: Decimal | None) -> str | None:
    return None if value is None else money(value)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _dimensions(names: Sequence[str], allow_none: bool = True) -> list[str]:
    unknown = [name for name in names if name not in DIMENSIONS]
    if unknown:
        raise ValueError(
            f"cannot group by {', '.join(unknown)}; choose from {', '.join(DIMENSIONS)}"
        )
    if not names and not allow_none:
        raise ValueError(f"name at least one dimension of {', '.join(DIMENSIONS)}")
    return list(dict.fromkeys(names))


def _filters(
    start: datetime | None = None,
    end: datetime | None = None,
    tenant: str | None = None,
    feature: str | None = None,
    tenants: frozenset[str] | None = None,
) -> tuple[str, list[object]]:
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and start >= end:
        raise ValueError("start must be before end")
    where, params = ["TRUE"], list[object]()
    if tenants is not None:
        where.append(in_tenants("?"))
        params.append(sorted(tenants))
    for clause, value in (
        ("event_time >= ?", start),
        ("event_time < ?", end),
        ("tenant = ?", tenant),
        ("feature = ?", feature),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    return " AND ".join(where), params


def _rows(result: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    columns = [d[0] for d in result.description]
    rows = [dict(zip(columns, values, strict=True)) for values in result.fetchall()]
    for row in rows:
        if isinstance(row.get("day"), date):
            row["day"] = row["day"].isoformat()
    return rows


def unit_costs(
    cur: duckdb.DuckDBPyConnection,
    group_by: Sequence[str],
    start: datetime | None = None,
    end: datetime | None = None,
    tenant: str | None = None,
    feature: str | None = None,
    *,
    model: str | None = None,
    tenants: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """Requests, tokens, cost and the unit costs per group, most expensive first (no group: one
    row of totals); of `tenants` only (None: every tenant), optionally of one tenant, feature
    or served model."""
    dims = _dimensions(group_by)
    _filters(start, end, tenant, feature)  # refuses start >= end
    sums = fact_sums(
        cur,
        dims,
        _utc(start),
        _utc(end),
        tenant=tenant,
        feature=feature,
        model=model,
        tenants=tenants,
    )
    rows = []
    for row in sums:
        cost, tokens = row["cost_usd"], row["input_tokens"] + row["output_tokens"]
        rows.append(
            {
                **{d: row[d] for d in dims},
                "requests": row["requests"],
                "successful_requests": row["successful_requests"],
                "failed_requests": row["requests"] - row["successful_requests"],
                "fallback_requests": row["fallback_requests"],
                "unpriced_requests": row["unpriced_requests"],
                "input_tokens": row["input_tokens"],
                "output_tokens": row["output_tokens"],
                "tokens": tokens,
                "cost_usd": money(cost),
                "cost_per_request_usd": _text(ratio(cost, row["requests"])),
                "cost_per_successful_request_usd": _text(ratio(cost, row["successful_requests"])),
                "cost_per_1k_tokens_usd": _text(ratio(cost, tokens, times=1000)),
                "error_cost_usd": money(row["error_cost_usd"]),
                "fallback_cost_usd": money(row["fallback_cost_usd"]),
                "cache_savings_usd": money(row["cache_savings_usd"]),
            }
        )
    return rows


def parse_period(period: str) -> tuple[date, date]:
    """'2026-11' (a month), '2026-Q4' (a quarter) or '2026' (a year) -> [first day, end day)."""
    text = period.strip().upper()
    try:
        if len(text) == 4:
            year = int(text)
            return date(year, 1, 1), date(year + 1, 1, 1)
        if len(text) == 7 and text[4:6] == "-Q" and text[6] in "1234":
            first = date(int(text[:4]), 3 * int(text[6]) - 2, 1)
            return first, _add_months(first, 3)
        first = datetime.strptime(text, "%Y-%m").date()
        return first, _add_months(first, 1)
    except ValueError:
        raise ValueError(
            f"period {period!r} is not a month (2026-11), a quarter (2026-Q4) or a year (2026)"
        ) from None


def _add_months(first: date, months: int) -> date:
    index = first.month - 1 + months
    return date(first.year + index // 12, index % 12 + 1, 1)


def current_month(now: datetime | None = None) -> str:
    return f"{(now or datetime.now(UTC)):%Y-%m}"


def margins(
    cur: duckdb.DuckDBPyConnection,
    period: str,
    tenant: str | None = None,
    *,
    tenants: frozenset[str] | None = None,
) -> dict[str, Any]:
    """Gross margin per tenant for a period of whole months, least profitable first, and the
    total (of the tenants shown: `tenants`, None for every one). margin_pct = margin / revenue
    x 100 (None without revenue)."""
    first, end = parse_period(period)
    result = cur.execute(
        f"""SELECT * FROM tenant_margins(?, ?)
            WHERE (CAST(? AS VARCHAR) IS NULL OR tenant = ?)
              AND (CAST(? AS VARCHAR[]) IS NULL OR {in_tenants("?")})
            ORDER BY margin_usd, tenant""",
        [first, end, tenant, tenant, *[None if tenants is None else sorted(tenants)] * 2],
    )
    rows = _rows(result)
    total = {
        key: _sum(row[key] for row in rows)
        for key in ("revenue_usd", "plan_fee_usd", "other_revenue_usd", "cost_usd", "margin_usd")
    }
    requests = sum(row["successful_requests"] for row in rows)
    return {
        "period": period,
        "start": first.isoformat(),
        "end": end.isoformat(),
        "tenants": [_margin_row(row) for row in rows],
        "total": _margin_row(
            {
                "tenant": None,
                **total,
                "requests": sum(row["requests"] for row in rows),
                "successful_requests": requests,
            }
        ),
    }


def _margin_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "tenant": row["tenant"],
        "revenue_usd": money(row["revenue_usd"]),
        "plan_fee_usd": money(row["plan_fee_usd"]),
        "other_revenue_usd": money(row["other_revenue_usd"]),
        "cost_usd": money(row["cost_usd"]),
        "margin_usd": money(row["margin_usd"]),
        "margin_pct": _text(ratio(row["margin_usd"], row["revenue_usd"], 2, times=100)),
        "requests": row["requests"],
        "successful_requests": row["successful_requests"],
        "cost_per_successful_request_usd": _text(
            ratio(row["cost_usd"], row["successful_requests"])
        ),
    }


def parse_week(week: str) -> date:
    """'2026-W47' -> the Monday it starts on (ISO 8601 weeks)."""
    try:
        year, number = week.strip().upper().split("-W")
        return date.fromisocalendar(int(year), int(number), 1)
    except ValueError:
        raise ValueError(f"week {week!r} is not an ISO week such as 2026-W47") from None


def last_complete_week(now: datetime | None = None) -> str:
    year, number, _ = ((now or datetime.now(UTC)).date() - timedelta(days=7)).isocalendar()
    return f"{year}-W{number:02d}"


def movers(
    cur: duckdb.DuckDBPyConnection,
    group_by: Sequence[str],
    week: str,
    tenant: str | None = None,
    limit: int = 10,
    *,
    tenants: frozenset[str] | None = None,
) -> dict[str, Any]:
    """Week-over-week movers: cost in the ISO week (Monday 00:00 UTC, 7 days) against the week
    before, largest absolute change first. delta_pct = delta / previous x 100 (None when the
    previous week had no cost)."""
    dims = _dimensions(group_by, allow_none=False)
    if "day" in dims:
        raise ValueError("movers compare weeks: group them by anything but day")
    this_week = datetime.combine(parse_week(week), datetime.min.time(), UTC)
    previous, following = this_week - timedelta(days=7), this_week + timedelta(days=7)
    facts, params = cost_facts(previous, following, tenants)
    params.update(this=this_week, tenant=tenant, limit=limit)
    result = cur.execute(
        f"""
        SELECT {", ".join(dims)},
               coalesce(sum(requests) FILTER (WHERE event_time >= $this), 0) AS requests,
               coalesce(sum(requests) FILTER (WHERE event_time < $this), 0) AS previous_requests,
               coalesce(sum(cost_usd) FILTER (WHERE event_time >= $this), 0) AS cost_usd,
               coalesce(sum(cost_usd) FILTER (WHERE event_time < $this), 0) AS previous_cost_usd,
               coalesce(sum(cost_usd) FILTER (WHERE event_time >= $this), 0)
                   - coalesce(sum(cost_usd) FILTER (WHERE event_time < $this), 0) AS delta_usd
        FROM {facts} AS facts
        WHERE CAST($tenant AS VARCHAR) IS NULL OR tenant = $tenant
        GROUP BY ALL
        ORDER BY abs(delta_usd) DESC, {", ".join(f"{d} NULLS LAST" for d in dims)}
        LIMIT $limit
        """,
        params,
    )
    rows = []
    for row in _rows(result):
        rows.append(
            {
                **{d: row[d] for d in dims},
                "cost_usd": money(row["cost_usd"]),
                "previous_cost_usd": money(row["previous_cost_usd"]),
                "delta_usd": money(row["delta_usd"]),
                "delta_pct": _text(ratio(row["delta_usd"], row["previous_cost_usd"], 2, times=100)),
                "requests": row["requests"],
                "previous_requests": row["previous_requests"],
            }
        )
    return {
        "week": week,
        "start": this_week.isoformat(),
        "previous_start": previous.isoformat(),
        "group_by": dims,
        "rows": rows,
    }


def prompt_versions(
    cur: duckdb.DuckDBPyConnection,
    feature: str | None = None,
    tenant: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    tenants: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """Prompt versions side by side, per feature: requests, error rate, cost and tokens per
    request, and the latency of successful requests (p50 and p95, nearest rank: the smallest
    latency that at least 50 % / 95 % of them do not exceed)."""
    where, params = _filters(start, end, tenant, feature, tenants)
    # Latency does not depend on prices: its percentiles come straight from `calls`, without
    # the corrections join; the sums come from the daily rollup.
    latency = {
        (f, v): quantiles
        for f, v, quantiles in cur.execute(
            f"""SELECT feature, prompt_version, quantile_disc(latency_ms, [0.5, 0.95])
                FROM calls WHERE {where} AND outcome = 'ok' GROUP BY ALL""",
            params,
        ).fetchall()
    }
    facts, named = cost_facts(_utc(start), _utc(end), tenants)
    named.update(tenant=tenant, feature=feature)
    result = cur.execute(
        f"""
        SELECT feature,
               prompt_version,
               sum(requests) AS requests,
               coalesce(sum(requests) FILTER (WHERE outcome = 'ok'), 0) AS successful_requests,
               coalesce(sum(input_uncached_tokens + cache_read_tokens + cache_write_tokens
                            + cache_write_1h_tokens), 0) AS input_tokens,
               coalesce(sum(output_tokens + reasoning_tokens), 0) AS output_tokens,
               coalesce(sum(cost_usd), 0) AS cost_usd
        FROM {facts} AS facts
        WHERE (CAST($tenant AS VARCHAR) IS NULL OR tenant = $tenant)
          AND (CAST($feature AS VARCHAR) IS NULL OR feature = $feature)
        GROUP BY ALL
        HAVING sum(requests) > 0
        ORDER BY feature NULLS LAST, prompt_version NULLS LAST
        """,
        named,
    )
    rows = []
    for row in _rows(result):
        requests, cost = row["requests"], row["cost_usd"]
        p50, p95 = latency.get((row["feature"], row["prompt_version"])) or (None, None)
        rows.append(
            {
                "feature": row["feature"],
                "prompt_version": row["prompt_version"],
                "requests": requests,
                "successful_requests": row["successful_requests"],
                "error_pct": _text(
                    ratio(requests - row["successful_requests"], requests, 2, times=100)
                ),
                "cost_usd": money(cost),
                "cost_per_request_usd": _text(ratio(cost, requests)),
                "cost_per_successful_request_usd": _text(ratio(cost, row["successful_requests"])),
                "input_tokens_per_request": _text(ratio(row["input_tokens"], requests, 2)),
                "output_tokens_per_request": _text(ratio(row["output_tokens"], requests, 2)),
                "latency_p50_ms": p50,
                "latency_p95_ms": p95,
            }
        )
    return rows
