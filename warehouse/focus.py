"""FOCUS 1.2 cost-and-usage export of the warehouse (`tokenops export focus`).

One row per UTC day x tenant x feature x prompt version x provider x model x token class x price
version x unit price: set-based SQL over `calls` and `corrections`, never a row per call. What the
FinOps Foundation's validator (focus-validator 2.2.1, `--validate-version 1.2`) is given:

- **Charges.** ChargeCategory "Usage", ChargeFrequency "Usage-Based", PricingCategory "Standard",
  ChargePeriodStart/End the UTC day of the calls, BillingPeriodStart/End its calendar month.
- **Who.** ProviderName = InvoiceIssuerName = the provider tokenops called (OpenAI, Anthropic,
  DeepSeek...); PublisherName the model's maker (the `maker/` prefix of a routed model such as
  `anthropic/claude-3.5-sonnet` on OpenRouter, else the provider); ServiceName "<provider> API",
  ServiceCategory "AI and Machine Learning", ServiceSubcategory "Generative AI";
  BillingAccountId/Name the provider account tokenops uses (the provider id / its name);
  SubAccountId/Name the tenant.
- **What.** SkuId `provider/model/token class`; SkuPriceId `price version id/token class` (a
  tiered or time-windowed version has one SkuPriceId and a row per rate it charged). Token
  classes are those of ingest.usage_event.TokenCounts plus `request` (a per-request fee).
  ConsumedQuantity/Unit: tokens / "Tokens" (calls / "Requests" for fees); PricingQuantity/Unit:
  millions of tokens / "1000000 Tokens", the unit providers publish prices in.
- **Money.** BillingCurrency is always USD: every call's `cost_by_class` is in USD (a price in
  another currency was converted at its event-day rate, kept as `x_PricingCurrency` and
  `x_FxRate`). BilledCost = EffectiveCost = ListCost = ContractedCost: tokenops records the one
  price that applied to each call (a negotiated price is its list and contracted price alike).
  ListUnitPrice = ContractedUnitPrice is the per-class cost per unit of each call, computed in
  integer atto-dollars and grouped on, so unit price x PricingQuantity = cost exactly for USD
  prices and within half an atto-dollar per unit (the FX rounding) for converted ones. Amounts
  are DECIMAL(38, 18): exact decimal strings in CSV, DECIMAL(38, 18) in Parquet.
- **Corrections.** A correction (re-pricing after a price version was added) is its own rows:
  ChargeClass "Correction", the ChargePeriod of the corrected calls, per token class the new
  breakdown minus the breakdown it replaced (the call's, or the previous correction's), no
  quantities or unit prices (FOCUS allows that on corrections), `x_CorrectedAt` when it was
  written. A period's export therefore restates the period as the warehouse knows it now: its
  BilledCost adds up to the warehouse's effective cost (original + corrections) of the period's
  calls, to the last atto-dollar (checked on every export: one that does not add up fails
  instead of writing the file), and an export taken again after a correction differs only by the
  correction rows.
- **Unpriced calls** (no price for their model at their time) are not in the file: a cost row
  needs a cost, and FOCUS forbids a 0 placeholder. They are counted in `FocusExport.unpriced_calls`
  (the API's `X-Tokenops-Unpriced-Calls` header, printed by the CLI). A call priced later by a
  correction appears through its correction rows.
- **Custom columns** (after the FOCUS ones): x_Tenant, x_Feature, x_PromptVersion, x_TokenClass,
  x_Model (served model), x_ProviderModel, x_PriceVersionId, x_PreviousPriceVersionId
  (corrections), x_PricingCurrency, x_FxRate (USD per unit of it), x_Calls, x_CorrectedAt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

import duckdb

from warehouse.rollup import in_tenants
from warehouse.store import COST_CLASSES, TOKEN_COLUMNS, WarehouseError

FOCUS_VERSION = "1.2"
Format = Literal["csv", "parquet"]
MEDIA_TYPES: dict[str, str] = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}

PROVIDER_NAMES = {
    "alibaba": "Alibaba Cloud",
    "anthropic": "Anthropic",
    "deepseek": "DeepSeek",
    "google": "Google",
    "minimax": "MiniMax",
    "mistral": "Mistral AI",
    "moonshotai": "Moonshot AI",
    "openai": "OpenAI",
    "openrouter": "OpenRouter",
    "zai": "Z.ai",
    "zhipu": "Zhipu AI",
}
"""Display names for provider ids; an id not listed is shown as it is."""

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")


class FocusPeriodError(WarehouseError, ValueError):
    """The period is not `YYYY-MM` or `YYYY-MM-DD..YYYY-MM-DD` (a terminal, caller error)."""


@dataclass(frozen=True)
class BillingPeriod:
    """[start, end) in UTC; `label` is what the user asked for (and names the file)."""

    label: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class FocusExport:
    path: Path
    rows: int
    billed_cost: Decimal
    """Sum of BilledCost in the file (USD)."""
    unpriced_calls: int
    """Calls of the period without a price: not in the file."""


def parse_period(text: str) -> BillingPeriod:
    """A calendar month `YYYY-MM`, or the days `YYYY-MM-DD..YYYY-MM-DD` (both included)."""
    text = text.strip()
    try:
        if month := _MONTH.match(text):
            first = date(int(month[1]), int(month[2]), 1)
            following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
            return BillingPeriod(text, _midnight(first), _midnight(following))
        if days := _RANGE.match(text):
            first, last = date.fromisoformat(days[1]), date.fromisoformat(days[2])
            if last >= first:
                return BillingPeriod(text, _midnight(first), _midnight(last + timedelta(days=1)))
    except ValueError:
        pass
    raise FocusPeriodError(
        f"period {text!r} is not a month (YYYY-MM, e.g. 2026-11) or a range of days "
        "(YYYY-MM-DD..YYYY-MM-DD, first day not after the last)"
    )


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _display(column: str) -> str:
    cases = " ".join(f"WHEN {_text(k)} THEN {_text(v)}" for k, v in PROVIDER_NAMES.items())
    return f"CASE {column} {cases} ELSE {column} END"


_QUANTITY = {**TOKEN_COLUMNS, "request": "1"}
_LABELS = {name: name.replace("_", " ") + " tokens" for name in TOKEN_COLUMNS}
_LABELS.update(input_uncached="uncached input tokens", cache_write="cache write (5 min) tokens")
_LABELS["request"] = "per-request fee"


def _rate(cost: str, quantity: str) -> str:
    """The line's unit rate in integer atto-USD, rounded half up (exact for a USD price).

    DECIMAL(38, 18) arithmetic is 128-bit and slow, so a line under $1 (nearly all) takes its
    atto-units from the text of its DECIMAL(18, 18) value, which always has its 18 decimals
    (".000150000000000000"), without the point; dearer lines from its integer and fractional
    parts."""
    small = f"CAST(replace(CAST(CAST({cost} AS DECIMAL(18, 18)) AS VARCHAR), '.', '') AS BIGINT)"
    large = (
        f"(CAST(trunc({cost}) AS HUGEINT) * 1000000000000000000"
        f" + CAST(({cost} - trunc({cost})) * 1000000000000000000 AS HUGEINT))"
    )
    atto = f"CASE WHEN {cost} < 1 THEN {small} ELSE {large} END"
    return f"(2 * {atto} + {quantity}) // (2 * {quantity})"


def _lines(breakdown: str) -> str:
    """A call's lines to unnest: (token class, cost, quantity) per class of its breakdown."""
    items = (
        f"{{'token_class': '{name}', 'cost': {breakdown}.{name},"
        f" 'quantity': CAST({_QUANTITY[name]} AS BIGINT)}}"
        for name in COST_CLASSES
    )
    return f"[{', '.join(items)}]"


def _pairs(new: str, old: str) -> str:
    """A correction's lines to unnest: (token class, new cost, replaced cost) per class."""
    items = (
        f"{{'token_class': '{name}', 'new': {new}.{name}, 'old': {old}.{name}}}"
        for name in COST_CLASSES
    )
    return f"[{', '.join(items)}]"


_DAY = "epoch_us(c.event_time) // 86400000000"
_SCOPE = f"(CAST($tenants AS VARCHAR[]) IS NULL OR {in_tenants('$tenants', 'c.tenant')})"
"""The tenants exported: `$tenants`, a list of tenant ids, or NULL for every tenant."""
"""The UTC day as a day number: integer arithmetic, no time zone conversion per call."""
_DIMENSIONS = (
    "day, tenant, feature, prompt_version, provider, provider_model, served_model, token_class, "
    "price_version_id"
)

# Original charges of priced calls, with each line's unit rate (atto-USD per token or request,
# rounded half up: exact unless an FX conversion rounded the line).
_USAGE = f"""
    WITH priced AS (
        SELECT {_DAY} AS day, c.tenant, c.feature, c.prompt_version, c.provider,
               c.provider_model, c.served_model, c.price_version_id, c.billing_currency,
               c.fx_rate, {", ".join(f"c.{col}" for col in TOKEN_COLUMNS.values())},
               c.cost_by_class AS breakdown
        FROM calls c
        WHERE c.price_status = 'priced' AND c.event_time >= $start AND c.event_time < $end
              AND {_SCOPE}
    ), lines AS (
        SELECT day, tenant, feature, prompt_version, provider, provider_model, served_model,
               price_version_id, billing_currency, fx_rate, line.token_class, line.cost,
               line.quantity
        FROM (SELECT *, unnest({_lines("breakdown")}) AS line FROM priced)
        WHERE line.cost IS NOT NULL AND line.quantity > 0
    )
    SELECT {_DIMENSIONS}, billing_currency, fx_rate,
           {_rate("cost", "quantity")} AS rate_atto,
           sum(cost) AS cost, sum(quantity) AS quantity, count(*) AS calls,
           CAST(NULL AS VARCHAR) AS previous_price_version_id,
           CAST(NULL AS TIMESTAMP) AS corrected_at
    FROM lines
    GROUP BY ALL
"""

# Corrections of the period's calls, per token class: the new breakdown minus the one it
# replaced (the previous correction's, else the call's own; none for a call that was unpriced).
_CORRECTIONS = f"""
    WITH corrected AS (
        SELECT {_DAY} AS day, c.tenant, c.feature, c.prompt_version, c.provider,
               c.provider_model, c.served_model, k.price_version_id,
               k.previous_price_version_id, k.created_at AT TIME ZONE 'UTC' AS corrected_at,
               k.cost_by_class AS new,
               coalesce(
                   lag(k.cost_by_class) OVER (
                       PARTITION BY k.event_id ORDER BY k.created_at, k.correction_id
                   ),
                   c.cost_by_class
               ) AS old
        FROM corrections k JOIN calls c USING (event_id)
        WHERE c.event_time >= $start AND c.event_time < $end AND {_SCOPE}
    ), lines AS (
        SELECT day, tenant, feature, prompt_version, provider, provider_model, served_model,
               price_version_id, previous_price_version_id, corrected_at, line.token_class,
               coalesce(line.new, 0) - coalesce(line.old, 0) AS cost
        FROM (SELECT *, unnest({_pairs("new", "old")}) AS line FROM corrected)
    )
    SELECT {_DIMENSIONS}, CAST(NULL AS VARCHAR) AS billing_currency,
           CAST(NULL AS DECIMAL(38, 18)) AS fx_rate, CAST(NULL AS HUGEINT) AS rate_atto,
           sum(cost) AS cost, CAST(NULL AS HUGEINT) AS quantity, count(*) AS calls,
           previous_price_version_id, corrected_at
    FROM lines
    WHERE cost <> 0
    GROUP BY ALL
    HAVING sum(cost) <> 0
"""

_PROVIDER = _display("provider")
_MAKER = _display(
    "CASE WHEN contains(provider_model, '/') THEN split_part(provider_model, '/', 1) END"
)
_TOKENS = "token_class <> 'request'"
_LABEL = (
    "CASE token_class " + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in _LABELS.items()) + " END"
)
_UNIT_PRICE = (
    f"CAST(CAST(rate_atto AS DECIMAL(38, 0)) * CASE WHEN {_TOKENS}"
    " THEN CAST(0.000000000001 AS DECIMAL(38, 18))"
    " ELSE CAST(0.000000000000000001 AS DECIMAL(38, 18)) END AS DECIMAL(38, 18))"
)
_MONEY = "CAST(cost AS DECIMAL(38, 18))"

_FOCUS = f"""
    SELECT
        {_MONEY} AS BilledCost,
        {_MONEY} AS EffectiveCost,
        {_MONEY} AS ListCost,
        {_MONEY} AS ContractedCost,
        'USD' AS BillingCurrency,
        CAST(NULL AS VARCHAR) AS InvoiceId,
        provider AS BillingAccountId,
        {_PROVIDER} AS BillingAccountName,
        tenant AS SubAccountId,
        tenant AS SubAccountName,
        date_trunc('month', day) AS BillingPeriodStart,
        date_trunc('month', day) + INTERVAL 1 MONTH AS BillingPeriodEnd,
        day AS ChargePeriodStart,
        day + INTERVAL 1 DAY AS ChargePeriodEnd,
        'Usage' AS ChargeCategory,
        CASE WHEN corrected_at IS NOT NULL THEN 'Correction' END AS ChargeClass,
        CASE WHEN corrected_at IS NULL THEN '' ELSE 're-priced ' END
            || provider_model || ' ' || {_LABEL} AS ChargeDescription,
        'Usage-Based' AS ChargeFrequency,
        'Standard' AS PricingCategory,
        CAST(quantity AS DECIMAL(38, 0)) AS ConsumedQuantity,
        CASE WHEN quantity IS NULL THEN NULL WHEN {_TOKENS} THEN 'Tokens' ELSE 'Requests' END
            AS ConsumedUnit,
        CAST(CAST(quantity AS DECIMAL(38, 0)) * CASE WHEN {_TOKENS}
            THEN CAST(0.000001 AS DECIMAL(38, 6)) ELSE CAST(1 AS DECIMAL(38, 6)) END
            AS DECIMAL(38, 6)) AS PricingQuantity,
        CASE WHEN quantity IS NULL THEN NULL WHEN {_TOKENS} THEN '1000000 Tokens'
            ELSE 'Requests' END AS PricingUnit,
        {_UNIT_PRICE} AS ListUnitPrice,
        {_UNIT_PRICE} AS ContractedUnitPrice,
        {_PROVIDER} AS ProviderName,
        coalesce({_MAKER}, {_PROVIDER}) AS PublisherName,
        {_PROVIDER} AS InvoiceIssuerName,
        {_PROVIDER} || ' API' AS ServiceName,
        'AI and Machine Learning' AS ServiceCategory,
        'Generative AI' AS ServiceSubcategory,
        provider || '/' || provider_model || '/' || token_class AS SkuId,
        price_version_id || '/' || token_class AS SkuPriceId,
        tenant AS x_Tenant,
        feature AS x_Feature,
        prompt_version AS x_PromptVersion,
        token_class AS x_TokenClass,
        served_model AS x_Model,
        provider_model AS x_ProviderModel,
        price_version_id AS x_PriceVersionId,
        previous_price_version_id AS x_PreviousPriceVersionId,
        billing_currency AS x_PricingCurrency,
        CAST(fx_rate AS DECIMAL(38, 18)) AS x_FxRate,
        calls AS x_Calls,
        corrected_at AS x_CorrectedAt
    FROM (
        SELECT * REPLACE (make_timestamp(day * 86400000000) AS day)
        FROM (({_USAGE}) UNION ALL BY NAME ({_CORRECTIONS}))
    )
    ORDER BY ChargePeriodStart, x_Tenant, ProviderName, x_ProviderModel, x_Feature NULLS FIRST,
             x_PromptVersion NULLS FIRST, ChargeClass NULLS FIRST, x_CorrectedAt NULLS FIRST,
             x_TokenClass, x_PriceVersionId, ListUnitPrice
"""

_ROWS = "focus_export_rows"


def _csv_value(column: str, kind: str) -> str:
    """Exact text for CSV: decimals without trailing zeros, date/times as YYYY-MM-DDTHH:mm:ssZ."""
    if kind.startswith("DECIMAL"):
        text = f"CAST({column} AS VARCHAR)"
        trimmed = f"rtrim(rtrim({text}, '0'), '.')"
        return f"CASE WHEN contains({text}, '.') THEN {trimmed} ELSE {text} END"
    if kind == "TIMESTAMP":
        return f"strftime({column}, '%Y-%m-%dT%H:%M:%SZ')"
    return column


def _parquet_value(column: str, kind: str) -> str:
    return f"{column} AT TIME ZONE 'UTC'" if kind == "TIMESTAMP" else column


def export_focus(
    cur: duckdb.DuckDBPyConnection,
    period: BillingPeriod,
    fmt: Format,
    path: Path,
    tenants: frozenset[str] | None = None,
) -> FocusExport:
    """Write the period's FOCUS rows of `tenants` (None: every tenant) to `path` from one
    consistent snapshot of the warehouse (read-only: the rows are staged in a temporary table
    that the closing rollback drops). The total is checked against the same tenants' cost."""
    params = {
        "start": period.start,
        "end": period.end,
        "tenants": None if tenants is None else sorted(tenants),
    }
    cur.execute("BEGIN TRANSACTION")
    try:
        cur.execute(f"CREATE TEMP TABLE {_ROWS} AS {_FOCUS}", params)
        found = cur.execute(
            f"SELECT count(*), coalesce(sum(BilledCost), 0) FROM {_ROWS}"
        ).fetchone()
        warehouse = cur.execute(
            """SELECT coalesce(sum(effective_cost_usd), 0),
                      count(*) FILTER (WHERE effective_price_status = 'unpriced')
               FROM call_costs c
               WHERE c.event_time >= $start AND c.event_time < $end AND """
            + _SCOPE,
            params,
        ).fetchone()
        assert found is not None and warehouse is not None
        if found[1] != warehouse[0]:
            raise WarehouseError(
                f"the FOCUS rows of {period.label} add up to {found[1]} USD but the warehouse "
                f"holds {warehouse[0]} USD for the period: a priced call without its breakdown "
                "by token class? No file was written"
            )
        columns = cur.execute(f"DESCRIBE {_ROWS}").fetchall()
        value = _csv_value if fmt == "csv" else _parquet_value
        select = ", ".join(f"{value(name, kind)} AS {name}" for name, kind, *_ in columns)
        options = "FORMAT CSV, HEADER" if fmt == "csv" else "FORMAT PARQUET, COMPRESSION ZSTD"
        cur.execute(f"COPY (SELECT {select} FROM {_ROWS}) TO {_text(str(path))} ({options})")
    finally:
        cur.execute("ROLLBACK")
    return FocusExport(path, int(found[0]), found[1], int(warehouse[1]))
