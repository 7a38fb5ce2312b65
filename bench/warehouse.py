"""Warehouse load rate and dashboard query latency: `python bench/warehouse.py [--calls N]`.

1. **Load.** `--calls` synthetic usage events (default 10 million; a realistic mix of tenants,
   features, models, cache hits, fallbacks and errors, 60 days of them in the order a topic holds
   them) go through the loader exactly as it runs on Kafka records: decode against the contract,
   price, great-expectations checks, and the set-based DuckDB write with its rollup and
   conservation counts, in the loader's largest micro-batches. Rows per second over the whole
   load, and per tenth of it (the table grows to its full size while it loads).
2. **Through Kafka.** `--kafka-calls` of the same events (default 1 million) published to an
   embedded broker started for the run, then loaded the way `tokenops ingest replay` loads the
   log (the loader's consumer settings, micro-batches and pipeline; no consumer group): the
   fetch from the broker is part of the load, and the broker runs on the same 2 cores.
3. **Raw usage.** `--raw-usage-events` events that also keep the provider's raw usage (as the
   relay writes them; the loader re-derives the token classes from it), into a file of their own.
4. **Dashboard.** Revenue lines for every tenant, then every query behind the dashboard and the
   query API on the loaded file, `--repeat` times each: p50, p95 and max per query.

Runs in a temporary directory on real DuckDB files; the Kafka part starts its own embedded broker
(skip it with `--kafka-calls 0`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from aiokafka.structs import ConsumerRecord  # noqa: E402

from ingest.loader import Loaded, Pipeline, WarehouseLoader  # noqa: E402
from ingest.pricing import Pricer  # noqa: E402
from ingest.quality import CallChecks  # noqa: E402
from ingest.replay import replay  # noqa: E402
from ingest.topics import USAGE_EVENTS  # noqa: E402
from ingest.usage_event import TokenCounts, UsageEvent, new_event_id  # noqa: E402
from tests.support import free_port  # noqa: E402
from tokenops.broker import ensure_topics, start_embedded_broker  # noqa: E402
from tokenops.collector import freeze_startup_objects, tune_collector  # noqa: E402
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


def _wire(e: dict[str, Any]) -> bytes:
    """`UsageEvent.to_wire()` of the event `e` describes, without building the model (ten
    million of those take minutes); `synthetic_events` checks the two agree."""
    at = e["event_time"]
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S") + (f".{at.microsecond:06d}" if at.microsecond else "")
    model = e["model"]
    fallback = f'"fallback_reason":"{e["fallback_reason"]}",' if e["fallback_reason"] else ""
    usage = ""
    if e["raw_usage"] is not None:
        usage = f'"raw_usage":{json.dumps(e["raw_usage"], separators=(",", ":"))},'
    return (
        f'{{"schema_version":1,"event_id":"{e["event_id"]}","event_time":"{stamp}Z",'
        f'"tenant":"{e["tenant"]}","feature":"{e["feature"]}",'
        f'"prompt_version":"{e["prompt_version"]}","tags":[],"endpoint":"chat.completions",'
        f'"requested_model":"{model}","served_model":"{model}","provider":"{e["provider"]}",'
        f'"provider_model":"{model}","attempt":{e["attempt"]},{fallback}"streamed":false,'
        f'"latency_ms":{e["latency_ms"]},"tokens":{{"input_uncached":{e["uncached"]},'
        f'"cache_read":{e["cached"]},"cache_write":0,"cache_write_1h":0,'
        f'"output":{e["output"]},"reasoning":0}},"usage_source":"provider",{usage}'
        f'"outcome":"{e["outcome"]}","price_status":"pending"}}'
    ).encode()


def _model(e: dict[str, Any]) -> UsageEvent:
    return UsageEvent(
        event_id=e["event_id"],
        event_time=e["event_time"],
        tenant=e["tenant"],
        feature=e["feature"],
        prompt_version=e["prompt_version"],
        endpoint="chat.completions",
        requested_model=e["model"],
        served_model=e["model"],
        provider=e["provider"],
        provider_model=e["model"],
        attempt=e["attempt"],
        fallback_reason=e["fallback_reason"],
        latency_ms=e["latency_ms"],
        tokens=TokenCounts(
            input_uncached=e["uncached"], cache_read=e["cached"], output=e["output"]
        ),
        raw_usage=e["raw_usage"],
        outcome=e["outcome"],
    )


def synthetic_events(
    count: int, end: datetime, *, raw_usage: bool = False, chunk: int = 250_000, seed: int = 7
) -> Iterator[list[ConsumerRecord[bytes, bytes]]]:
    """`count` usage records in chunks, spread evenly over the `DAYS` before `end` in time
    order (give or take a minute), as a topic holds them."""
    rng = random.Random(seed)
    step = timedelta(days=DAYS) / count
    first = end - timedelta(days=DAYS)
    stamp = int(end.timestamp() * 1000)
    for start in range(0, count, chunk):
        records = []
        for offset in range(start, min(count, start + chunk)):
            provider, model = rng.choice(MODELS)
            cached = rng.choice((0, 0, 0, 1024, 2048))
            uncached, output = rng.randrange(50, 6000), rng.randrange(1, 900)
            roll = rng.randrange(100)
            jitter = timedelta(seconds=rng.uniform(-60, 60))
            e = {
                "event_id": new_event_id(),
                "event_time": min(first + step * offset + jitter, end),
                "tenant": rng.choice(TENANTS),
                "feature": f"feature-{rng.randrange(12)}",
                "prompt_version": f"v{rng.randrange(4)}",
                "provider": provider,
                "model": model,
                "attempt": 2 if roll < 3 else 1,
                "fallback_reason": "http_503" if roll < 3 else None,
                "outcome": "upstream_error" if 3 <= roll < 5 else "ok",
                "latency_ms": rng.randrange(80, 4000),
                "uncached": uncached,
                "cached": cached,
                "output": output,
                "raw_usage": {
                    "prompt_tokens": uncached + cached,
                    "completion_tokens": output,
                    "total_tokens": uncached + cached + output,
                    "prompt_tokens_details": {"cached_tokens": cached},
                }
                if raw_usage
                else None,
            }
            value = _wire(e)
            if offset < 1_000:
                assert value == _model(e).to_wire(), (value, _model(e).to_wire())
            records.append(usage_record(offset, stamp, e["tenant"].encode(), value))
        yield records


def usage_record(offset: int, stamp: int, key: bytes, value: bytes) -> ConsumerRecord[bytes, bytes]:
    """A usage event as aiokafka hands it over, on one of three partitions."""
    return ConsumerRecord(
        USAGE_EVENTS, offset % 3, offset, stamp, 0, key, value, None, len(key), len(value), ()
    )


def write_log(folder: Path, count: int, end: datetime, raw_usage: bool, chunk: int) -> list[Path]:
    """The synthetic events as a log on disk (one Parquet file per micro-batch: key, value), so
    that generating them is not part of the load that is timed."""
    files = []
    for i, records in enumerate(synthetic_events(count, end, raw_usage=raw_usage, chunk=chunk)):
        files.append(folder / f"log-{i:05d}.parquet")
        table = pa.table(
            {"key": [r.key for r in records], "value": [r.value for r in records]},
            schema=pa.schema([("key", pa.binary()), ("value", pa.binary())]),
        )
        pq.write_table(table, files[-1], compression="zstd")
    return files


def read_log(files: list[Path], stamp: int) -> Iterator[list[ConsumerRecord[bytes, bytes]]]:
    """Each file back as the consumer records one poll returns (the fetch is the loader's work
    too, as it is on Kafka)."""
    offset = 0
    for file in files:
        table = pq.read_table(file)
        records = []
        for key, value in zip(
            table.column("key").to_pylist(), table.column("value").to_pylist(), strict=True
        ):
            records.append(usage_record(offset, stamp, key, value))
            offset += 1
        yield records


def load(path: Path, count: int, end: datetime, raw_usage: bool) -> tuple[WarehouseStore, float]:
    """Load `count` synthetic events through the loader into a new file, the way the service
    loads a backlog (its pipeline: one batch prepared while the previous one is written); rows
    per second."""
    store = WarehouseStore(path)
    loader = WarehouseLoader("127.0.0.1:1", store, Pricer(), CallChecks(TENANTS))
    log_folder = path.parent / f"{path.stem}-log"
    log_folder.mkdir()
    files = write_log(log_folder, count, end, raw_usage, loader.max_records)
    freeze_startup_objects()  # as the warehouse service does once it is built

    async def run() -> float:
        pipeline = Pipeline(loader)
        started = time.perf_counter()
        report_at, since = count // 10, (0, started)

        def report(loaded: list[Loaded]) -> None:
            nonlocal report_at, since
            if raw_usage or loader.stats.loaded < report_at:
                return
            now, rows = time.perf_counter(), loader.stats.loaded - since[0]
            print(
                f"  {loader.stats.loaded:>12,} calls loaded: {rows / (now - since[1]):,.0f} "
                f"rows/s over the last {rows:,}"
            )
            report_at, since = report_at + count // 10, (loader.stats.loaded, now)

        for records in read_log(files, int(end.timestamp() * 1000)):
            report(await pipeline.submit(records))
        report(await pipeline.drain())
        # The store checkpoints every CHECKPOINT_THRESHOLD of log; what is left is the load's.
        checkpoint = time.perf_counter()
        with store.cursor() as cur:
            cur.execute("CHECKPOINT")
        print(f"  final checkpoint: {time.perf_counter() - checkpoint:.1f} s (counted in the rate)")
        return time.perf_counter() - started

    cpu_started = time.process_time()
    elapsed = asyncio.run(run())
    cpu = time.process_time() - cpu_started
    assert loader.stats.loaded == count, loader.stats
    print(f"  process CPU per row: {cpu / count * 1e6:.1f} µs (2 cores: 1 s of wall time holds 2)")
    return store, count / elapsed


def load_through_kafka(folder: Path, count: int, end: datetime) -> float:
    """Publish `count` synthetic events to an embedded broker, then load them from it as
    `tokenops ingest replay` does; rows per second of the load (the publishing not counted)."""
    from kafka import KafkaProducer

    port = free_port()
    broker = start_embedded_broker(port)
    bootstrap = f"127.0.0.1:{port}"
    try:
        ensure_topics(bootstrap)
        producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=50, batch_size=1024**2
        )
        started = time.perf_counter()
        for records in synthetic_events(count, end):
            for r in records:
                producer.send(USAGE_EVENTS, key=r.key, value=r.value)
        producer.flush()
        producer.close()
        print(f"  published in {time.perf_counter() - started:.0f} s (not counted)")
        store = WarehouseStore(folder / "kafka.duckdb")
        loader = WarehouseLoader(bootstrap, store, Pricer(), CallChecks(TENANTS))
        freeze_startup_objects()
        started, cpu_started = time.perf_counter(), time.process_time()
        progress = asyncio.run(replay(bootstrap, loader))
        with store.cursor() as cur:
            cur.execute("CHECKPOINT")
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        store.close()
    finally:
        broker.terminate()
        broker.wait(10)
    assert progress.calls_loaded == count, progress
    print(f"  loader process CPU per row: {cpu / count * 1e6:.1f} µs (the broker's not counted)")
    return count / elapsed


def add_revenue(store: WarehouseStore, end: datetime) -> None:
    with store.cursor() as cur:
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
    parser.add_argument("--kafka-calls", type=int, default=1_000_000)
    parser.add_argument("--raw-usage-events", type=int, default=500_000)
    parser.add_argument("--load-only", action="store_true", help="skip the queries")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    tune_collector()  # the warehouse service's collector settings
    end = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="tokenops-bench-") as tmp:
        folder = Path(tmp)
        if args.kafka_calls:
            print(f"loading {args.kafka_calls:,} events through the embedded broker")
            rate = load_through_kafka(folder, args.kafka_calls, end)
            print(
                f"loader through Kafka: {args.kafka_calls:,} events at {rate:,.0f} rows/s "
                "(fetch + decode + price + expectations + DuckDB write)"
            )
        if args.raw_usage_events:
            store, rate = load(folder / "raw.duckdb", args.raw_usage_events, end, raw_usage=True)
            store.close()
            print(
                f"loader: {args.raw_usage_events:,} events with raw usage at {rate:,.0f} rows/s "
                "(decode + re-derive usage + price + expectations + DuckDB write)"
            )
        print(f"loading {args.calls:,} events over {DAYS} days through the loader")
        store, rate = load(folder / "warehouse.duckdb", args.calls, end, raw_usage=False)
        print(
            f"loader: {args.calls:,} events at {rate:,.0f} rows/s "
            "(decode + price + expectations + DuckDB write with rollup and conservation counts)"
        )
        if args.load_only:
            store.close()
            return
        add_revenue(store, end)
        with store.cursor() as cur:
            rollup_rows = cur.execute("SELECT count(*) FROM daily_costs").fetchone()
        print(f"daily rollup: {rollup_rows[0] if rollup_rows else 0:,} rows")
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
