"""The reference table: calls priced by `Pricer.price`, each against a hand-computed literal.

Every expected value is worked out by hand in the row's comment (micro-USD = 1e-6 USD, micro-CNY
= 1e-6 CNY); nothing here calls genai-prices or the pricing engine to produce an expectation.

Own book = tokenops/demo_config/price_book.yaml plus the EXTRA versions below. Catalog prices
(genai-prices 0.2.3 bundled snapshot, per million tokens, USD), each checked once with
`data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)[1]`:
  openai gpt-4o-mini        input 0.15, cache read 0.075, output 0.6
                            priority (from 2026-10-12): 0.25 / 0.125 / 1
                            batch (from 2026-10-14): input 0.075, output 0.3; the batch variant
                            has no cache-read price, so cache reads keep the standard 0.075
  openai gpt-4o             input 2.5, cache read 1.25, output 10
                            priority (from 2026-10-12): 4.25 / 2.125 / 17
  openai gpt-5-mini         input 0.25, cache read 0.025, output 2
                            flex (from 2026-10-12): 0.125 / 0.0125 / 1
  anthropic claude-3-5-sonnet  input 3, cache read 0.3, write 3.75, 1 h write 6, output 15
  anthropic claude-sonnet-4-5  cliff at 200,000 input tokens (all input classes counted), above
                            it ALL tokens: input 3->6, cache read 0.3->0.6, write 3.75->7.5,
                            1 h write 6->12, output 15->22.5
  deepseek deepseek-chat    00:30-16:30 UTC: input 0.27, cache read 0.07, output 1.1
                            otherwise:       input 0.135, cache read 0.035, output 0.55
  deepseek deepseek-reasoner 00:30-16:30 UTC: input 0.55, cache read 0.14, output 2.19
                            otherwise:       input 0.135, cache read 0.035, output 0.55
                            (no separate reasoning price: reasoning is output)
  moonshotai kimi-k2        input 0.57, output 2.3 (no cache-read price: reads at input)
  zai glm-4.5               input 0.6, cache read 0.11, output 2.2
  minimax MiniMax-M2        input 0.3, cache read 0.03, cache write 0.375 (no 1 h price), out 1.2
  perplexity sonar          input 1, output 1, $12 per 1000 requests = 0.012 per request
FX (demo file): CNY 0.1370 USD from 2025-01-01, 0.1405 from 2026-01-01.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ingest.price_book import PriceBook, PriceVersion, load_price_book
from ingest.pricing import Cost, Pricer, Unpriced
from ingest.usage_event import TokenCounts

REPO = Path(__file__).resolve().parents[2]
D = Decimal
CNY_2025 = D("0.1370")
CNY_2026 = D("0.1405")


def _version(**fields: Any) -> PriceVersion:
    fields.setdefault("source", "reference-table test version")
    return PriceVersion.model_validate(fields)


# Shapes the demo file lacks.
EXTRA_VERSIONS = [
    # A tenant-specific own version with its own per-request fee (overrides the catalog sonar
    # for globex only).
    _version(
        provider="perplexity",
        model="sonar",
        tenant="globex",
        effective_from="2025-01-01",
        per_million={"input": "0.8", "output": "0.8", "request": "0.005"},
    ),
    # Night rates in a daily UTC window that wraps midnight: [22:00, 06:00).
    _version(
        provider="acmeai",
        model="nightly-1",
        effective_from="2025-01-01",
        per_million={"input": "1", "output": "4"},
        windows=[
            {"start": "22:00", "end": "06:00", "per_million": {"input": "0.5", "output": "2"}}
        ],
    ),
    # A dated pair: v1 closes at 2025-07-01 00:00 UTC exactly when v2 opens.
    _version(
        provider="acmeai",
        model="dated-1",
        effective_from="2025-01-01",
        effective_to="2025-07-01",
        per_million={"input": "1", "output": "2"},
    ),
    _version(
        provider="acmeai",
        model="dated-1",
        effective_from="2025-07-01",
        per_million={"input": "0.8", "output": "1.6"},
    ),
    # A promotion overriding the catalog kimi-k2 during March 2025 only.
    _version(
        provider="moonshotai",
        model="kimi-k2",
        effective_from="2025-03-01",
        effective_to="2025-04-01",
        per_million={"input": "0.4", "output": "1.6"},
    ),
    # An own service-tier-specific version (the catalog has no flex variant for gpt-4o-mini).
    _version(
        provider="openai",
        model="gpt-4o-mini",
        service_tier="flex",
        effective_from="2025-01-01",
        per_million={"input": "0.075", "cache_read": "0.0375", "output": "0.3"},
    ),
    # Reasoning cheaper than visible output, and a 1 h cache write rate of its own.
    _version(
        provider="acmeai",
        model="thinker-1",
        effective_from="2025-01-01",
        per_million={
            "input": "2",
            "cache_read": "0.2",
            "cache_write": "2.5",
            "cache_write_1h": "4",
            "output": "8",
            "reasoning": "6",
        },
    ),
    # A tenant contract written with the model id in lower case (the book matches provider and
    # model case-insensitively; the catalog spells it MiniMax-M2).
    _version(
        provider="minimax",
        model="minimax-m2",
        tenant="hooli",
        effective_from="2025-01-01",
        per_million={"input": "0.2", "output": "1"},
    ),
    # A CNY version in force before the first CNY FX rate (2025-01-01).
    _version(
        provider="zhipu",
        model="glm-4-plus",
        currency="CNY",
        effective_from="2024-06-01",
        per_million={"input": "5", "output": "5"},
    ),
]


def _book() -> PriceBook:
    book = load_price_book(REPO / "tokenops/demo_config/price_book.yaml")
    for version in EXTRA_VERSIONS:
        assert book.add(version), version.id
    return book


PRICER = Pricer(_book())


def utc(
    year: int, month: int, day: int, hour: int = 12, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def tk(**counts: int) -> TokenCounts:
    return TokenCounts(**counts)


T25 = utc(2025, 6, 1)  # noon UTC: DeepSeek peak
T26 = utc(2026, 3, 2)
PLUS2 = timezone(timedelta(hours=2))
PLUS8 = timezone(timedelta(hours=8))

BOOK = "book:"
CATALOG = "genai-prices@"


@dataclass(frozen=True)
class Row:
    id: str
    provider: str
    model: str
    tokens: TokenCounts
    at: datetime
    usd: Decimal
    """Expected total_usd."""
    source: str
    """Expected price_version_id prefix."""
    tenant: str | None = None
    service_tier: str | None = None
    cny: Decimal | None = None
    """Expected Cost.total in CNY, for CNY rows."""
    fx: Decimal | None = None
    """Expected USD per CNY, for CNY rows."""
    bug: str | None = None
    """Why this row fails against the current code (the row is a strict xfail)."""


# fmt: off
ROWS = [
    # ---- OpenAI (catalog) ----------------------------------------------------------------------
    # 1200*0.15 + 300*0.6 = 180 + 180 = 360 micro-USD
    Row("openai-4o-mini-plain", "openai", "gpt-4o-mini", tk(input_uncached=1200, output=300),
        T25, D("0.00036"), CATALOG),
    # 1000*0.15 + 4000*0.075 + 200*0.6 = 150 + 300 + 120 = 570 micro-USD
    Row("openai-4o-mini-cache-read", "openai", "gpt-4o-mini",
        tk(input_uncached=1000, cache_read=4000, output=200), T25, D("0.00057"), CATALOG),
    # (100 + 400 reasoning)*0.6 = 300 micro-USD
    Row("openai-4o-mini-reasoning-is-output", "openai", "gpt-4o-mini",
        tk(output=100, reasoning=400), T25, D("0.0003"), CATALOG),
    # 2000*2.5 + 500*10 = 5000 + 5000 = 10000 micro-USD
    Row("openai-4o-plain", "openai", "gpt-4o", tk(input_uncached=2000, output=500),
        T25, D("0.01"), CATALOG),
    # 1000*2.5 + 8000*1.25 + 100*10 = 2500 + 10000 + 1000 = 13500 micro-USD
    Row("openai-4o-cache-read", "openai", "gpt-4o",
        tk(input_uncached=1000, cache_read=8000, output=100), T25, D("0.0135"), CATALOG),
    # priority variant starts 2026-10-12: the second before, standard 1000*2.5 + 1000*10 = 12500
    Row("openai-4o-priority-before-2026-10-12", "openai", "gpt-4o",
        tk(input_uncached=1000, output=1000), utc(2026, 10, 11, 23, 59, 59), D("0.0125"),
        CATALOG, service_tier="priority"),
    # from 2026-10-12 00:00 UTC: 1000*4.25 + 1000*17 = 4250 + 17000 = 21250 micro-USD
    Row("openai-4o-priority-from-2026-10-12", "openai", "gpt-4o",
        tk(input_uncached=1000, output=1000), utc(2026, 10, 12, 0, 0, 0), D("0.02125"),
        CATALOG, service_tier="priority"),
    # 1000*4.25 + 2000*2.125 + 1000*17 = 4250 + 4250 + 17000 = 25500 micro-USD
    Row("openai-4o-priority-cache-read", "openai", "gpt-4o",
        tk(input_uncached=1000, cache_read=2000, output=1000), utc(2026, 10, 20), D("0.0255"),
        CATALOG, service_tier="priority"),
    # 2026-10-12 01:00+02:00 is 2026-10-11 23:00 UTC: still standard, 2500 + 10000 = 12500
    Row("openai-4o-priority-local-date-is-not-utc-date", "openai", "gpt-4o",
        tk(input_uncached=1000, output=1000), datetime(2026, 10, 12, 1, 0, tzinfo=PLUS2),
        D("0.0125"), CATALOG, service_tier="priority"),
    # batch variant starts 2026-10-14: before, standard 10000*0.15 + 2000*0.6 = 1500 + 1200
    Row("openai-4o-mini-batch-before-2026-10-14", "openai", "gpt-4o-mini",
        tk(input_uncached=10000, output=2000), utc(2026, 10, 13, 23, 59, 59), D("0.0027"),
        CATALOG, service_tier="batch"),
    # from 2026-10-14: 10000*0.075 + 2000*0.3 = 750 + 600 = 1350 micro-USD
    Row("openai-4o-mini-batch-from-2026-10-14", "openai", "gpt-4o-mini",
        tk(input_uncached=10000, output=2000), utc(2026, 10, 14, 0, 0, 0), D("0.00135"),
        CATALOG, service_tier="batch"),
    # batch has no cache-read price, standard 0.075 stays:
    # 10000*0.075 + 4000*0.075 + 2000*0.3 = 750 + 300 + 600 = 1650 micro-USD
    Row("openai-4o-mini-batch-cache-read", "openai", "gpt-4o-mini",
        tk(input_uncached=10000, cache_read=4000, output=2000), utc(2026, 10, 14), D("0.00165"),
        CATALOG, service_tier="batch"),
    # service tier "default" is the standard price even after the batch date: 1500 + 1200
    Row("openai-4o-mini-default-tier", "openai", "gpt-4o-mini",
        tk(input_uncached=10000, output=2000), utc(2026, 10, 14), D("0.0027"),
        CATALOG, service_tier="default"),
    # flex variant starts 2026-10-12; before it, standard:
    # 10000*0.25 + 20000*0.025 + (1000 + 3000)*2 = 2500 + 500 + 8000 = 11000 micro-USD
    Row("openai-5-mini-flex-before-2026-10-12", "openai", "gpt-5-mini",
        tk(input_uncached=10000, cache_read=20000, output=1000, reasoning=3000),
        utc(2026, 10, 11), D("0.011"), CATALOG, service_tier="flex"),
    # 10000*0.125 + 20000*0.0125 + (1000 + 3000)*1 = 1250 + 250 + 4000 = 5500 micro-USD
    Row("openai-5-mini-flex-from-2026-10-12", "openai", "gpt-5-mini",
        tk(input_uncached=10000, cache_read=20000, output=1000, reasoning=3000),
        utc(2026, 10, 12), D("0.0055"), CATALOG, service_tier="flex"),
    # ---- tenant contract (own book: initech gpt-4o input 2, cache read 1, output 8) ------------
    # 1000*2 + 2000*1 + 500*8 = 2000 + 2000 + 4000 = 8000 micro-USD
    Row("initech-4o-contract-2026", "openai", "gpt-4o",
        tk(input_uncached=1000, cache_read=2000, output=500), T26, D("0.008"), BOOK,
        tenant="initech"),
    # acme, same call and time, list price: 1000*2.5 + 2000*1.25 + 500*10 = 2500+2500+5000
    Row("acme-4o-list-2026", "openai", "gpt-4o",
        tk(input_uncached=1000, cache_read=2000, output=500), T26, D("0.01"), CATALOG,
        tenant="acme"),
    # initech one second before the contract starts: list price 10000 micro-USD
    Row("initech-4o-before-contract", "openai", "gpt-4o",
        tk(input_uncached=1000, cache_read=2000, output=500), utc(2025, 12, 31, 23, 59, 59),
        D("0.01"), CATALOG, tenant="initech"),
    # an untiered tenant version beats the catalog priority variant: 2000 + 2000 + 4000
    Row("initech-4o-contract-ignores-priority", "openai", "gpt-4o",
        tk(input_uncached=1000, cache_read=2000, output=500), utc(2026, 10, 20), D("0.008"),
        BOOK, tenant="initech", service_tier="priority"),
    # ---- Anthropic (catalog) -------------------------------------------------------------------
    # 2000*3 + 10000*0.3 + 4000*3.75 + 1000*6 + 800*15 = 6000+3000+15000+6000+12000 = 42000
    Row("anthropic-3-5-sonnet-all-classes", "anthropic", "claude-3-5-sonnet",
        tk(input_uncached=2000, cache_read=10000, cache_write=4000, cache_write_1h=1000,
           output=800), T25, D("0.042"), CATALOG),
    # 250000*6 = 1500000 micro-USD
    Row("anthropic-3-5-sonnet-1h-write", "anthropic", "claude-3-5-sonnet",
        tk(cache_write_1h=250000), T25, D("1.5"), CATALOG),
    # input total 150000 + 40000 + 10000 = 200000, not above the cliff:
    # 150000*3 + 40000*0.3 + 10000*3.75 + 1000*15 = 450000+12000+37500+15000 = 514500
    Row("anthropic-sonnet-4-5-input-200000", "anthropic", "claude-sonnet-4-5",
        tk(input_uncached=150000, cache_read=40000, cache_write=10000, output=1000),
        T25, D("0.5145"), CATALOG),
    # input total 200001, every token at the high rates:
    # 150001*6 + 40000*0.6 + 10000*7.5 + 1000*22.5 = 900006+24000+75000+22500 = 1021506
    Row("anthropic-sonnet-4-5-input-200001", "anthropic", "claude-sonnet-4-5",
        tk(input_uncached=150001, cache_read=40000, cache_write=10000, output=1000),
        T25, D("1.021506"), CATALOG),
    # input total 310000: 300000*6 + 10000*12 + (2000 + 1000)*22.5 = 1800000+120000+67500
    Row("anthropic-sonnet-4-5-long-1h-write-reasoning", "anthropic", "claude-sonnet-4-5",
        tk(input_uncached=300000, cache_write_1h=10000, output=2000, reasoning=1000),
        T25, D("1.9875"), CATALOG),
    # ---- DeepSeek (catalog, time of day) -------------------------------------------------------
    # peak: 10000*0.27 + 50000*0.07 + 2000*1.1 = 2700 + 3500 + 2200 = 8400 micro-USD
    Row("deepseek-chat-peak-noon", "deepseek", "deepseek-chat",
        tk(input_uncached=10000, cache_read=50000, output=2000), T25, D("0.0084"), CATALOG),
    # off-peak: 10000*0.135 + 50000*0.035 + 2000*0.55 = 1350 + 1750 + 1100 = 4200 micro-USD
    Row("deepseek-chat-offpeak-20h", "deepseek", "deepseek-chat",
        tk(input_uncached=10000, cache_read=50000, output=2000), utc(2025, 6, 1, 20),
        D("0.0042"), CATALOG),
    # 16:29:59 still peak: 8400 micro-USD
    Row("deepseek-chat-16-29-59-peak", "deepseek", "deepseek-chat",
        tk(input_uncached=10000, cache_read=50000, output=2000), utc(2025, 6, 1, 16, 29, 59),
        D("0.0084"), CATALOG),
    # 16:30:00 off-peak: 4200 micro-USD
    Row("deepseek-chat-16-30-00-offpeak", "deepseek", "deepseek-chat",
        tk(input_uncached=10000, cache_read=50000, output=2000), utc(2025, 6, 1, 16, 30, 0),
        D("0.0042"), CATALOG),
    # 00:29:59 off-peak: 1000000*0.135 = 135000 micro-USD
    Row("deepseek-chat-00-29-59-offpeak", "deepseek", "deepseek-chat",
        tk(input_uncached=1_000_000), utc(2025, 6, 1, 0, 29, 59), D("0.135"), CATALOG),
    # 00:30:00 peak: 1000000*0.27 = 270000 micro-USD
    Row("deepseek-chat-00-30-00-peak", "deepseek", "deepseek-chat",
        tk(input_uncached=1_000_000), utc(2025, 6, 1, 0, 30, 0), D("0.27"), CATALOG),
    # 08:00+08:00 is 00:00 UTC, off-peak: 1000000*0.135 = 135000 micro-USD
    Row("deepseek-chat-beijing-8am-is-offpeak", "deepseek", "deepseek-chat",
        tk(input_uncached=1_000_000), datetime(2025, 6, 1, 8, 0, tzinfo=PLUS8), D("0.135"),
        CATALOG),
    # peak: 2000*0.55 + (500 + 3000 reasoning)*2.19 = 1100 + 7665 = 8765 micro-USD
    Row("deepseek-reasoner-peak", "deepseek", "deepseek-reasoner",
        tk(input_uncached=2000, output=500, reasoning=3000), T25, D("0.008765"), CATALOG),
    # off-peak: 2000*0.135 + 3500*0.55 = 270 + 1925 = 2195 micro-USD
    Row("deepseek-reasoner-offpeak", "deepseek", "deepseek-reasoner",
        tk(input_uncached=2000, output=500, reasoning=3000), utc(2025, 6, 1, 20),
        D("0.002195"), CATALOG),
    # ---- Qwen (own book, alibaba, CNY) ---------------------------------------------------------
    # 10000*0.8 + 5000*0.16 + 2000*2 = 8000 + 800 + 4000 = 12800 micro-CNY;
    # USD 0.0128 * 0.1370 = 0.0017536
    Row("qwen-plus-2025", "alibaba", "qwen-plus",
        tk(input_uncached=10000, cache_read=5000, output=2000), T25, D("0.0017536"), BOOK,
        cny=D("0.0128"), fx=CNY_2025),
    # same call in 2026: 0.0128 * 0.1405 = 0.0017984
    Row("qwen-plus-2026", "alibaba", "qwen-plus",
        tk(input_uncached=10000, cache_read=5000, output=2000), T26, D("0.0017984"), BOOK,
        cny=D("0.0128"), fx=CNY_2026),
    # input 32767 < 32768: 32767*2.5 + 1000*10 = 81917.5 + 10000 = 91917.5 micro-CNY;
    # USD 0.0919175 * 0.137 = 0.0125926975
    Row("qwen3-max-input-32767", "alibaba", "qwen3-max", tk(input_uncached=32767, output=1000),
        utc(2025, 10, 1), D("0.0125926975"), BOOK, cny=D("0.0919175"), fx=CNY_2025),
    # input 32768 -> tier 4/16: 32768*4 + 1000*16 = 131072 + 16000 = 147072 micro-CNY;
    # USD 0.147072 * 0.137 = 0.020148864
    Row("qwen3-max-input-32768", "alibaba", "qwen3-max", tk(input_uncached=32768, output=1000),
        utc(2025, 10, 1), D("0.020148864"), BOOK, cny=D("0.147072"), fx=CNY_2025),
    # input 131071 -> tier 4/16: 131071*4 + 1000*16 = 524284 + 16000 = 540284 micro-CNY;
    # USD 0.540284 * 0.137 = 0.074018908
    Row("qwen3-max-input-131071", "alibaba", "qwen3-max", tk(input_uncached=131071, output=1000),
        utc(2025, 10, 1), D("0.074018908"), BOOK, cny=D("0.540284"), fx=CNY_2025),
    # input 131072 -> tier 7/28: 131072*7 + 1000*28 = 917504 + 28000 = 945504 micro-CNY;
    # USD 0.945504 * 0.137 = 0.129534048
    Row("qwen3-max-input-131072", "alibaba", "qwen3-max", tk(input_uncached=131072, output=1000),
        utc(2025, 10, 1), D("0.129534048"), BOOK, cny=D("0.945504"), fx=CNY_2025),
    # cache reads count toward the tier: 30000 + 2768 = 32768 -> 4/16, reads at input rate 4:
    # 32768*4 + (500 + 500)*16 = 131072 + 16000 = 147072 micro-CNY;
    # USD 0.147072 * 0.1405 = 0.020663616
    Row("qwen3-max-cache-read-counts-toward-tier-2026", "alibaba", "qwen3-max",
        tk(input_uncached=30000, cache_read=2768, output=500, reasoning=500), T26,
        D("0.020663616"), BOOK, cny=D("0.147072"), fx=CNY_2026),
    # ---- GLM (own book, zhipu, CNY; tiers by input and output) ---------------------------------
    # output 199 < 200: 1000*2 + 199*8 = 2000 + 1592 = 3592 micro-CNY;
    # USD 0.003592 * 0.137 = 0.000492104
    Row("zhipu-glm-4.5-output-199", "zhipu", "glm-4.5", tk(input_uncached=1000, output=199),
        utc(2025, 9, 1), D("0.000492104"), BOOK, cny=D("0.003592"), fx=CNY_2025),
    # output 200 -> 3/14: 1000*3 + 200*14 = 3000 + 2800 = 5800 micro-CNY;
    # USD 0.0058 * 0.137 = 0.0007946
    Row("zhipu-glm-4.5-output-200", "zhipu", "glm-4.5", tk(input_uncached=1000, output=200),
        utc(2025, 9, 1), D("0.0007946"), BOOK, cny=D("0.0058"), fx=CNY_2025),
    # output 50 + reasoning 150 = 200 -> 3/14: 3000 + 200*14 = 5800 micro-CNY -> 0.0007946 USD
    Row("zhipu-glm-4.5-output-200-with-reasoning", "zhipu", "glm-4.5",
        tk(input_uncached=1000, output=50, reasoning=150), utc(2025, 9, 1), D("0.0007946"),
        BOOK, cny=D("0.0058"), fx=CNY_2025),
    # input 32767, output 5000 -> 3/14: 32767*3 + 5000*14 = 98301 + 70000 = 168301 micro-CNY;
    # USD 0.168301 * 0.137 = 0.023057237
    Row("zhipu-glm-4.5-input-32767-output-5000", "zhipu", "glm-4.5",
        tk(input_uncached=32767, output=5000), utc(2025, 9, 1), D("0.023057237"), BOOK,
        cny=D("0.168301"), fx=CNY_2025),
    # input 32768 -> 4/16 whatever the output: 32768*4 + 10*16 = 131072 + 160 = 131232;
    # USD 0.131232 * 0.137 = 0.017978784
    Row("zhipu-glm-4.5-input-32768-output-10", "zhipu", "glm-4.5",
        tk(input_uncached=32768, output=10), utc(2025, 9, 1), D("0.017978784"), BOOK,
        cny=D("0.131232"), fx=CNY_2025),
    # output 199 in 2026: 3592 micro-CNY; USD 0.003592 * 0.1405 = 0.000504676
    Row("zhipu-glm-4.5-output-199-2026", "zhipu", "glm-4.5", tk(input_uncached=1000, output=199),
        T26, D("0.000504676"), BOOK, cny=D("0.003592"), fx=CNY_2026),
    # ---- GLM (catalog, zai, USD) ---------------------------------------------------------------
    # 4000*0.6 + 6000*0.11 + 1000*2.2 = 2400 + 660 + 2200 = 5260 micro-USD
    Row("zai-glm-4.5-cache-read", "zai", "glm-4.5",
        tk(input_uncached=4000, cache_read=6000, output=1000), T25, D("0.00526"), CATALOG),
    # ---- Kimi (catalog, moonshotai) ------------------------------------------------------------
    # 10000*0.57 + 3000*2.3 = 5700 + 6900 = 12600 micro-USD
    Row("kimi-k2-plain", "moonshotai", "kimi-k2", tk(input_uncached=10000, output=3000),
        T25, D("0.0126"), CATALOG),
    # no cache-read price, reads at input: 1000*0.57 + 1000*0.57 = 1140 micro-USD
    Row("kimi-k2-cache-read-at-input-rate", "moonshotai", "kimi-k2",
        tk(input_uncached=1000, cache_read=1000), T25, D("0.00114"), CATALOG),
    # own promo in force (March 2025): 10000*0.4 + 3000*1.6 = 4000 + 4800 = 8800 micro-USD
    Row("kimi-k2-own-promo", "moonshotai", "kimi-k2", tk(input_uncached=10000, output=3000),
        utc(2025, 3, 15), D("0.0088"), BOOK),
    # promo effective_to 2025-04-01 00:00 excluded: catalog again, 12600 micro-USD
    Row("kimi-k2-promo-ended", "moonshotai", "kimi-k2", tk(input_uncached=10000, output=3000),
        utc(2025, 4, 1, 0, 0, 0), D("0.0126"), CATALOG),
    # ---- MiniMax (catalog) ---------------------------------------------------------------------
    # 5000*0.3 + 20000*0.03 + 10000*0.375 + 3000*1.2 = 1500 + 600 + 3750 + 3600 = 9450
    Row("minimax-m2-cache-read-and-write", "minimax", "MiniMax-M2",
        tk(input_uncached=5000, cache_read=20000, cache_write=10000, output=3000),
        T25, D("0.00945"), CATALOG),
    # no 1 h price, 1 h writes at the 5 min write rate: 100000*0.375 + 1000*1.2 = 37500 + 1200
    Row("minimax-m2-1h-write-at-write-rate", "minimax", "MiniMax-M2",
        tk(cache_write_1h=100000, output=1000), T25, D("0.0387"), CATALOG),
    # ---- Perplexity (catalog, per-request fee) -------------------------------------------------
    # 1000*1 + 500*1 + 12/1000 USD per request = 1000 + 500 + 12000 = 13500 micro-USD
    Row("perplexity-sonar-request-fee", "perplexity", "sonar",
        tk(input_uncached=1000, output=500), T25, D("0.0135"), CATALOG),
    # no tokens, the request fee alone: 0.012
    Row("perplexity-sonar-request-fee-only", "perplexity", "sonar", tk(), T25, D("0.012"),
        CATALOG),
    # globex own version: 1000*0.8 + 500*0.8 + 0.005 = 800 + 400 + 5000 = 6200 micro-USD
    Row("perplexity-sonar-globex-own-fee", "perplexity", "sonar",
        tk(input_uncached=1000, output=500), T25, D("0.0062"), BOOK, tenant="globex"),
    # ---- own shapes ----------------------------------------------------------------------------
    # day rates at noon: 10000*1 + 1000*4 = 14000 micro-USD
    Row("own-window-noon-day-rate", "acmeai", "nightly-1", tk(input_uncached=10000, output=1000),
        T25, D("0.014"), BOOK),
    # 23:00 in [22:00, 06:00): 10000*0.5 + 1000*2 = 7000 micro-USD
    Row("own-window-23h-night-rate", "acmeai", "nightly-1",
        tk(input_uncached=10000, output=1000), utc(2025, 6, 1, 23), D("0.007"), BOOK),
    # 05:59:59 still in the wrapped window: 7000 micro-USD
    Row("own-window-05-59-59-night-rate", "acmeai", "nightly-1",
        tk(input_uncached=10000, output=1000), utc(2025, 6, 2, 5, 59, 59), D("0.007"), BOOK),
    # 06:00:00 window end excluded: 14000 micro-USD
    Row("own-window-06-00-day-rate", "acmeai", "nightly-1",
        tk(input_uncached=10000, output=1000), utc(2025, 6, 2, 6, 0, 0), D("0.014"), BOOK),
    # v1 in force until 2025-07-01 00:00: 10000*1 + 1000*2 = 12000 micro-USD
    Row("own-dated-v1-last-second", "acmeai", "dated-1", tk(input_uncached=10000, output=1000),
        utc(2025, 6, 30, 23, 59, 59), D("0.012"), BOOK),
    # v2 from 2025-07-01 00:00: 10000*0.8 + 1000*1.6 = 8000 + 1600 = 9600 micro-USD
    Row("own-dated-v2-first-second", "acmeai", "dated-1", tk(input_uncached=10000, output=1000),
        utc(2025, 7, 1, 0, 0, 0), D("0.0096"), BOOK),
    # own flex version: 10000*0.075 + 4000*0.0375 + 2000*0.3 = 750 + 150 + 600 = 1500
    Row("own-4o-mini-flex", "openai", "gpt-4o-mini",
        tk(input_uncached=10000, cache_read=4000, output=2000), T25, D("0.0015"), BOOK,
        service_tier="flex"),
    # same call as priority in 2025: no own version, catalog standard (variant not yet active):
    # 10000*0.15 + 4000*0.075 + 2000*0.6 = 1500 + 300 + 1200 = 3000 micro-USD
    Row("own-flex-not-used-for-priority", "openai", "gpt-4o-mini",
        tk(input_uncached=10000, cache_read=4000, output=2000), T25, D("0.003"), CATALOG,
        service_tier="priority"),
    # 1000*2 + 10000*0.2 + 2000*2.5 + 1000*4 + 500*8 + 2000*6
    #   = 2000 + 2000 + 5000 + 4000 + 4000 + 12000 = 29000 micro-USD
    Row("own-reasoning-and-1h-write-rates", "acmeai", "thinker-1",
        tk(input_uncached=1000, cache_read=10000, cache_write=2000, cache_write_1h=1000,
           output=500, reasoning=2000), T25, D("0.029"), BOOK),
    # hooli's contract, called with the model spelled as in the book:
    # 10000*0.2 + 1000*1 = 2000 + 1000 = 3000 micro-USD
    Row("minimax-m2-hooli-contract", "minimax", "minimax-m2",
        tk(input_uncached=10000, output=1000), T25, D("0.003"), BOOK, tenant="hooli"),
    # the same call spelled as the provider reports it: still the contract, 3000 micro-USD
    Row("minimax-m2-hooli-contract-provider-casing", "minimax", "MiniMax-M2",
        tk(input_uncached=10000, output=1000), T25, D("0.003"), BOOK, tenant="hooli"),
]
# fmt: on


def test_the_table_is_big_enough() -> None:
    assert len(ROWS) >= 45
    assert len({row.id for row in ROWS}) == len(ROWS)
    providers = {row.provider for row in ROWS}
    expected = {"openai", "anthropic", "deepseek", "alibaba", "moonshotai", "zhipu", "zai"}
    assert expected | {"minimax", "perplexity"} <= providers


def _params(rows: list[Row]) -> list[Any]:
    return [
        pytest.param(
            row,
            id=row.id,
            marks=[pytest.mark.xfail(strict=True, reason=f"BUG: {row.bug}")] if row.bug else [],
        )
        for row in rows
    ]


@pytest.mark.parametrize("row", _params(ROWS))
def test_reference_price(row: Row) -> None:
    cost = PRICER.price(row.provider, row.model, row.tokens, row.at, row.tenant, row.service_tier)
    assert isinstance(cost, Cost), cost
    assert cost.total_usd == row.usd
    # the shared pricer (warm caches) and a fresh one agree
    fresh = Pricer(PRICER.book)
    assert fresh.price(
        row.provider, row.model, row.tokens, row.at, row.tenant, row.service_tier
    ) == (cost)
    assert type(cost.total_usd) is Decimal
    assert cost.total_usd == sum(cost.by_class_usd.values(), start=Decimal(0))
    assert cost.total == sum(cost.by_class.values(), start=Decimal(0))
    assert cost.price_version_id.startswith(row.source), cost.price_version_id
    if row.cny is None:
        assert cost.currency == "USD"
        assert cost.fx_rate == 1
        assert cost.total == row.usd
    else:
        assert cost.currency == "CNY"
        assert cost.total == row.cny
        assert cost.fx_rate == row.fx
        for name, amount in cost.by_class.items():
            assert cost.by_class_usd[name] == amount * row.fx


@dataclass(frozen=True)
class UnpricedRow:
    id: str
    provider: str
    model: str
    at: datetime
    mentions: str
    """A word the reason must contain."""


UNPRICED = [
    # alibaba is not in the catalog and the book has no qwen-turbo
    UnpricedRow("qwen-turbo-not-in-book", "alibaba", "qwen-turbo", T25, "qwen-turbo"),
    UnpricedRow("unknown-provider", "nosuchai", "mystery-1", T25, "mystery-1"),
    # the own CNY version is in force but the first CNY rate is 2025-01-01
    UnpricedRow("cny-without-fx-rate", "zhipu", "glm-4-plus", utc(2024, 12, 31, 23, 59, 59), "CNY"),
    # the own qwen3-max version starts 2025-09-01 and there is no catalog fallback
    UnpricedRow(
        "qwen3-max-before-own-version", "alibaba", "qwen3-max", utc(2025, 8, 31), "qwen3-max"
    ),
    UnpricedRow("own-dated-before-v1", "acmeai", "dated-1", utc(2024, 12, 31), "dated-1"),
]


@pytest.mark.parametrize("row", UNPRICED, ids=lambda row: row.id)
def test_no_silent_zero(row: UnpricedRow) -> None:
    result = PRICER.price(row.provider, row.model, tk(input_uncached=1000, output=1000), row.at)
    assert isinstance(result, Unpriced), result
    assert row.mentions in result.reason
