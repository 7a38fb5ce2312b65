"""Warehouse load rate and dashboard query latency: `python bench/warehouse.py [--calls N]`.

1. **Loader rate.** `--loader-events` synthetic usage events (a realistic mix of tenants,
   features, models and cache hits) go through the loader's own micro-batch path exactly as it
   runs on Kafka records: decode against the contract, price, great-expectations checks and the
   set-based DuckDB insert with its rollup and conservation counts, in the loader's largest
   batches (100,000). Rows per second, twice: events with token counts only, and events that
   also keep the provider's raw usage (as the relay writes them), which the loader re-derives.
2. **Warehouse at scale.** `--calls` calls (default 10 million) are generated set-based inside
   DuckDB (the same table, indexes and views the service uses, 60 days, 50 tenants), with revenue
   lines for every tenant, then every query behind the dashboard and the query API is run
   `--repeat` times: p50, p95 and max per query.

Runs in a temporary directory on real DuckDB files; no broker needed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aiokafka.structs import ConsumerRecord  # noqa: E402

from ingest.loader import WarehouseLoader  # noqa: E402
from ingest.pricing import Pricer  # noqa: E402
from ingest.quality import CallChecks  # noqa: E402
from ingest.topics import USAGE_EVENTS  # noqa: E402
from ingest.usage_event import TokenCounts, UsageEvent, new_event_id  # noqa: E402
from warehouse import economics, queries  # noqa: E402
from warehouse.focus import export_focus, parse_period  # noqa: E402
from warehouse.overview import overview  # noqa: E402
from warehouse.store import WarehouseStore  # noqa: E402

MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("anthropic", "claude-3-5-sonnet-latest"),
    ("deepseek", "deepseek-chat"),
    ("moonshotai", "kimi-k2"),
]
TENANTS = [f"tenant-{i:02d}" for i in range(50)]
DAYS = 60


def synthetic_records(
    count: int, now: datetime, raw_usage: bool = False
) -> list[ConsumerRecord[bytes, bytes]]:
    rng = random.Random(7)
    records = []
    for offset in range(count):
        provider, model = rng.choice(MODELS)
        cached = rng.choice((0, 0, 0, 1024, 2048))
        uncached, output = rng.randrange(50, 6000), rng.randrange(1, 900)
        usage: dict[str, object] = {
            "prompt_tokens": uncached + cached,
            "completion_tokens": output,
            "total_tokens": uncached + cached + output,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        event = UsageEvent(
            event_id=new_event_id(),
            event_time=now - timedelta(seconds=rng.randrange(DAYS * 86_400)),
            tenant=rng.choice(TENANTS),
            feature=f"feature-{rng.randrange(12)}",
            prompt_version=f"v{rng.randrange(4)}",
            endpoint="chat.completions",
            requested_model=model,
            served_model=model,
            provider=provider,
            provider_model=model,
            latency_ms=rng.randrange(80, 4000),
            tokens=TokenCounts(input_uncached=uncached, cache_read=cached, output=output),
            raw_usage=usage if raw_usage else None,
        )
        value = event.to_wire()
        records.append(
            ConsumerRecord(
                USAGE_EVENTS,
                offset % 3,
                offset,
                int(now.timestamp() * 1000),
                0,
                event.tenant.encode(),
                value,
                None,
                len(event.tenant),
                len(value),
                (),
            )
        )
    return records


def loader_rate(folder: Path, count: int, raw_usage: bool) -> float:
    store = WarehouseStore(folder / f"loader-{raw_usage}.duckdb")
    loader = WarehouseLoader("127.0.0.1:1", store, Pricer(), CallChecks(TENANTS))
    records = synthetic_records(count, datetime.now(UTC), raw_usage)
    size = loader.max_records
    started = time.perf_counter()
    for i in range(0, count, size):
        loader.load_records(records[i : i + size])
    elapsed = time.perf_counter() - started
    store.close()
    assert loader.stats.loaded == count, loader.stats
    return count / elapsed


GENERATE = """
INSERT INTO calls BY NAME
SELECT
    'bench-' || i AS event_id,
    1 AS schema_version,
    $end - to_seconds((hash(i) % ($days * 86400))::BIGINT) AS event_time,
    'tenant-' || lpad(((hash(i + 1) % 50))::VARCHAR, 2, '0') AS tenant,
    'feature-' || (hash(i + 2) % 12) AS feature,
    'v' || (hash(i + 3) % 4) AS prompt_version,
    'chat.completions' AS endpoint,
    m.model AS requested_model, m.model AS served_model, m.provider, m.model AS provider_model,
    CASE WHEN hash(i + 4) % 100 < 3 THEN 2 ELSE 1 END AS attempt,
    CASE WHEN hash(i + 4) % 100 < 3 THEN 'http_503' END AS fallback_reason,
    false AS streamed,
    (80 + hash(i + 5) % 4000)::INTEGER AS latency_ms,
    t.input_uncached AS input_uncached_tokens, t.cache_read AS cache_read_tokens,
    0 AS cache_write_tokens, 0 AS cache_write_1h_tokens, t.output AS output_tokens,
    0 AS reasoning_tokens,
    'provider' AS usage_source,
    CASE WHEN hash(i + 6) % 100 < 2 THEN 'upstream_error' ELSE 'ok' END AS outcome,
    'priced' AS price_status,
    m.provider || '/' || m.model || '@bench' AS price_version_id,
    'USD' AS billing_currency,
    t.input_uncached * m.input_rate + t.cache_read * m.cache_rate + t.output * m.output_rate
        AS cost_usd,
    t.input_uncached * m.input_rate + t.cache_read * m.cache_rate + t.output * m.output_rate
        AS cost_billed,
    1 AS fx_rate,
    json_object('input_uncached', (t.input_uncached * m.input_rate)::VARCHAR,
                'cache_read', (t.cache_read * m.cache_rate)::VARCHAR,
                'output', (t.output * m.output_rate)::VARCHAR) AS cost_by_class,
    t.cache_read * (m.input_rate - m.cache_rate) AS cache_savings_usd,
    now() AS loaded_at
FROM range($start, $stop) r(i)
CROSS JOIN LATERAL (
    SELECT (50 + hash(i + 7) % 6000)::BIGINT AS input_uncached,
           (CASE WHEN hash(i + 8) % 5 < 2 THEN 1024 * (1 + hash(i + 9) % 2) ELSE 0 END)::BIGINT
               AS cache_read,
           (1 + hash(i + 10) % 900)::BIGINT AS output
) t
JOIN (VALUES
    (0, 'openai', 'gpt-4o-mini', 0.00000015, 0.000000075, 0.0000006),
    (1, 'openai', 'gpt-4o', 0.0000025, 0.00000125, 0.00001),
    (2, 'anthropic', 'claude-3-5-sonnet-latest', 0.000003, 0.0000003, 0.000015),
    (3, 'deepseek', 'deepseek-chat', 0.00000027, 0.00000007, 0.0000011),
    (4, 'moonshotai', 'kimi-k2', 0.0000006, 0.00000015, 0.0000025)
) m(k, provider, model, input_rate, cache_rate, output_rate)
    ON m.k = hash(i + 11) % 5
"""


def build(folder: Path, calls: int, end: datetime) -> tuple[WarehouseStore, float]:
    store = WarehouseStore(folder / "warehouse.duckdb")
    started = time.perf_counter()
    with store.cursor() as cur:
        step = 1_000_000
        for start in range(0, calls, step):
            cur.execute(
                GENERATE,
                {"start": start, "stop": min(calls, start + step), "end": end, "days": DAYS},
            )
        month = date(end.year, end.month, 1)
        for tenant in TENANTS:
            for back in range(3):
                first = date(
                    month.year - (month.month - back < 1), (month.month - back - 1) % 12 + 1, 1
                )
                last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
                cur.execute(
                    """INSERT OR IGNORE INTO revenue VALUES (?, ?, 'plan_fee', 2500, ?, ?,
                       'bench plan', 'bench', now())""",
                    [f"bench-{tenant}-{first}", tenant, first, last],
                )
    generated = calls / (time.perf_counter() - started)
    started = time.perf_counter()
    store.rebuild_rollup()
    with store.cursor() as cur:
        cur.execute("CHECKPOINT")
        rollup_rows = cur.execute("SELECT count(*) FROM daily_costs").fetchone()
    print(
        f"daily rollup: {rollup_rows[0] if rollup_rows else 0:,} rows, built from scratch in "
        f"{time.perf_counter() - started:.1f} s (the loader keeps it current batch by batch)"
    )
    return store, generated


def dashboard_queries(end: datetime) -> dict[str, Callable[[Any], Any]]:
    month = end.strftime("%Y-%m")
    month_start = end.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    today = end.replace(hour=0, minute=0, second=0, microsecond=0)
    # The dashboard asks for whole UTC days (today is [today, tomorrow)): the daily rollup
    # answers them alone.
    tomorrow = today + timedelta(days=1)
    week = economics.last_complete_week(end)
    return {
        "spend today by tenant": lambda c: queries.cost_rows(c, ["tenant"], today, tomorrow),
        "month to date by tenant": lambda c: queries.cost_rows(
            c, ["tenant"], month_start, tomorrow
        ),
        "top features (month)": lambda c: queries.cost_rows(c, ["feature"], month_start, tomorrow),
        "top models (month)": lambda c: queries.cost_rows(c, ["model"], month_start, tomorrow),
        "daily trend (60 days)": lambda c: queries.cost_rows(c, ["day"]),
        "drill-down tenant>feature>version>model": lambda c: queries.cost_rows(
            c, ["feature", "prompt_version", "model"], month_start, tomorrow, "tenant-07"
        ),
        "unit costs by tenant": lambda c: economics.unit_costs(
            c, ["tenant"], month_start, tomorrow
        ),
        "unit costs by model and day": lambda c: economics.unit_costs(c, ["model", "day"]),
        "margins per tenant (month)": lambda c: economics.margins(c, month),
        "week-over-week movers": lambda c: economics.movers(c, ["tenant", "feature"], week),
        "prompt version comparison": lambda c: economics.prompt_versions(
            c, "feature-3", None, month_start, tomorrow
        ),
        "alerts": lambda c: queries.alert_rows(c),
        "overview headline (today, month, forecast)": lambda c: overview(c, month, end),
    }


def ad_hoc_queries(end: datetime) -> dict[str, Callable[[Any], Any]]:
    """Not on the dashboard: a range with ragged bounds reads its two partial days from calls."""
    return {
        "last 24 hours by tenant (ragged bounds)": lambda c: queries.cost_rows(
            c, ["tenant"], end - timedelta(hours=24), end
        ),
    }


def timed(cur: Any, query: Callable[[Any], Any], repeat: int) -> list[float]:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        query(cur)
        timings.append((time.perf_counter() - started) * 1000)
    return sorted(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--loader-events", type=int, default=500_000)
    parser.add_argument("--loader-only", action="store_true", help="skip the 10 M call queries")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokenops-bench-") as tmp:
        folder = Path(tmp)
        for raw_usage in (False, True):
            rate = loader_rate(folder, args.loader_events, raw_usage)
            print(
                f"loader: {args.loader_events:,} events{' with raw usage' if raw_usage else ''}"
                f" at {rate:,.0f} rows/s (decode + price + expectations + DuckDB insert)"
            )
        if args.loader_only:
            return
        end = datetime.now(UTC)
        store, generated = build(folder, args.calls, end)
        print(f"generated {args.calls:,} calls in DuckDB at {generated:,.0f} rows/s (set-based)")
        print(f"{'query':<46} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        worst = 0.0
        with store.cursor() as cur:
            for name, query in dashboard_queries(end).items():
                timings = timed(cur, query, args.repeat)
                p95 = timings[max(0, int(len(timings) * 0.95) - 1)]
                worst = max(worst, p95)
                print(f"{name:<46} {statistics.median(timings):8.1f} {p95:8.1f} {timings[-1]:8.1f}")
            print(f"slowest dashboard query p95: {worst:.0f} ms at {args.calls:,} calls")
            for name, query in ad_hoc_queries(end).items():
                timings = timed(cur, query, args.repeat)
                p95 = timings[max(0, int(len(timings) * 0.95) - 1)]
                print(f"{name:<46} {statistics.median(timings):8.1f} {p95:8.1f} {timings[-1]:8.1f}")
            period = parse_period(end.strftime("%Y-%m"))
            for fmt in ("csv", "parquet"):
                started = time.perf_counter()
                export = export_focus(cur, period, fmt, folder / f"focus.{fmt}")
                print(
                    f"FOCUS export of {end:%Y-%m} ({fmt}): {time.perf_counter() - started:.1f} s "
                    f"for {export.rows:,} rows"
                )
        store.close()


if __name__ == "__main__":
    main()
