"""Streams throughput and call-to-alert latency on the embedded broker:
`python bench/streams_throughput.py [--events N] [--alerts N]`.

Starts its own embedded broker and `--workers` `tokenops streams` workers (own ports, own data
dir; all stopped by PID at the end), then:

1. **Sustained throughput.** Publishes a backlog of N usage events (a realistic model mix over
   24 tenants, each event under an organisation, a tenant and a feature budget) and measures how
   fast the workers price, publish and count them in the budget ledger: events/s from the first
   to the last event counted, read from the ledger's budget states (distinct events).
2. **Call-to-alert latency.** Publishes events at a steady 50/s, each one crossing a budget's
   limit (one budget per synthetic tenant), and measures, per alert, the time from the event's
   `event_time` (when the relay received the call) to the alert arriving at a consumer.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest.alert_event import AlertEvent  # noqa: E402
from ingest.budget_state import BudgetState  # noqa: E402
from ingest.topics import ALERTS, BUDGET_STATE, USAGE_EVENTS  # noqa: E402
from ingest.usage_event import TokenCounts, UsageEvent, new_event_id  # noqa: E402
from tests.support import Service, free_port  # noqa: E402
from tokenops.broker import ensure_topics, start_embedded_broker  # noqa: E402
from tokenops.processes import cpu_seconds  # noqa: E402

MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("deepseek", "deepseek-chat")]
TENANTS = [f"tenant-{i:02d}" for i in range(24)]
"""Enough tenants that the tenant-keyed usage topic's 3 partitions all carry traffic (10/7/7
tenants): with only a few, most events can hash to one partition and one worker."""
FEATURES = ["search", "support-chat", "summarize"]


def event(rng: random.Random, tenant: str, feature: str) -> UsageEvent:
    provider, model = rng.choice(MODELS)
    return UsageEvent(
        event_id=new_event_id(),
        event_time=datetime.now(UTC),
        tenant=tenant,
        feature=feature,
        endpoint="chat.completions",
        requested_model=model,
        served_model=model,
        provider=provider,
        provider_model=model,
        tokens=TokenCounts(input_uncached=rng.randint(50, 4000), output=rng.randint(10, 800)),
    )


class LedgerProgress:
    """Distinct events the ledger has counted for one budget: its partials' event counts, read
    from the budget-state topic (duplicates and redeliveries never inflate them)."""

    def __init__(self, bootstrap: str, budget_id: str) -> None:
        self._budget_id = budget_id
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=20)
        parts = self._consumer.partitions_for_topic(BUDGET_STATE) or ()
        self._consumer.assign([TopicPartition(BUDGET_STATE, p) for p in parts])
        self._consumer.seek_to_beginning()
        self._partials: dict[int, int] = {}

    def events(self) -> int:
        for records in self._consumer.poll(timeout_ms=100, max_records=100_000).values():
            for record in records:
                state = BudgetState.model_validate_json(record.value)
                if state.budget_id == self._budget_id:
                    count = max(self._partials.get(state.partition, 0), state.events)
                    self._partials[state.partition] = count
        return sum(self._partials.values())


def budgets(alert_tenants: int) -> list[dict[str, object]]:
    found: list[dict[str, object]] = [
        {"id": "org", "scope": {}, "period": "month", "limit_usd": "1000000"}
    ]
    for tenant in TENANTS:
        found.append({"id": f"{tenant}-day", "tenant": tenant, "period": "day", "limit_usd": "1e6"})
        for feature in FEATURES:
            found.append(
                {
                    "id": f"{tenant}-{feature}",
                    "scope": {"tenant": tenant, "feature": feature},
                    "period": "week",
                    "limit_usd": "1000000",
                    "hard": True,
                }
            )
    for i in range(alert_tenants):
        found.append(
            {"id": f"lat-{i}", "tenant": f"lat-{i}", "period": "day", "limit_requests": 1,
             "thresholds": ["1.0"]}
        )  # fmt: skip
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--alerts", type=int, default=500)
    parser.add_argument(
        "--workers", type=int, default=2, help="streams worker processes (default: one per core)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tokenops-bench-"))
    port = free_port()
    broker = start_embedded_broker(port)
    bootstrap = f"127.0.0.1:{port}"
    workers: list[Service] = []
    try:
        ensure_topics(bootstrap)
        config = work / "config"
        shutil.copytree(REPO / "tokenops" / "demo_config", config)
        (config / "budgets.yaml").write_text(yaml.safe_dump({"budgets": budgets(args.alerts)}))
        rng = random.Random(1)
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
        print(f"publishing {args.events:,} usage events ...", flush=True)
        sends = []
        for _ in range(args.events):
            e = event(rng, rng.choice(TENANTS), rng.choice(FEATURES))
            sends.append(producer.send(USAGE_EVENTS, key=e.kafka_key(), value=e.to_wire()))
        producer.flush()
        failed = sum(1 for f in sends if f.failed())
        shares = Counter(f.get().partition for f in sends if not f.failed())
        print("per partition: " + ", ".join(f"{p}: {n:,}" for p, n in sorted(shares.items())))
        # the acknowledged sends, not the topic's end offsets: the embedded broker reports the
        # last record batch's base offset + 1 as a partition's end (see ingest.replay)
        total = len(sends) - failed
        print(f"{total:,} acknowledged on the usage topic ({failed} sends failed)", flush=True)

        env = {
            "TOKENOPS_KAFKA_BOOTSTRAP": bootstrap,
            "TOKENOPS_CONFIG_DIR": str(config),
            "TOKENOPS_DATA_DIR": str(work / "data"),
        }
        workers = [
            Service(["streams"], env, work / f"streams-{i}.log") for i in range(args.workers)
        ]
        first_at = None
        progress = (0, time.monotonic())
        counted = LedgerProgress(bootstrap, "org")
        while True:
            done = counted.events()
            now = time.monotonic()
            if done and first_at is None:
                first_at, first_done = now, done
                first_cpu = cpu_seconds([w.process.pid for w in workers])
            if done >= total:
                break
            if done > progress[0]:
                progress = (done, now)
            elif now - progress[1] > 30:
                log = (work / "streams-0.log").read_text()
                raise SystemExit(f"no progress for 30 s at {done:,} priced events:\n{log[-3000:]}")
            if any(w.process.poll() is not None for w in workers):
                log = (work / "streams-0.log").read_text()
                raise SystemExit(f"the worker exited:\n{log[-3000:]}")
            time.sleep(0.2)
        assert first_at is not None
        cpu = cpu_seconds([w.process.pid for w in workers]) - first_cpu
        rate = (total - first_done) / max(now - first_at, 1e-9)
        print(f"sustained: {rate:,.0f} events/s priced, published and counted "
              f"({total:,} events, {now - first_at:.1f} s)", flush=True)  # fmt: skip
        # CPU per event holds still on a busy machine, where the rate above does not
        print(f"worker CPU per event: {cpu / max(total - first_done, 1) * 1e6:.0f} us")

        consumer = KafkaConsumer(
            ALERTS, bootstrap_servers=bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=20
        )
        consumer.poll(timeout_ms=1000)  # join at the end of the topic
        sent: dict[str, datetime] = {}
        latencies: list[float] = []
        decided: list[float] = []  # event time to the ledger's decision (the alert's created_at)

        def receive() -> None:
            """Consume alerts while the events are being published (arrival = poll time)."""
            deadline = time.monotonic() + 60 + args.alerts * 0.02
            while len(latencies) < args.alerts and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=100).values():
                    arrived = datetime.now(UTC)
                    for record in records:
                        alert = AlertEvent.model_validate_json(record.value)
                        at = sent.get(alert.trigger_event_id or "")
                        if at is not None:
                            latencies.append((arrived - at).total_seconds())
                            decided.append((alert.created_at - at).total_seconds())

        receiver = threading.Thread(target=receive)
        receiver.start()
        for i in range(args.alerts):
            e = event(rng, f"lat-{i}", "search")
            sent[e.event_id] = e.event_time
            producer.send(USAGE_EVENTS, key=e.kafka_key(), value=e.to_wire())
            producer.flush()
            time.sleep(0.02)
        receiver.join()
        consumer.close()
        producer.close()
        latencies.sort()
        print(f"event to ledger decision: p50 {statistics.median(decided) * 1000:.0f} ms")
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
        print(f"call-to-alert latency over {len(latencies)} alerts: p50 {p50:.0f} ms, "
              f"p99 {p99:.0f} ms, max {latencies[-1] * 1000:.0f} ms")  # fmt: skip
        print(json.dumps({"events_per_s": round(rate), "alert_p50_ms": round(p50),
                          "alert_p99_ms": round(p99)}))  # fmt: skip
    finally:
        for worker in workers:
            worker.stop()
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
