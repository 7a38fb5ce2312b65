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

-- Cost questions read the daily rollup (warehouse/rollup.py: `fact_sums`, `cost_facts`); the
-- per-call views earlier versions had are gone.
DROP VIEW IF EXISTS call_economics;
DROP VIEW IF EXISTS monthly_revenue;

-- Gross margin per tenant over the UTC days [first_day, end_day), whole months: the revenue of
-- the lines in the period minus the cost of every request in it (a line counts whole in the month
-- it lies in). A tenant with cost and no revenue, or revenue and no calls, still has a row. A
-- macro, not a view, so the period bounds reach the scans of revenue and the daily rollup.
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
