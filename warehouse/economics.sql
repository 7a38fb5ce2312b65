-- Unit economics: revenue per tenant and the views cost questions are asked of. Run after
-- schema.sql at every start, so every statement is idempotent. Every cost here is the effective
-- cost (call_costs: the original cost plus its correction deltas). DuckDB divides DECIMALs in
-- DOUBLE, so nothing here divides: ratios are taken, exactly, in warehouse.economics.

-- What tenants pay, for gross margins: plan fees, billed usage, one-off fees, credits (negative).
-- A line lies inside one calendar month; warehouse.revenue spreads longer periods over their
-- months by day. `source` says where lines came from ('config': revenue.yaml, replaced whole at
-- every start).
CREATE TABLE IF NOT EXISTS revenue (
    line_id       VARCHAR PRIMARY KEY,
    tenant        VARCHAR NOT NULL,
    kind          VARCHAR NOT NULL CHECK (kind IN ('plan_fee', 'usage', 'one_off', 'credit')),
    amount_usd    DECIMAL(38, 18) NOT NULL,
    period_start  DATE NOT NULL,
    period_end    DATE NOT NULL,
    description   VARCHAR,
    source        VARCHAR NOT NULL,
    loaded_at     TIMESTAMPTZ NOT NULL,
    CHECK (period_start <= period_end
           AND date_trunc('month', period_start) = date_trunc('month', period_end))
);

-- One row per call with its economics. A request is one attempt (a row of `calls`): failed
-- attempts and fallbacks are requests that cost what they cost. fallback_cost_usd is the cost of
-- an attempt that ran on a fallback target (an earlier target of the same call failed or had its
-- circuit open); the failed attempt before it is error cost, because an event says why the
-- previous attempt failed but not whether a later one followed (events carry no call id).
-- cache_savings_usd is as priced at load time (corrections re-price cost, not savings).
CREATE OR REPLACE VIEW call_economics AS
SELECT event_id,
       event_time,
       CAST(event_time AT TIME ZONE 'UTC' AS DATE) AS day,
       tenant,
       feature,
       prompt_version,
       served_model AS model,
       provider,
       attempt,
       fallback_reason,
       outcome,
       outcome = 'ok' AS succeeded,
       latency_ms,
       input_uncached_tokens + cache_read_tokens + cache_write_tokens + cache_write_1h_tokens
           AS input_tokens,
       output_tokens + reasoning_tokens AS output_tokens,
       effective_price_status AS price_status,
       effective_cost_usd AS cost_usd,
       CASE WHEN outcome <> 'ok' THEN effective_cost_usd ELSE 0 END AS error_cost_usd,
       CASE WHEN fallback_reason IS NOT NULL THEN effective_cost_usd ELSE 0 END
           AS fallback_cost_usd,
       coalesce(cache_savings_usd, 0) AS cache_savings_usd
FROM call_costs;

-- Revenue per tenant and calendar month, by kind.
CREATE OR REPLACE VIEW monthly_revenue AS
SELECT tenant,
       CAST(date_trunc('month', period_start) AS DATE) AS month,
       sum(amount_usd) AS revenue_usd,
       coalesce(sum(amount_usd) FILTER (WHERE kind = 'plan_fee'), 0) AS plan_fee_usd,
       coalesce(sum(amount_usd) FILTER (WHERE kind <> 'plan_fee'), 0) AS other_revenue_usd
FROM revenue
GROUP BY ALL;

-- Gross margin per tenant over the UTC days [first_day, end_day), whole months: the revenue of
-- the lines in the period minus the cost of every request in it (a line counts whole in the month
-- it lies in). A tenant with cost and no revenue, or revenue and no calls, still has a row. A
-- macro, not a view, so the period bounds reach the scan of calls (and its zone maps).
CREATE OR REPLACE MACRO tenant_margins(first_day, end_day) AS TABLE
WITH billed AS (
    SELECT tenant,
           sum(amount_usd) AS revenue_usd,
           coalesce(sum(amount_usd) FILTER (WHERE kind = 'plan_fee'), 0) AS plan_fee_usd
    FROM revenue
    WHERE period_start >= first_day AND period_start < end_day
    GROUP BY tenant
), spent AS (
    -- whole UTC days: the daily rollup holds every call of them, corrections included
    SELECT tenant,
           sum(requests) AS requests,
           coalesce(sum(requests) FILTER (WHERE outcome = 'ok'), 0) AS successful_requests,
           sum(cost_usd) AS cost_usd
    FROM daily_costs
    WHERE day >= first_day AND day < end_day
    GROUP BY tenant
)
SELECT tenant,
       coalesce(b.revenue_usd, 0) AS revenue_usd,
       coalesce(b.plan_fee_usd, 0) AS plan_fee_usd,
       coalesce(b.revenue_usd, 0) - coalesce(b.plan_fee_usd, 0) AS other_revenue_usd,
       coalesce(s.requests, 0) AS requests,
       coalesce(s.successful_requests, 0) AS successful_requests,
       coalesce(s.cost_usd, 0) AS cost_usd,
       coalesce(b.revenue_usd, 0) - coalesce(s.cost_usd, 0) AS margin_usd
FROM billed b
FULL OUTER JOIN spent s USING (tenant);
