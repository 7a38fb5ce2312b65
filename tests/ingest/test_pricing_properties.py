"""Property tests for the pricing engine, the price book and token normalisation.

Every property is deterministic (`derandomize=True`) and bounded to at most 200 examples.
"""

from __future__ import annotations

import decimal
from datetime import UTC, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ingest.price_book import (
    TOKEN_CLASSES,
    ClassRates,
    FxRate,
    PriceBook,
    PriceVersion,
    TimeWindow,
    load_price_book,
)
from ingest.pricing import Cost, Pricer, UsageInvariantError
from ingest.token_usage import UsageMismatch, from_openai_chat_usage
from ingest.usage_event import TokenCounts, UsageEvent
from tests.support import usage_event
from tokenops.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
D = Decimal
MILLIONTH = D("0.000001")
MAX_TOKENS = 2_000_000

DEMO_BOOK = load_price_book(REPO / "tokenops/demo_config/price_book.yaml")
BOOK_PRICER = Pricer(DEMO_BOOK)
CATALOG_PRICER = Pricer()


def _settings(examples: int) -> Any:
    assert examples <= 200
    return settings(max_examples=examples, deadline=None, derandomize=True)


def _fx_cny(at: datetime) -> Decimal:
    """The demo file's dated CNY rate, written out here rather than read from the book."""
    return D("0.1405") if at >= datetime(2026, 1, 1, tzinfo=UTC) else D("0.1370")


# ---- strategies --------------------------------------------------------------------------------

# Zero, small and large counts, so classes are often absent and totals cross tier bounds.
count = st.one_of(st.just(0), st.integers(0, 300), st.integers(0, MAX_TOKENS))
token_counts = st.builds(
    TokenCounts,
    input_uncached=count,
    cache_read=count,
    cache_write=count,
    cache_write_1h=count,
    output=count,
    reasoning=count,
)


def moments(start: datetime, end: datetime) -> st.SearchStrategy[datetime]:
    return st.datetimes(min_value=start, max_value=end, timezones=st.just(UTC))


times_2025_2026 = moments(datetime(2025, 1, 1), datetime(2026, 12, 31, 23, 59, 59))
# Every own version of the demo file is in force from 2025-09-01.
times_book = moments(datetime(2025, 9, 1), datetime(2026, 12, 31, 23, 59, 59))


@st.composite
def split_input(draw: st.DrawFn, input_total: int) -> TokenCounts:
    """`input_total` input tokens spread over the four input classes, plus some output."""
    cache_read = draw(st.integers(0, input_total))
    cache_write = draw(st.integers(0, input_total - cache_read))
    cache_write_1h = draw(st.integers(0, input_total - cache_read - cache_write))
    return TokenCounts(
        input_uncached=input_total - cache_read - cache_write - cache_write_1h,
        cache_read=cache_read,
        cache_write=cache_write,
        cache_write_1h=cache_write_1h,
        output=draw(count),
        reasoning=draw(count),
    )


def _genai_usage(tokens: TokenCounts) -> Usage:
    # genai-prices counts cache writes (any retention) inside cache_write_tokens, 1 h writes as
    # a part of them, cache reads and writes inside input_tokens, reasoning inside output_tokens.
    return Usage(
        input_tokens=tokens.input_total,
        cache_read_tokens=tokens.cache_read,
        cache_write_tokens=tokens.cache_write + tokens.cache_write_1h,
        cache_write_1h_tokens=tokens.cache_write_1h,
        output_tokens=tokens.output_total,
    )


def _cost(result: object) -> Cost:
    assert isinstance(result, Cost), result
    return result


# ---- the engine against the library it converts -----------------------------------------------

# calc_price was tried on every class combination for these six models (zeros, small and
# 2M-token counts, including cache_write and cache_write_1h for models without those prices)
# and never raised, so the token strategy is not restricted for any of them.
CATALOG_MODELS = [
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-3-5-sonnet"),
    ("anthropic", "claude-sonnet-4-5"),
    ("deepseek", "deepseek-chat"),
    ("moonshotai", "kimi-k2"),
    ("minimax", "MiniMax-M2"),
]


@_settings(200)
@given(model=st.sampled_from(CATALOG_MODELS), tokens=token_counts, at=times_2025_2026)
def test_catalog_price_equals_genai_prices(
    model: tuple[str, str], tokens: TokenCounts, at: datetime
) -> None:
    provider, name = model
    ours = _cost(CATALOG_PRICER.price(provider, name, tokens, at))
    theirs = calc_price(
        _genai_usage(tokens), model_ref=name, provider_id=provider, genai_request_timestamp=at
    ).total_price
    assert ours.total_usd == theirs
    assert ours.price_version_id.startswith("genai-prices@")


@_settings(100)
@given(
    tokens=st.integers(199_950, 200_050).flatmap(split_input),
    at=times_2025_2026,
)
def test_claude_sonnet_4_5_cliff_equals_genai_prices(tokens: TokenCounts, at: datetime) -> None:
    ours = _cost(CATALOG_PRICER.price("anthropic", "claude-sonnet-4-5", tokens, at))
    theirs = calc_price(
        _genai_usage(tokens),
        model_ref="claude-sonnet-4-5",
        provider_id="anthropic",
        genai_request_timestamp=at,
    ).total_price
    assert ours.total_usd == theirs


# How a service tier is named in genai-prices' price context (written out, not imported).
GENAI_CONTEXT: dict[str | None, dict[str, str] | None] = {
    None: None,
    "default": None,
    "priority": {"service_tier": "priority"},
    "flex": {"service_tier": "flex"},
    "batch": {"processing": "batch"},
}


@_settings(150)
@given(
    model=st.sampled_from(["gpt-4o-mini", "gpt-4o", "gpt-5-mini"]),
    tier=st.sampled_from(sorted(GENAI_CONTEXT, key=str)),
    tokens=token_counts,
    # the priority, flex and batch variants start on 2026-10-12 and 2026-10-14
    at=moments(datetime(2026, 10, 10), datetime(2026, 10, 16)),
)
def test_openai_service_tiers_equal_genai_prices(
    model: str, tier: str | None, tokens: TokenCounts, at: datetime
) -> None:
    ours = _cost(CATALOG_PRICER.price("openai", model, tokens, at, None, tier))
    theirs = calc_price(
        _genai_usage(tokens),
        model_ref=model,
        provider_id="openai",
        genai_request_timestamp=at,
        price_context=GENAI_CONTEXT[tier],
    ).total_price
    assert ours.total_usd == theirs


# ---- structure of every cost -------------------------------------------------------------------

# (provider, model, tenant, service tier): catalog and own-book versions, USD and CNY.
CALLS = [
    ("openai", "gpt-4o-mini", None, None),
    ("openai", "gpt-4o", "initech", None),
    ("openai", "gpt-5-mini", None, "flex"),
    ("anthropic", "claude-3-5-sonnet", None, None),
    ("anthropic", "claude-sonnet-4-5", None, None),
    ("deepseek", "deepseek-chat", None, None),
    ("deepseek", "deepseek-reasoner", None, None),
    ("moonshotai", "kimi-k2", None, None),
    ("minimax", "MiniMax-M2", None, None),
    ("zai", "glm-4.5", None, None),
    ("perplexity", "sonar", None, None),
    ("alibaba", "qwen-plus", None, None),
    ("alibaba", "qwen3-max", None, None),
    ("zhipu", "glm-4.5", None, None),
]


@_settings(200)
@given(call=st.sampled_from(CALLS), tokens=token_counts, at=times_book)
def test_cost_structure(
    call: tuple[str, str, str | None, str | None], tokens: TokenCounts, at: datetime
) -> None:
    provider, model, tenant, tier = call
    cost = _cost(BOOK_PRICER.price(provider, model, tokens, at, tenant, tier))
    assert cost.total_usd == sum(cost.by_class_usd.values(), start=D(0))
    assert cost.total == sum(cost.by_class.values(), start=D(0))
    amounts = [cost.total, cost.total_usd, cost.fx_rate, cost.input_usd, cost.output_usd]
    amounts += [*cost.by_class.values(), *cost.by_class_usd.values()]
    for amount in amounts:
        assert type(amount) is Decimal
        assert amount.is_finite()
        assert amount >= 0
    assert set(cost.by_class_usd) == set(cost.by_class)
    with_tokens = {name for name in TOKEN_CLASSES if getattr(tokens, name)}
    # a class with zero tokens has no line; every rate here is positive, so the converse holds
    assert set(cost.by_class) - {"request"} == with_tokens
    # only perplexity/sonar has a per-request fee
    assert ("request" in cost.by_class) == (provider == "perplexity")
    assert cost.input_usd + cost.output_usd + cost.by_class_usd.get("request", D(0)) == (
        cost.total_usd
    )


@_settings(200)
@given(
    call=st.sampled_from(CALLS),
    tokens=token_counts,
    at=times_book,
    warm=st.lists(times_book, max_size=3),
)
def test_price_agrees_with_the_version_in_force(
    call: tuple[str, str, str | None, str | None],
    tokens: TokenCounts,
    at: datetime,
    warm: list[datetime],
) -> None:
    """The priced path (with its caches) against the declarative one: the version `version()`
    finds, its `rates_for` the call, the book's dated FX rate; and a Pricer that priced other
    moments first against a fresh one."""
    provider, model, tenant, tier = call
    for moment in warm:
        BOOK_PRICER.price(provider, model, tokens, moment, tenant, tier)
    cost = _cost(BOOK_PRICER.price(provider, model, tokens, at, tenant, tier))
    assert cost == Pricer(DEMO_BOOK).price(provider, model, tokens, at, tenant, tier)
    version = BOOK_PRICER.version(provider, model, at, tenant, tier)
    assert version is not None
    assert cost.price_version_id == version.id
    assert cost.currency == version.currency
    assert cost.fx_rate == DEMO_BOOK.usd_per_unit(version.currency, at)
    rates = version.rates_for(tokens.input_total, tokens.output_total, at)
    expected = {
        name: getattr(tokens, name) * rates.per_million(name) * MILLIONTH
        for name in TOKEN_CLASSES
        if getattr(tokens, name)
    }
    if rates.request:
        expected["request"] = rates.request
    assert cost.by_class == expected


# ---- monotonic for flat versions ---------------------------------------------------------------

# Versions with neither tiers nor time windows (checked in the test): one rate per class.
FLAT = [
    ("openai", "gpt-4o-mini", None),
    ("openai", "gpt-4o", None),
    ("openai", "gpt-4o", "initech"),
    ("anthropic", "claude-3-5-sonnet", None),
    ("moonshotai", "kimi-k2", None),
    ("minimax", "MiniMax-M2", None),
    ("zai", "glm-4.5", None),
    ("perplexity", "sonar", None),
    ("alibaba", "qwen-plus", None),
]


@_settings(200)
@given(
    call=st.sampled_from(FLAT),
    tokens=token_counts,
    token_class=st.sampled_from(TOKEN_CLASSES),
    extra=st.integers(1, MAX_TOKENS),
    at=times_book,
)
def test_more_tokens_never_cost_less(
    call: tuple[str, str, str | None],
    tokens: TokenCounts,
    token_class: str,
    extra: int,
    at: datetime,
) -> None:
    provider, model, tenant = call
    version = BOOK_PRICER.version(provider, model, at, tenant)
    assert version is not None
    assert version.tiers == () and version.windows == ()
    more = tokens.model_copy(update={token_class: getattr(tokens, token_class) + extra})
    before = _cost(BOOK_PRICER.price(provider, model, tokens, at, tenant))
    after = _cost(BOOK_PRICER.price(provider, model, more, at, tenant))
    assert after.total_usd >= before.total_usd
    assert after.total >= before.total
    # every rate of these versions is positive, so the extra tokens cost something
    assert after.total_usd > before.total_usd


# ---- whole-call tiers --------------------------------------------------------------------------


def _qwen3_max_rates(input_total: int) -> tuple[Decimal, Decimal]:
    """The demo file's qwen3-max tiers (CNY per million input, output), written out."""
    if input_total < 32768:
        return D("2.5"), D("10")
    if input_total < 131072:
        return D("4"), D("16")
    return D("7"), D("28")


near_qwen_bounds = st.one_of(
    st.integers(32768 - 40, 32768 + 40),
    st.integers(131072 - 40, 131072 + 40),
    st.integers(0, 400_000),
)


@_settings(200)
@given(tokens=near_qwen_bounds.flatmap(split_input), at=times_book)
def test_qwen3_max_whole_call_tiers(tokens: TokenCounts, at: datetime) -> None:
    cost = _cost(BOOK_PRICER.price("alibaba", "qwen3-max", tokens, at))
    input_rate, output_rate = _qwen3_max_rates(tokens.input_total)
    # no cache prices: every input class at the tier's input rate, reasoning at its output rate
    expected = {
        name: getattr(tokens, name) * input_rate * MILLIONTH
        for name in ("input_uncached", "cache_read", "cache_write", "cache_write_1h")
    }
    expected |= {
        name: getattr(tokens, name) * output_rate * MILLIONTH for name in ("output", "reasoning")
    }
    expected = {name: amount for name, amount in expected.items() if amount}
    assert cost.by_class == expected
    whole = (tokens.input_total * input_rate + tokens.output_total * output_rate) * MILLIONTH
    assert cost.total == whole
    assert cost.currency == "CNY"
    assert cost.total_usd == whole * _fx_cny(at)


# ---- CNY ---------------------------------------------------------------------------------------


@_settings(200)
@given(
    model=st.sampled_from(
        [("alibaba", "qwen-plus"), ("alibaba", "qwen3-max"), ("zhipu", "glm-4.5")]
    ),
    tokens=token_counts,
    at=times_book,
)
def test_cny_costs_convert_at_the_dated_rate(
    model: tuple[str, str], tokens: TokenCounts, at: datetime
) -> None:
    cost = _cost(BOOK_PRICER.price(*model, tokens, at))
    fx = _fx_cny(at)
    assert cost.currency == "CNY"
    assert cost.fx_rate == fx
    assert cost.price_version_id.startswith("book:")
    for name, amount in cost.by_class.items():
        assert cost.by_class_usd[name] == amount * fx
    assert cost.total_usd == sum((amount * fx for amount in cost.by_class.values()), start=D(0))


def test_fx_rate_effective_mid_day_is_refused() -> None:
    # FX rates are daily (and cached per UTC day): a rate starting mid-day would be ambiguous.
    with pytest.raises(ValidationError, match="FX rates are daily"):
        FxRate(
            currency="CNY",
            usd_per_unit="0.2",
            effective_from=datetime(2026, 1, 2, 12, 0, tzinfo=UTC),
            source="t",
        )
    midnight_elsewhere = datetime(2026, 1, 2, 8, 0, tzinfo=timezone(timedelta(hours=8)))
    rate = FxRate(currency="CNY", usd_per_unit="0.2", effective_from=midnight_elsewhere, source="t")
    assert rate.effective_from == datetime(2026, 1, 2, tzinfo=UTC)


@st.composite
def openai_usage(draw: st.DrawFn) -> tuple[dict[str, Any], TokenCounts]:
    """A self-consistent OpenAI-compatible usage dict and the classes it means."""
    uncached, cached, cache_write, visible, reasoning = (draw(count) for _ in range(5))
    prompt = uncached + cached + cache_write
    completion = visible + reasoning
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    if draw(st.booleans()):
        usage["total_tokens"] = prompt + completion
    details: dict[str, int] = {}
    deepseek_style = cache_write == 0 and draw(st.booleans())
    if deepseek_style:
        usage["prompt_cache_hit_tokens"] = cached
        usage["prompt_cache_miss_tokens"] = prompt - cached
    if (cached and not deepseek_style) or draw(st.booleans()):
        details["cached_tokens"] = cached
    if cache_write or draw(st.booleans()):
        details["cache_write_tokens"] = cache_write
    if details:
        usage["prompt_tokens_details"] = details
    if reasoning or draw(st.booleans()):
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    expected = TokenCounts(
        input_uncached=uncached,
        cache_read=cached,
        cache_write=cache_write,
        output=visible,
        reasoning=reasoning,
    )
    return usage, expected


@_settings(200)
@given(sample=openai_usage())
def test_consistent_openai_usage_keeps_the_totals(
    sample: tuple[dict[str, Any], TokenCounts],
) -> None:
    usage, expected = sample
    tokens = from_openai_chat_usage(usage)
    assert tokens.input_total == usage["prompt_tokens"]
    assert tokens.output_total == usage["completion_tokens"]
    assert tokens == expected


@_settings(100)
@given(sample=openai_usage(), excess=st.integers(1, MAX_TOKENS))
def test_cached_above_prompt_is_refused(
    sample: tuple[dict[str, Any], TokenCounts], excess: int
) -> None:
    usage, _ = sample
    usage = {**usage, "prompt_tokens_details": {"cached_tokens": usage["prompt_tokens"] + excess}}
    usage.pop("prompt_cache_hit_tokens", None)
    usage.pop("prompt_cache_miss_tokens", None)
    with pytest.raises(UsageMismatch):
        from_openai_chat_usage(usage)


@_settings(100)
@given(sample=openai_usage(), error=st.integers(1, MAX_TOKENS), below=st.booleans())
def test_wrong_total_tokens_is_refused(
    sample: tuple[dict[str, Any], TokenCounts], error: int, below: bool
) -> None:
    usage, _ = sample
    right = usage["prompt_tokens"] + usage["completion_tokens"]
    wrong = right - error if below and right >= error else right + error
    usage = {**usage, "total_tokens": wrong}
    with pytest.raises(UsageMismatch):
        from_openai_chat_usage(usage)


def _event(tokens: TokenCounts, **fields: Any) -> UsageEvent:
    return usage_event(tokens, **{"usage_source": "provider", **fields})


@_settings(100)
@given(
    sample=openai_usage(),
    token_class=st.sampled_from(TOKEN_CLASSES),
    delta=st.integers(1, 1000),
)
def test_price_event_refuses_tokens_that_contradict_raw_usage(
    sample: tuple[dict[str, Any], TokenCounts], token_class: str, delta: int
) -> None:
    usage, tokens = sample
    honest = CATALOG_PRICER.price_event(_event(tokens, raw_usage=usage))
    assert honest.price_status == "priced"
    assert (
        honest.cost_usd
        == _cost(CATALOG_PRICER.price("openai", "gpt-4o-mini", tokens, honest.event_time)).total_usd
    )
    changed = tokens.model_copy(update={token_class: getattr(tokens, token_class) + delta})
    with pytest.raises(UsageInvariantError):
        CATALOG_PRICER.price_event(_event(changed, raw_usage=usage))


@_settings(50)
@given(tokens=token_counts, reason=st.text(min_size=1, max_size=40).filter(str.strip))
def test_price_event_refuses_events_with_a_usage_error(tokens: TokenCounts, reason: str) -> None:
    with pytest.raises(UsageInvariantError) as raised:
        CATALOG_PRICER.price_event(_event(tokens, usage_error=reason))
    assert reason in str(raised.value)


# ---- no float ----------------------------------------------------------------------------------


def test_pricing_with_float_operations_trapped() -> None:
    context = decimal.getcontext()
    saved = context.traps[decimal.FloatOperation]
    half = 0.5
    context.traps[decimal.FloatOperation] = True
    try:
        with pytest.raises(decimal.FloatOperation):
            Decimal(half)  # the trap is armed
        tokens = TokenCounts(
            input_uncached=123_457, cache_read=2_345, cache_write=17, output=999, reasoning=31
        )
        # unusual minutes, so the catalog versions are built under the trap, not cached
        at = datetime(2026, 2, 3, 4, 5, 6, 789, tzinfo=UTC)
        calls = [
            ("openai", "gpt-4o-mini", None, None),
            ("openai", "gpt-4o", None, "priority"),
            ("openai", "gpt-4o", "initech", None),
            ("anthropic", "claude-sonnet-4-5", None, None),
            ("deepseek", "deepseek-chat", None, None),
            ("perplexity", "sonar", None, None),
            ("alibaba", "qwen3-max", None, None),
            ("zhipu", "glm-4.5", None, None),
        ]
        for provider, model, tenant, tier in calls:
            cost = _cost(BOOK_PRICER.price(provider, model, tokens, at, tenant, tier))
            assert cost.total_usd > 0
            assert cost.input_usd + cost.output_usd <= cost.total_usd
        event = BOOK_PRICER.price_event(_event(tokens, event_time=at))
        assert event.price_status == "priced"
    finally:
        context.traps[decimal.FloatOperation] = saved


def test_class_rates_refuse_a_float() -> None:
    with pytest.raises(ValidationError):
        ClassRates(input=0.5, output="1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "line",
    [
        "prices:\n  - {provider: a, model: m, effective_from: '2025-01-01', source: s,"
        " per_million: {input: 0.5, output: '1'}}\n",
        "fx:\n  - {currency: CNY, usd_per_unit: 0.137, effective_from: '2025-01-01', source: s}\n",
    ],
    ids=["price", "fx-rate"],
)
def test_price_book_file_refuses_an_unquoted_float(tmp_path: Path, line: str) -> None:
    book_file = tmp_path / "price_book.yaml"
    book_file.write_text(line)
    with pytest.raises(ConfigError):
        load_price_book(book_file)
    # the same file with the amount quoted loads
    book_file.write_text(line.replace("0.5", "'0.5'").replace("0.137", "'0.137'"))
    assert isinstance(load_price_book(book_file), PriceBook)


# ---- time windows ------------------------------------------------------------------------------

WINDOW_RATES = {"input": "0.5", "output": "2"}


@_settings(100)
@given(at=times_2025_2026, start=st.integers(0, 23), hours=st.integers(1, 23))
def test_utc_window_holds_on_its_half_open_interval(at: datetime, start: int, hours: int) -> None:
    end = (start + hours) % 24
    window = TimeWindow(start=time(start), end=time(end), per_million=WINDOW_RATES)
    inside = (at.hour - start) % 24 < hours
    assert window.holds(at) == inside
    version = PriceVersion(
        provider="acmeai",
        model="windowed",
        effective_from=datetime(2025, 1, 1, tzinfo=UTC),
        source="test",
        per_million={"input": "1", "output": "4"},
        windows=(window,),
    )
    cost = _cost(
        Pricer(PriceBook([version])).price("acmeai", "windowed", TokenCounts(output=10**6), at)
    )
    assert cost.total_usd == (D(2) if inside else D(4))


def test_window_bound_with_an_offset_is_converted_to_utc() -> None:
    # 08:30-16:30 Beijing time is 00:30-08:30 UTC
    window = TimeWindow(start="08:30+08:00", end="16:30+08:00", per_million=WINDOW_RATES)
    assert window.holds(datetime(2025, 6, 1, 1, 0, tzinfo=UTC))  # 09:00 in Beijing
    assert not window.holds(datetime(2025, 6, 1, 9, 0, tzinfo=UTC))  # 17:00 in Beijing
