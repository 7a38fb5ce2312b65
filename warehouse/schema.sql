-- One row per metered model call; columns mirror ingest.usage_event.UsageEvent (a test checks it).
-- event_id is the table's key. The store, its only writer, keeps it unique (every insert skips
-- the ids already present, in the same transaction) instead of a DuckDB PRIMARY KEY constraint:
-- the constraint's index made the bulk write several times slower and grows with the table.
CREATE TABLE IF NOT EXISTS calls (
    event_id               VARCHAR NOT NULL,
    schema_version         INTEGER NOT NULL,
    event_time             TIMESTAMPTZ NOT NULL,
    tenant                 VARCHAR NOT NULL,
    relay_key_id           VARCHAR,
    feature                VARCHAR,
    prompt_version         VARCHAR,
    end_user               VARCHAR,
    tags                   VARCHAR[],
    endpoint               VARCHAR NOT NULL,
    requested_model        VARCHAR NOT NULL,
    served_model           VARCHAR NOT NULL,
    provider               VARCHAR NOT NULL,
    provider_model         VARCHAR NOT NULL,
    attempt                INTEGER NOT NULL,
    fallback_reason        VARCHAR,
    service_tier           VARCHAR,
    streamed               BOOLEAN NOT NULL,
    latency_ms             INTEGER NOT NULL,
    input_uncached_tokens  BIGINT NOT NULL,
    cache_read_tokens      BIGINT NOT NULL,
    cache_write_tokens     BIGINT NOT NULL,
    cache_write_1h_tokens  BIGINT NOT NULL,
    output_tokens          BIGINT NOT NULL,
    reasoning_tokens       BIGINT NOT NULL,
    usage_source           VARCHAR NOT NULL,
    raw_usage              JSON,
    usage_error            VARCHAR,
    outcome                VARCHAR NOT NULL,
    http_status            INTEGER,
    error_code             VARCHAR,
    price_status           VARCHAR NOT NULL,
    unpriced_reason        VARCHAR,
    price_version_id       VARCHAR,
    billing_currency       VARCHAR,
    cost_billed            DECIMAL(38, 18),
    fx_rate                DECIMAL(38, 18),
    cost_usd               DECIMAL(38, 18),
    -- Cost per token class (and `request` for a per-request fee) in USD; NULL for a class the
    -- call was not charged for. warehouse.store.COST_BY_CLASS is this type.
    cost_by_class          STRUCT(input_uncached DECIMAL(38, 18), cache_read DECIMAL(38, 18),
                                  cache_write DECIMAL(38, 18), cache_write_1h DECIMAL(38, 18),
                                  output DECIMAL(38, 18), reasoning DECIMAL(38, 18),
                                  request DECIMAL(38, 18)),
    loaded_at              TIMESTAMPTZ NOT NULL,
    -- Cost with every cached input token billed as uncached input, minus cost_usd (the loader
    -- prices it with the same price version); negative when cache writes cost more than reads saved.
    cache_savings_usd      DECIMAL(38, 18)
);
ALTER TABLE calls ADD COLUMN IF NOT EXISTS cache_savings_usd DECIMAL(38, 18);

CREATE TABLE IF NOT EXISTS alerts (
    alert_id          VARCHAR PRIMARY KEY,
    kind              VARCHAR NOT NULL,
    tenant            VARCHAR NOT NULL,
    scope             JSON NOT NULL,
    state             VARCHAR NOT NULL,
    period            VARCHAR NOT NULL,
    period_start      TIMESTAMPTZ NOT NULL,
    threshold         DECIMAL(18, 6),
    limit_usd         DECIMAL(38, 18),
    spend_usd         DECIMAL(38, 18),
    created_at        TIMESTAMPTZ NOT NULL,
    trigger_event_id  VARCHAR,
    message           VARCHAR NOT NULL,
    loaded_at         TIMESTAMPTZ NOT NULL,
    budget_id         VARCHAR,
    explanation       JSON
);
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS budget_id VARCHAR;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS explanation JSON;

-- One row per webhook attempt to deliver an alert; columns mirror
-- ingest.alert_delivery.AlertDelivery (a test checks it). An alert's delivery to a webhook is
-- attempts 1..n, the last one `delivered` or `failed`; `retrying` rows are the failures between.
CREATE TABLE IF NOT EXISTS alert_deliveries (
    delivery_id   VARCHAR PRIMARY KEY,
    alert_id      VARCHAR NOT NULL,
    webhook       VARCHAR NOT NULL,
    tenant        VARCHAR NOT NULL,
    attempt       INTEGER NOT NULL,
    status        VARCHAR NOT NULL,
    http_status   INTEGER,
    error         VARCHAR,
    delivered_at  TIMESTAMPTZ NOT NULL,
    latency_ms    INTEGER NOT NULL,
    loaded_at     TIMESTAMPTZ NOT NULL
);

-- Records that could not be loaded, with the stage and reason: kept and counted, never silently
-- dropped. Keyed by origin and payload hash: a redelivered record is stored once, while a new
-- record at a reused offset (a recreated topic) is stored too.
CREATE TABLE IF NOT EXISTS quarantine (
    source_topic     VARCHAR NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset    BIGINT NOT NULL,
    payload_sha256   VARCHAR NOT NULL,
    stage            VARCHAR NOT NULL,
    reason           VARCHAR NOT NULL,
    payload          VARCHAR,
    quarantined_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source_topic, source_partition, source_offset, payload_sha256)
);

-- The conservation report: per topic, partition and hour (of the records' Kafka timestamps),
-- consumed = loaded + quarantined + duplicates, written in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS conservation (
    topic        VARCHAR NOT NULL,
    partition    INTEGER NOT NULL,
    hour         TIMESTAMPTZ NOT NULL,
    consumed     BIGINT NOT NULL,
    loaded       BIGINT NOT NULL,
    quarantined  BIGINT NOT NULL,
    duplicates   BIGINT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (topic, partition, hour)
);

-- Append-only re-pricing of calls after a price version was added: a call's cost is its original
-- cost_usd plus the sum of its correction deltas. The calls rows are never updated.
CREATE TABLE IF NOT EXISTS corrections (
    correction_id            VARCHAR PRIMARY KEY,
    event_id                 VARCHAR NOT NULL,
    price_version_id         VARCHAR NOT NULL,
    previous_price_version_id VARCHAR,
    delta_usd                DECIMAL(38, 18) NOT NULL,
    cost_usd                 DECIMAL(38, 18) NOT NULL,
    cost_by_class            STRUCT(input_uncached DECIMAL(38, 18), cache_read DECIMAL(38, 18),
                                    cache_write DECIMAL(38, 18), cache_write_1h DECIMAL(38, 18),
                                    output DECIMAL(38, 18), reasoning DECIMAL(38, 18),
                                    request DECIMAL(38, 18)) NOT NULL,
    reason                   VARCHAR NOT NULL,
    created_at               TIMESTAMPTZ NOT NULL
);

-- Own price versions the warehouse has applied (re-priced history for), with their definition.
CREATE TABLE IF NOT EXISTS price_versions (
    price_version_id  VARCHAR PRIMARY KEY,
    provider          VARCHAR NOT NULL,
    model             VARCHAR NOT NULL,
    currency          VARCHAR NOT NULL,
    effective_from    TIMESTAMPTZ NOT NULL,
    effective_to      TIMESTAMPTZ,
    tenant            VARCHAR,
    service_tier      VARCHAR,
    source            VARCHAR NOT NULL,
    definition        JSON NOT NULL,
    corrections       BIGINT NOT NULL,
    applied_at        TIMESTAMPTZ NOT NULL
);

CREATE OR REPLACE VIEW call_costs AS
SELECT c.*,
       coalesce(c.cost_usd, 0) + coalesce(k.delta_usd, 0) AS effective_cost_usd,
       CASE WHEN k.event_id IS NULL THEN c.price_status ELSE 'priced' END AS effective_price_status,
       coalesce(k.price_version_id, c.price_version_id) AS effective_price_version_id
FROM calls c
LEFT JOIN (
    SELECT event_id,
           sum(delta_usd) AS delta_usd,
           arg_max(price_version_id, created_at) AS price_version_id
    FROM corrections
    GROUP BY event_id
) k USING (event_id);

-- Tenants as configured (tenants.yaml), synced when the service starts; calls may name a tenant
-- no longer configured (history is kept), the quality gate refuses new calls of unknown ones.
CREATE TABLE IF NOT EXISTS tenants (
    tenant      VARCHAR PRIMARY KEY,
    name        VARCHAR NOT NULL,
    configured  BOOLEAN NOT NULL,
    synced_at   TIMESTAMPTZ NOT NULL
);

CREATE OR REPLACE VIEW features AS
SELECT tenant, feature, count(*) AS calls, min(event_time) AS first_seen,
       max(event_time) AS last_seen
FROM calls WHERE feature IS NOT NULL GROUP BY ALL;

CREATE OR REPLACE VIEW prompt_versions AS
SELECT tenant, feature, prompt_version, count(*) AS calls, min(event_time) AS first_seen,
       max(event_time) AS last_seen
FROM calls WHERE prompt_version IS NOT NULL GROUP BY ALL;

-- The sums every cost question aggregates, per UTC day and attribution, so that dashboards read
-- a table a small fraction the size of `calls`. The store keeps it in the same transaction as
-- the calls and corrections it sums (effective cost: corrections included). Each write appends
-- its partial sums; the store merges them into one row per key (warehouse.rollup.KEY) and day
-- now and then, and every reader sums. Nullable attribution is stored as '' (one key for it) and
-- read back as NULL.
CREATE TABLE IF NOT EXISTS daily_costs (
    day                    DATE NOT NULL,
    tenant                 VARCHAR NOT NULL,
    feature                VARCHAR NOT NULL,
    prompt_version         VARCHAR NOT NULL,
    requested_model        VARCHAR NOT NULL,
    served_model           VARCHAR NOT NULL,
    provider               VARCHAR NOT NULL,
    endpoint               VARCHAR NOT NULL,
    outcome                VARCHAR NOT NULL,
    fallback               BOOLEAN NOT NULL,
    requests               BIGINT NOT NULL,
    unpriced_requests      BIGINT NOT NULL,
    input_uncached_tokens  BIGINT NOT NULL,
    cache_read_tokens      BIGINT NOT NULL,
    cache_write_tokens     BIGINT NOT NULL,
    cache_write_1h_tokens  BIGINT NOT NULL,
    output_tokens          BIGINT NOT NULL,
    reasoning_tokens       BIGINT NOT NULL,
    latency_ms_sum         BIGINT NOT NULL,
    cost_usd               DECIMAL(38, 18) NOT NULL,
    cache_savings_usd      DECIMAL(38, 18) NOT NULL
);
