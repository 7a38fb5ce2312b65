-- One row per metered model call; columns mirror ingest.usage_event.UsageEvent (a test checks it).
CREATE TABLE IF NOT EXISTS calls (
    event_id               VARCHAR PRIMARY KEY,
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
    outcome                VARCHAR NOT NULL,
    http_status            INTEGER,
    error_code             VARCHAR,
    price_status           VARCHAR NOT NULL,
    currency               VARCHAR NOT NULL,
    cost_usd               DECIMAL(38, 18),
    input_cost_usd         DECIMAL(38, 18),
    output_cost_usd        DECIMAL(38, 18),
    price_version_id       VARCHAR,
    loaded_at              TIMESTAMPTZ NOT NULL
);

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
    loaded_at         TIMESTAMPTZ NOT NULL
);

-- Records that could not be loaded, with the reason: kept and counted, never silently dropped.
CREATE TABLE IF NOT EXISTS quarantine (
    source_topic   VARCHAR NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset  BIGINT NOT NULL,
    reason         VARCHAR NOT NULL,
    payload        VARCHAR,
    quarantined_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
