"""The daily rollup (`daily_costs`) and how cost questions read it.

Every cost question sums the same measures over calls. `cost_facts(start, end)` answers them
from the rollup for the whole UTC days inside [start, end) and from `call_costs` only for the
partial days at the edges, with the same columns either way (one row per call there, rows of
sums per day and attribution here), so a query over a month of ten million calls reads a few
hundred thousand rollup rows. Sums are exact DECIMALs, as in `calls`. A key may hold several
rows (partial sums appended by successive loads) until `compact` merges them; readers always sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import duckdb

MEASURES = (
    "requests",
    "unpriced_requests",
    "input_uncached_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "latency_ms_sum",
    "cost_usd",
    "cache_savings_usd",
)


def rollup_select(source: str, cost: str, status: str) -> str:
    """The rollup rows of call rows in `source`; `cost` and `status` name the cost and price
    status expressions (the effective ones when reading call_costs)."""
    return f"""
        SELECT CAST(event_time AT TIME ZONE 'UTC' AS DATE) AS day,
               tenant,
               coalesce(feature, '') AS feature,
               coalesce(prompt_version, '') AS prompt_version,
               requested_model, served_model, provider, endpoint, outcome,
               fallback_reason IS NOT NULL AS fallback,
               count(*) AS requests,
               count(*) FILTER (WHERE {status} = 'unpriced') AS unpriced_requests,
               sum(input_uncached_tokens) AS input_uncached_tokens,
               sum(cache_read_tokens) AS cache_read_tokens,
               sum(cache_write_tokens) AS cache_write_tokens,
               sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
               sum(output_tokens) AS output_tokens,
               sum(reasoning_tokens) AS reasoning_tokens,
               sum(latency_ms) AS latency_ms_sum,
               coalesce(sum({cost}), 0) AS cost_usd,
               coalesce(sum(CAST(cache_savings_usd AS DECIMAL(38, 18))), 0) AS cache_savings_usd
        FROM {source}
        GROUP BY ALL
    """


KEY = (
    "day",
    "tenant",
    "feature",
    "prompt_version",
    "requested_model",
    "served_model",
    "provider",
    "endpoint",
    "outcome",
    "fallback",
)
"""What a rollup row sums over; after `compact` each key has one row per day."""


def append(select: str) -> str:
    """Append `select`'s rollup rows (partial sums) to `daily_costs`. Every reader sums the
    rollup, so a key may hold several rows until `compact` merges them; appending costs a
    fraction of keeping one row per key on every write."""
    return f"INSERT INTO daily_costs BY NAME {select}"


def compact(cur: duckdb.DuckDBPyConnection, days: Sequence[date] | None = None) -> int:
    """Merge the rows of each key into one on `days` (None: every day that has a key with
    several rows), in the caller's transaction; the sums are unchanged. Returns the rows
    removed."""
    keys = ", ".join(KEY)
    if days is None:
        days = [
            r[0]
            for r in cur.execute(
                f"SELECT DISTINCT day FROM (SELECT {keys} FROM daily_costs GROUP BY ALL "
                "HAVING count(*) > 1)"
            ).fetchall()
        ]
    if not days:
        return 0
    params = {"days": sorted(days)}
    where = "WHERE list_contains(CAST($days AS DATE[]), day)"
    sums = ", ".join(f"sum({m}) AS {m}" for m in MEASURES)
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE rollup_merged AS "
        f"SELECT {keys}, {sums} FROM daily_costs {where} GROUP BY ALL",
        params,
    )
    try:
        before = cur.execute(f"DELETE FROM daily_costs {where}", params).fetchone()
        after = cur.execute(
            "INSERT INTO daily_costs BY NAME SELECT * FROM rollup_merged"
        ).fetchone()
    finally:
        cur.execute("DROP TABLE rollup_merged")
    return (before[0] if before else 0) - (after[0] if after else 0)


NEW_CALLS = append(rollup_select("new_calls", "CAST(cost_usd AS DECIMAL(38, 18))", "price_status"))
"""For a registered frame `new_calls` of call rows just inserted (money as decimal strings)."""

CORRECTIONS = append(
    """
    SELECT CAST(c.event_time AT TIME ZONE 'UTC' AS DATE) AS day, c.tenant,
           coalesce(c.feature, '') AS feature, coalesce(c.prompt_version, '') AS prompt_version,
           c.requested_model, c.served_model, c.provider, c.endpoint, c.outcome,
           c.fallback_reason IS NOT NULL AS fallback,
           0 AS requests,
           -count(*) FILTER (WHERE k.previous_price_version_id IS NULL) AS unpriced_requests,
           0 AS input_uncached_tokens, 0 AS cache_read_tokens, 0 AS cache_write_tokens,
           0 AS cache_write_1h_tokens, 0 AS output_tokens, 0 AS reasoning_tokens,
           0 AS latency_ms_sum,
           sum(CAST(k.delta_usd AS DECIMAL(38, 18))) AS cost_usd,
           0 AS cache_savings_usd
    FROM new_corrections k JOIN calls c USING (event_id)
    GROUP BY ALL
    """
)
"""For a registered frame `new_corrections`: each delta moves its call's day; a correction with
no previous price version prices a call that was unpriced."""


def rebuild(cur: duckdb.DuckDBPyConnection) -> None:
    """Recompute the whole rollup from calls and corrections (in the caller's transaction)."""
    cur.execute("DELETE FROM daily_costs")
    cur.execute(
        "INSERT INTO daily_costs BY NAME "
        + rollup_select("call_costs", "effective_cost_usd", "effective_price_status")
    )


_FACT_COLUMNS = """
    {event_time} AS event_time, {day} AS day, tenant,
    {feature} AS feature, {prompt_version} AS prompt_version,
    requested_model, served_model AS model, provider, endpoint, outcome, {fallback} AS fallback,
    {requests} AS requests, {unpriced} AS unpriced_requests,
    input_uncached_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens,
    output_tokens, reasoning_tokens, {latency} AS latency_ms_sum,
    {cost} AS cost_usd, {savings} AS cache_savings_usd
"""

_FROM_ROLLUP = _FACT_COLUMNS.format(
    event_time="timezone('UTC', CAST(day AS TIMESTAMP))",
    day="day",
    feature="nullif(feature, '')",
    prompt_version="nullif(prompt_version, '')",
    fallback="fallback",
    requests="requests",
    unpriced="unpriced_requests",
    latency="latency_ms_sum",
    cost="cost_usd",
    savings="cache_savings_usd",
)
_FROM_CALLS = _FACT_COLUMNS.format(
    event_time="event_time",
    day="CAST(event_time AT TIME ZONE 'UTC' AS DATE)",
    feature="feature",
    prompt_version="prompt_version",
    fallback="fallback_reason IS NOT NULL",
    requests="1",
    unpriced="CAST(effective_price_status = 'unpriced' AS INTEGER)",
    latency="latency_ms",
    cost="effective_cost_usd",
    savings="coalesce(cache_savings_usd, 0)",
)


def in_tenants(param: str, column: str = "tenant") -> str:
    """SQL true for a row of one of the tenants listed in `param` (`?` or `$name`, bound to a
    list of tenant ids); a row without a tenant is in no list."""
    return f"list_contains(CAST({param} AS VARCHAR[]), {column})"


_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def cost_facts(
    start: datetime | None, end: datetime | None, tenants: frozenset[str] | None = None
) -> tuple[str, dict[str, Any]]:
    """A subquery of cost facts in [start, end) (None: unbounded) of `tenants` (None: every
    tenant) and its named parameters. Both sources are filtered by tenant, so no caller can
    forget the scope of one of them.

    Columns: event_time (a rollup row's is its day's midnight), day, tenant, feature,
    prompt_version, requested_model, model (served), provider, endpoint, outcome, fallback, and
    the sums requests, unpriced_requests, the token classes, latency_ms_sum, cost_usd,
    cache_savings_usd."""
    lo = (start or _EARLIEST).astimezone(UTC)
    hi = (end or _LATEST).astimezone(UTC)
    first = lo.date() if lo == _midnight(lo.date()) else lo.date() + timedelta(days=1)
    last = hi.date()
    params: dict[str, Any] = {}
    scope = ""
    if tenants is not None:
        scope = f" AND {in_tenants('$tenants')}"
        params["tenants"] = sorted(tenants)
    parts = []
    if first < last:
        parts.append(
            f"SELECT {_FROM_ROLLUP} FROM daily_costs "
            f"WHERE day >= $first_day AND day < $end_day{scope}"
        )
        params.update(first_day=first, end_day=last)
        edges = [(lo, _midnight(first)), (_midnight(last), hi)]
    else:  # no whole day inside: every fact comes from the calls
        edges = [(lo, hi)]
    for n, (edge_lo, edge_hi) in enumerate(edges):
        if edge_lo < edge_hi:
            parts.append(
                f"SELECT {_FROM_CALLS} FROM call_costs "
                f"WHERE event_time >= $lo{n} AND event_time < $hi{n}{scope}"
            )
            params.update({f"lo{n}": edge_lo, f"hi{n}": edge_hi})
    if not parts:  # an empty range: the columns, no rows
        parts.append(f"SELECT {_FROM_ROLLUP} FROM daily_costs WHERE false{scope}")
    return "(" + "\nUNION ALL\n".join(parts) + ")", params


def fact_sums(
    cur: duckdb.DuckDBPyConnection,
    dimensions: Sequence[str],
    start: datetime | None,
    end: datetime | None,
    *,
    tenant: str | None = None,
    feature: str | None = None,
    model: str | None = None,
    tenants: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """The sums every cost answer is made of, per group of `dimensions` (columns of the facts:
    tenant, feature, prompt_version, model, requested_model, provider, endpoint, outcome, day),
    most expensive first; no dimensions: one row of totals. Counts are ints (0 when empty),
    money is Decimal.

    A request is one attempt (a row of `calls`): failed attempts and fallbacks cost what they
    cost. Error cost is the cost of attempts whose outcome is not ok; fallback cost is the cost
    of attempts that ran on a fallback target. The failed attempt before a fallback is error
    cost: an event says why the previous attempt failed, not whether a later one followed
    (events carry no call id). Cache savings are as priced at load time (corrections re-price
    cost, not savings)."""
    facts, params = cost_facts(start, end, tenants)
    params.update(tenant=tenant, feature=feature, model=model)
    result = cur.execute(
        f"""
        SELECT {"".join(f"{d}, " for d in dimensions)}
               coalesce(sum(requests), 0) AS requests,
               coalesce(sum(requests) FILTER (WHERE outcome = 'ok'), 0) AS successful_requests,
               coalesce(sum(requests) FILTER (WHERE fallback), 0) AS fallback_requests,
               coalesce(sum(unpriced_requests), 0) AS unpriced_requests,
               coalesce(sum(input_uncached_tokens + cache_read_tokens + cache_write_tokens
                            + cache_write_1h_tokens), 0) AS input_tokens,
               coalesce(sum(output_tokens + reasoning_tokens), 0) AS output_tokens,
               coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,
               coalesce(sum(cost_usd), 0) AS cost_usd,
               coalesce(sum(cost_usd) FILTER (WHERE outcome <> 'ok'), 0) AS error_cost_usd,
               coalesce(sum(cost_usd) FILTER (WHERE fallback), 0) AS fallback_cost_usd,
               coalesce(sum(cache_savings_usd), 0) AS cache_savings_usd
        FROM {facts} AS facts
        WHERE (CAST($tenant AS VARCHAR) IS NULL OR tenant = $tenant)
          AND (CAST($feature AS VARCHAR) IS NULL OR feature = $feature)
          AND (CAST($model AS VARCHAR) IS NULL OR model = $model)
        {"GROUP BY ALL HAVING sum(requests) > 0" if dimensions else ""}
        ORDER BY cost_usd DESC{"".join(f", {d} NULLS LAST" for d in dimensions)}
        """,
        params,
    )
    columns = [d[0] for d in result.description]
    rows = []
    for values in result.fetchall():
        row = dict(zip(columns, values, strict=True))
        for name in _COUNTS:
            row[name] = int(row[name])
        if isinstance(row.get("day"), date):
            row["day"] = row["day"].isoformat()
        rows.append(row)
    return rows


_COUNTS = (
    "requests",
    "successful_requests",
    "fallback_requests",
    "unpriced_requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
)
