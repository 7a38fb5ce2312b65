"""price_tokens / price_event against hand-computed costs.

Every expected value is a literal worked out by hand from the genai-prices catalog's per-million
token prices (USD), checked once against the installed catalog:
  openai gpt-4o-mini          input 0.15, cache read 0.075, output 0.6
  anthropic claude-3-5-sonnet input 3, cache read 0.3, cache write 3.75 (1h: 6), output 15
  deepseek deepseek-chat      00:30-16:30 UTC: input 0.27, cache read 0.07, output 1.1
                              otherwise:       input 0.135, cache read 0.035, output 0.55
  moonshotai kimi-k2          input 0.57, output 2.3
  zai glm-4.5                 input 0.6, cache read 0.11, output 2.2
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from ingest.pricing import Cost, Pricer, Unpriced, price_event, price_tokens
from ingest.usage_event import TokenCounts, UsageEvent, new_event_id

NOON = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
EVENING = datetime(2025, 6, 1, 20, 0, tzinfo=UTC)
PRICING_FIELDS = (
    "price_status",
    "cost_usd",
    "cost_by_class",
    "billing_currency",
    "cost_billed",
    "fx_rate",
    "unpriced_reason",
    "price_version_id",
)


def make_event(
    provider: str,
    model: str,
    tokens: TokenCounts,
    at: datetime = NOON,
    **overrides: Any,
) -> UsageEvent:
    fields: dict[str, Any] = {
        "event_id": new_event_id(),
        "event_time": at,
        "tenant": "acme",
        "endpoint": "chat.completions",
        "requested_model": model,
        "served_model": model,
        "provider": provider,
        "provider_model": model,
        "tokens": tokens,
    }
    fields.update(overrides)
    return UsageEvent(**fields)


def _cost(provider: str, model: str, tokens: TokenCounts, at: datetime = NOON) -> Cost:
    cost = price_tokens(provider, model, tokens, at)
    assert cost is not None, f"{provider}/{model} should be in the catalog"
    for value in (cost.total_usd, cost.input_usd, cost.output_usd):
        assert type(value) is Decimal
    return cost


def test_plain_input_and_output() -> None:
    # 1000 * 0.15 / 1e6 = 0.00015 ; 500 * 0.6 / 1e6 = 0.0003
    cost = _cost("openai", "gpt-4o-mini", TokenCounts(input_uncached=1000, output=500))
    assert cost.input_usd == Decimal("0.00015")
    assert cost.output_usd == Decimal("0.0003")
    assert cost.total_usd == Decimal("0.00045")


def test_kimi_k2_input_and_output() -> None:
    # 1000 * 0.57 / 1e6 = 0.00057 ; 1000 * 2.3 / 1e6 = 0.0023
    cost = _cost("moonshotai", "kimi-k2", TokenCounts(input_uncached=1000, output=1000))
    assert cost.input_usd == Decimal("0.00057")
    assert cost.output_usd == Decimal("0.0023")
    assert cost.total_usd == Decimal("0.00287")


def test_cache_reads_are_charged_at_cache_price_not_input_price() -> None:
    # 1000 * 0.15 + 2000 * 0.075 = 150 + 150 = 300 micro-USD ; output 500 * 0.6 = 300 micro-USD.
    # At the input price the 3000 input tokens would cost 0.00045.
    tokens = TokenCounts(input_uncached=1000, cache_read=2000, output=500)
    cost = _cost("openai", "gpt-4o-mini", tokens)
    assert cost.input_usd == Decimal("0.0003")
    assert cost.input_usd != Decimal("0.00045")
    assert cost.output_usd == Decimal("0.0003")
    assert cost.total_usd == Decimal("0.0006")


def test_cache_read_only_anthropic() -> None:
    # 1_000_000 cache reads * 0.3 / 1e6 = 0.3 (not 3, the input price)
    cost = _cost("anthropic", "claude-3-5-sonnet", TokenCounts(cache_read=1_000_000))
    assert cost.input_usd == Decimal("0.3")
    assert cost.total_usd == Decimal("0.3")
    assert cost.output_usd == Decimal("0")


def test_cache_writes_are_charged_at_cache_write_price() -> None:
    # 1_000_000 cache writes * 3.75 / 1e6 = 3.75 (not 3, the input price)
    cost = _cost("anthropic", "claude-3-5-sonnet", TokenCounts(cache_write=1_000_000))
    assert cost.input_usd == Decimal("3.75")
    assert cost.total_usd == Decimal("3.75")


def test_anthropic_read_write_and_uncached_together() -> None:
    # The real Anthropic sample: 3 uncached, 1111 cache reads, 418 cache writes, 100 output.
    # input: 3*3 + 1111*0.3 + 418*3.75 = 9 + 333.3 + 1567.5 = 1909.8 micro-USD
    # output: 100*15 = 1500 micro-USD
    tokens = TokenCounts(input_uncached=3, cache_read=1111, cache_write=418, output=100)
    cost = _cost("anthropic", "claude-3-5-sonnet", tokens)
    assert cost.input_usd == Decimal("0.0019098")
    assert cost.output_usd == Decimal("0.0015")
    assert cost.total_usd == Decimal("0.0034098")


def test_one_hour_cache_writes_are_charged_at_one_hour_price() -> None:
    # 1_000_000 one-hour cache writes * 6 / 1e6 = 6
    cost = _cost("anthropic", "claude-3-5-sonnet", TokenCounts(cache_write_1h=1_000_000))
    assert cost.total_usd == Decimal("6")
    # and a mix: 1M five-minute writes * 3.75 + 1M one-hour writes * 6 = 9.75
    mixed = TokenCounts(cache_write=1_000_000, cache_write_1h=1_000_000)
    assert _cost("anthropic", "claude-3-5-sonnet", mixed).total_usd == Decimal("9.75")


def test_reasoning_tokens_are_priced_as_output() -> None:
    # (100 visible + 900 reasoning) * 0.6 / 1e6 = 0.0006
    with_reasoning = _cost("openai", "gpt-4o-mini", TokenCounts(output=100, reasoning=900))
    assert with_reasoning.output_usd == Decimal("0.0006")
    assert with_reasoning.input_usd == Decimal("0")
    assert with_reasoning.total_usd == Decimal("0.0006")
    visible_only = _cost("openai", "gpt-4o-mini", TokenCounts(output=100))
    assert visible_only.output_usd == Decimal("0.00006")


def test_glm_sample_with_cache_and_reasoning() -> None:
    # The real Z.ai sample: 12 uncached + 3 cached, 10 visible + 239 reasoning.
    # input: 12*0.6 + 3*0.11 = 7.2 + 0.33 = 7.53 micro-USD ; output: 249*2.2 = 547.8 micro-USD
    tokens = TokenCounts(input_uncached=12, cache_read=3, output=10, reasoning=239)
    cost = _cost("zai", "glm-4.5", tokens)
    assert cost.input_usd == Decimal("0.00000753")
    assert cost.output_usd == Decimal("0.0005478")
    assert cost.total_usd == Decimal("0.00055533")


# The real DeepSeek reasoner sample: 175 miss + 320 hit, 26 visible + 118 reasoning.
DEEPSEEK_TOKENS = TokenCounts(input_uncached=175, cache_read=320, output=26, reasoning=118)


def test_deepseek_peak_price_during_the_day() -> None:
    # input: 175*0.27 + 320*0.07 = 47.25 + 22.4 = 69.65 micro-USD ; output: 144*1.1 = 158.4
    cost = _cost("deepseek", "deepseek-chat", DEEPSEEK_TOKENS, NOON)
    assert cost.input_usd == Decimal("0.00006965")
    assert cost.output_usd == Decimal("0.0001584")
    assert cost.total_usd == Decimal("0.00022805")


def test_deepseek_off_peak_price_in_the_evening() -> None:
    # input: 175*0.135 + 320*0.035 = 23.625 + 11.2 = 34.825 micro-USD ; output: 144*0.55 = 79.2
    cost = _cost("deepseek", "deepseek-chat", DEEPSEEK_TOKENS, EVENING)
    assert cost.input_usd == Decimal("0.000034825")
    assert cost.output_usd == Decimal("0.0000792")
    assert cost.total_usd == Decimal("0.000114025")


def test_deepseek_peak_and_off_peak_have_distinct_price_versions() -> None:
    peak = _cost("deepseek", "deepseek-chat", DEEPSEEK_TOKENS, NOON)
    off_peak = _cost("deepseek", "deepseek-chat", DEEPSEEK_TOKENS, EVENING)
    assert peak.price_version_id != off_peak.price_version_id
    # the same instant always resolves to the same version (replays price like live)
    again = _cost("deepseek", "deepseek-chat", DEEPSEEK_TOKENS, NOON)
    assert again == peak


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (datetime(2025, 6, 1, 0, 29, 59, tzinfo=UTC), Decimal("0.135")),
        (datetime(2025, 6, 1, 0, 30, 0, tzinfo=UTC), Decimal("0.27")),
        (datetime(2025, 6, 1, 16, 29, 59, tzinfo=UTC), Decimal("0.27")),
        (datetime(2025, 6, 1, 16, 30, 0, tzinfo=UTC), Decimal("0.135")),
    ],
    ids=["00:29:59-off", "00:30:00-peak", "16:29:59-peak", "16:30:00-off"],
)
def test_deepseek_time_of_day_boundaries(at: datetime, expected: Decimal) -> None:
    # 1_000_000 uncached input tokens cost exactly the per-million input price
    cost = _cost("deepseek", "deepseek-chat", TokenCounts(input_uncached=1_000_000), at)
    assert cost.total_usd == expected


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        # 08:00 in UTC+8 is 00:00 UTC -> off-peak (local wall clock would say peak)
        (datetime(2025, 6, 1, 8, 0, tzinfo=timezone(timedelta(hours=8))), Decimal("0.135")),
        # 23:00 in UTC+9 is 14:00 UTC -> peak (local wall clock would say off-peak)
        (datetime(2025, 6, 1, 23, 0, tzinfo=timezone(timedelta(hours=9))), Decimal("0.27")),
    ],
    ids=["utc+8-morning-is-off-peak", "utc+9-night-is-peak"],
)
def test_deepseek_event_in_other_timezone_uses_utc_window(at: datetime, expected: Decimal) -> None:
    event = make_event("deepseek", "deepseek-chat", TokenCounts(input_uncached=1_000_000), at)
    priced = price_event(event)
    assert priced.price_status == "priced"
    assert priced.cost_usd == expected


def test_unknown_model_has_no_price() -> None:
    tokens = TokenCounts(input_uncached=1000, output=500)
    assert price_tokens("alibaba", "qwen-plus", tokens, NOON) is None


def test_unknown_model_event_is_unpriced_not_free() -> None:
    event = make_event("alibaba", "qwen-plus", TokenCounts(input_uncached=1000, output=500))
    priced = price_event(event)
    assert priced.price_status == "unpriced"
    assert priced.cost_usd is None
    assert priced.cost_by_class is None
    assert priced.billing_currency is None
    assert priced.price_version_id is None
    assert b'"cost_usd"' not in priced.to_wire()
    assert event.price_status == "pending"


def test_repricing_unknown_model_clears_stale_cost() -> None:
    stale = make_event(
        "alibaba",
        "qwen-plus",
        TokenCounts(input_uncached=1000),
        price_status="priced",
        cost_usd=Decimal("0.001"),
        cost_by_class={"input_uncached": Decimal("0.001")},
        price_version_id="old",
    )
    priced = price_event(stale)
    assert priced.price_status == "unpriced"
    assert priced.cost_usd is None
    assert priced.cost_by_class is None
    assert priced.billing_currency is None
    assert priced.price_version_id is None


def test_price_event_returns_priced_copy_and_leaves_original_alone() -> None:
    event = make_event("openai", "gpt-4o-mini", TokenCounts(input_uncached=1000, output=500))
    before = event.model_dump()
    priced = price_event(event)

    assert priced is not event
    assert priced.price_status == "priced"
    assert priced.cost_usd == Decimal("0.00045")
    assert priced.cost_by_class == {
        "input_uncached": Decimal("0.00015"),
        "output": Decimal("0.0003"),
    }
    assert priced.cost_usd == sum(priced.cost_by_class.values())
    assert priced.billing_currency == "USD" and priced.fx_rate == 1
    assert isinstance(priced.price_version_id, str)
    assert priced.price_version_id.strip()
    for value in (priced.cost_usd, *priced.cost_by_class.values()):
        assert type(value) is Decimal

    # everything except the pricing fields is carried over unchanged
    after = priced.model_dump()
    for name in PRICING_FIELDS:
        before_value = before.pop(name)
        after.pop(name)
        assert getattr(event, name) == before_value
    assert after == before

    # the original is untouched and cannot be changed
    assert event.price_status == "pending"
    assert event.cost_usd is None
    assert event.price_version_id is None
    with pytest.raises(ValidationError):
        event.cost_usd = Decimal("1")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("provider", "model", "tokens", "at"),
    [
        (
            "openai",
            "gpt-4o-mini",
            TokenCounts(input_uncached=1000, cache_read=2000, output=500),
            NOON,
        ),
        ("anthropic", "claude-3-5-sonnet", TokenCounts(input_uncached=3, cache_write=418), NOON),
        ("deepseek", "deepseek-chat", DEEPSEEK_TOKENS, EVENING),
        ("zai", "glm-4.5", TokenCounts(input_uncached=12, cache_read=3, reasoning=239), NOON),
    ],
    ids=["openai", "anthropic", "deepseek", "zai"],
)
def test_price_event_total_is_sum_of_parts(
    provider: str, model: str, tokens: TokenCounts, at: datetime
) -> None:
    priced = price_event(make_event(provider, model, tokens, at))
    assert priced.price_status == "priced"
    assert priced.cost_by_class is not None
    assert priced.cost_usd == sum(priced.cost_by_class.values())
    assert priced.cost_usd > 0


def test_price_event_is_idempotent() -> None:
    event = make_event("deepseek", "deepseek-chat", DEEPSEEK_TOKENS, NOON)
    once = price_event(event)
    twice = price_event(once)
    assert twice == once
    assert twice.cost_usd == Decimal("0.00022805")


def test_priced_event_wire_carries_exact_decimal_strings() -> None:
    priced = price_event(make_event("deepseek", "deepseek-chat", DEEPSEEK_TOKENS, EVENING))
    wire = priced.to_wire()
    assert b'"cost_usd":"0.000114025"' in wire
    back = UsageEvent.from_wire(wire)
    assert back == priced
    assert type(back.cost_usd) is Decimal
    assert back.cost_usd == Decimal("0.000114025")


def test_an_embedding_model_is_priced_on_input_and_refuses_output() -> None:
    # text-embedding-3-small: $0.02 per million input tokens, no output price
    embedded = price_tokens(
        "openai", "text-embedding-3-small", TokenCounts(input_uncached=1000), NOON
    )
    assert embedded is not None and embedded.total_usd == Decimal("0.00002")
    with_output = Pricer().price(
        "openai", "text-embedding-3-small", TokenCounts(input_uncached=10, output=5), NOON
    )
    assert isinstance(with_output, Unpriced) and "input only" in with_output.reason
