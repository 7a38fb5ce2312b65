"""Pricing throughput in one process: `python bench/pricing.py [--events N]`.

Prices a realistic mix (catalog models with cache reads, DeepSeek time-of-day, Anthropic cache
writes, CNY own-book models with whole-call tiers, a tenant contract) at spread-out event times,
through `Pricer.price` (the arithmetic) and `Pricer.price_event` (what streams and the warehouse
call per event, including the event copy). Prints events/s for each.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingest.price_book import load_price_book
from ingest.pricing import Pricer
from ingest.usage_event import TokenCounts, UsageEvent, new_event_id

BOOK = Path(__file__).resolve().parents[1] / "tokenops" / "demo_config" / "price_book.yaml"
MIX = [
    ("openai", "gpt-4o-mini", None),
    ("openai", "gpt-4o", "initech"),
    ("anthropic", "claude-3-5-sonnet", None),
    ("deepseek", "deepseek-chat", None),
    ("moonshotai", "kimi-k2", None),
    ("alibaba", "qwen3-max", None),
    ("zhipu", "glm-4.5", None),
    ("minimax", "MiniMax-M2", None),
]


def workload(n: int, spread_s: int) -> list[UsageEvent]:
    """n calls at random times within `spread_s` seconds, in time order (as live or replayed
    traffic arrives)."""
    rng = random.Random(42)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    events = []
    for _ in range(n):
        provider, model, tenant = rng.choice(MIX)
        prompt = rng.randint(50, 60_000)
        cached = rng.randint(0, prompt // 2)
        completion = rng.randint(10, 2_000)
        reasoning = rng.randint(0, completion // 2)
        events.append(
            UsageEvent(
                event_id=new_event_id(),
                event_time=start + timedelta(seconds=rng.uniform(0, spread_s)),
                tenant=tenant or rng.choice(["acme", "globex"]),
                endpoint="chat.completions",
                requested_model=model,
                served_model=model,
                provider=provider,
                provider_model=model,
                tokens=TokenCounts(
                    input_uncached=prompt - cached,
                    cache_read=cached,
                    output=completion - reasoning,
                    reasoning=reasoning,
                ),
            )
        )
    events.sort(key=lambda e: e.event_time)
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    print(f"{args.events:,} calls per run, one process")
    for label, spread in (("one day, in time order", 86_400), ("30 days, random order", 0)):
        pricer = Pricer(load_price_book(BOOK))
        events = workload(args.events, spread or 30 * 86_400)
        # A worker holds one batch, not 200k events: keep the prepared input out of the
        # collector's scans so they do not bill the code under test.
        gc.collect()
        gc.freeze()
        if not spread:
            random.Random(7).shuffle(events)  # worst case: every call a new minute
        for e in events[: len(events) // 100]:  # a running worker is warm: catalog loaded
            pricer.price(e.provider, e.provider_model, e.tokens, e.event_time, e.tenant)
        started = time.perf_counter()
        for e in events:
            pricer.price(e.provider, e.provider_model, e.tokens, e.event_time, e.tenant)
        arithmetic = len(events) / (time.perf_counter() - started)
        started = time.perf_counter()
        priced = [pricer.price_event(e) for e in events]
        full = len(events) / (time.perf_counter() - started)
        unpriced = sum(1 for p in priced if p.price_status != "priced")
        print(f"{label} ({unpriced} unpriced):")
        print(f"  Pricer.price        {arithmetic:>10,.0f} events/s")
        print(f"  Pricer.price_event  {full:>10,.0f} events/s  (price + event copy)")
        del events, priced
        gc.unfreeze()


if __name__ == "__main__":
    main()
