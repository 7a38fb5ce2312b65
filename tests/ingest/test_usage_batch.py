"""The columnar path (ingest.usage_batch) against the per-record path it stands in for.

Whatever the columnar path takes, it must write exactly the row the per-record path (pydantic
contract, Pricer.price_event, store.call_row) writes for the same payload; whatever it cannot
be sure of, it must hand back. Deterministic (`derandomize=True`), at most 40 batches.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.price_book import (
    ClassRates,
    FxRate,
    PriceVersion,
    Tier,
    TimeWindow,
    load_price_book,
)
from ingest.pricing import Pricer
from ingest.token_usage import tokens_from_usage
from ingest.topics import USAGE_EVENTS
from ingest.usage_batch import _STRUCTURE, UsageBatchPricer
from ingest.usage_event import TokenCounts, UsageEvent
from tests.support import consumer_record, usage_event
from warehouse.store import call_row

REPO = Path(__file__).resolve().parents[2]

# Own prices in CNY with whole-call tiers (qwen3-max, glm-4.5), a tenant's contract (initech's
# gpt-4o), a daily window, and catalog prices with time-of-day bounds (deepseek).
BOOK = load_price_book(REPO / "tokenops/demo_config/price_book.yaml")
BOOK.add(
    PriceVersion(
        provider="moonshotai",
        model="kimi-k2",
        effective_from=datetime(2026, 3, 1, 8, 30, tzinfo=UTC),
        source="test: a night rate",
        per_million=ClassRates(input=Decimal("0.6"), output=Decimal("2.5")),
        windows=(
            TimeWindow(
                start=time(22, 0),
                end=time(6, 0),
                per_million=ClassRates(input=Decimal("0.3"), output=Decimal("1.25")),
            ),
        ),
    )
)
MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("anthropic", "claude-3-5-sonnet-latest"),
    ("deepseek", "deepseek-chat"),
    ("moonshotai", "kimi-k2"),
    ("alibaba", "qwen3-max"),
    ("zhipu", "glm-4.5"),
    ("openai", "text-embedding-3-small"),
    ("nobody", "no-such-model"),
]
TENANTS = ["acme", "globex", "initech"]


def as_row(value: dict[str, Any]) -> dict[str, Any]:
    """A call row with amounts as Decimal, for comparing the two paths."""
    row = dict(value)
    for money in ("cost_usd", "cost_billed", "fx_rate", "cache_savings_usd"):
        if row[money] is not None:
            row[money] = Decimal(str(row[money]))
    if row["raw_usage"] is not None:
        row["raw_usage"] = json.loads(row["raw_usage"])
    row["cost_by_class"] = by_class(row["cost_by_class"])
    row["event_time"] = row["event_time"].astimezone(UTC)
    row.pop("loaded_at", None)
    row.pop("position", None)
    return row


def by_class(value: str | dict[str, Any] | None) -> dict[str, Decimal] | None:
    """A cost per class as the per-record path writes it (`money_json` text, which the store
    converts) or as the columnar path stages it (a struct of every class, NULL if not charged)."""
    if value is None:
        return None
    pairs = json.loads(value) if isinstance(value, str) else value
    return {name: Decimal(amount) for name, amount in pairs.items() if amount is not None}


def per_record(pricer: Pricer, payload: bytes) -> dict[str, Any]:
    event = pricer.price_event(UsageEvent.from_wire(payload))
    return as_row(call_row(event, datetime.now(UTC), pricer.cache_savings_usd(event)))


@st.composite
def events(draw: st.DrawFn) -> UsageEvent:
    provider, model = draw(st.sampled_from(MODELS))
    cached = draw(st.sampled_from([0, 0, 1024, 4096]))
    prompt = cached + draw(st.integers(0, 300_000))
    reasoning = draw(st.sampled_from([0, 0, 64]))
    completion = reasoning + draw(st.integers(0, 9_000))
    embedding = "embedding" in model
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    if embedding:
        usage = {"prompt_tokens": prompt, "total_tokens": prompt}
    endpoint = "embeddings" if embedding else "chat.completions"
    kept = draw(st.booleans())
    return usage_event(
        tokens=tokens_from_usage(endpoint, usage),
        event_time=datetime(2026, 1, 1, tzinfo=UTC)
        + timedelta(microseconds=draw(st.integers(0, 330 * 86_400 * 10**6))),
        tenant=draw(st.sampled_from(TENANTS)),
        feature=draw(st.sampled_from([None, "search", "chat é"])),
        prompt_version=draw(st.sampled_from([None, "v1", "v2"])),
        tags=tuple(draw(st.lists(st.sampled_from(["beta", "eu", "批"]), max_size=2))),
        endpoint=endpoint,
        requested_model=model,
        served_model=model,
        provider=provider,
        provider_model=model,
        attempt=draw(st.integers(1, 3)),
        fallback_reason=draw(st.sampled_from([None, "http_503"])),
        service_tier=draw(st.sampled_from([None, None, "flex"])),
        streamed=draw(st.booleans()),
        latency_ms=draw(st.integers(0, 60_000)),
        usage_source=draw(st.sampled_from(["provider", "provider", "estimated"])),
        raw_usage=usage if kept else None,
        outcome=draw(st.sampled_from(["ok", "ok", "upstream_error", "cancelled"])),
        http_status=draw(st.sampled_from([None, 200, 503])),
    )


def test_the_columns_read_are_the_contract_fields_in_its_order() -> None:
    assert list(_STRUCTURE) == list(UsageEvent.model_fields)
    assert list(_STRUCTURE["tokens"]) == list(TokenCounts.model_fields)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(events(), min_size=1, max_size=25))
def test_what_the_columnar_path_takes_it_writes_as_the_per_record_path(
    batch: list[UsageEvent],
) -> None:
    pricer = Pricer(BOOK)
    staged = UsageBatchPricer(pricer).stage(
        [consumer_record(USAGE_EVENTS, 0, i, e.to_wire()) for i, e in enumerate(batch)]
    )
    taken = {row["position"]: as_row(row) for row in staged.calls.to_pylist()}
    for position, event in enumerate(batch):
        expected = per_record(pricer, event.to_wire())
        if position in taken:
            assert taken[position] == expected
        else:
            # Handed back only when the per-record path has something to explain.
            assert expected["price_status"] == "unpriced", expected


def test_a_price_in_another_currency_is_converted_line_by_line_as_the_pricer_does() -> None:
    pricer = Pricer(BOOK)
    tokens = TokenCounts(input_uncached=33_333, cache_read=7_777, output=1_111)
    event = usage_event(
        tokens=tokens,
        provider="alibaba",
        provider_model="qwen3-max",
        event_time=datetime(2026, 5, 5, tzinfo=UTC),
    )
    staged = UsageBatchPricer(pricer).stage([consumer_record(USAGE_EVENTS, 0, 0, event.to_wire())])
    (row,) = staged.calls.to_pylist()
    assert row["billing_currency"] == "CNY"
    assert as_row(row) == per_record(pricer, event.to_wire())


CANONICAL = usage_event(
    tokens=TokenCounts(input_uncached=10, output=5),
    raw_usage={"prompt_tokens": 10, "completion_tokens": 5},
).to_wire()


def _edited(**changes: Any) -> bytes:
    value = json.loads(CANONICAL)
    value.update(changes)
    value = {key: item for key, item in value.items() if item is not None}
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"event_time": "2026-11-03T12:00:00Z"}, id="whole-second"),
        pytest.param({"event_time": "2026-11-03T12:00:00.000250Z"}, id="microseconds"),
        pytest.param({"tags": ["beta", "批"]}, id="tags"),
    ],
)
def test_events_in_the_written_shape_are_taken_by_the_columns(changes: dict[str, Any]) -> None:
    payload = _edited(**changes)
    assert UsageEvent.from_wire(payload).to_wire() == payload  # the shape tokenops writes
    staged = UsageBatchPricer(Pricer()).stage([consumer_record(USAGE_EVENTS, 0, 0, payload)])
    assert staged.calls.column("position").to_pylist() == [0]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(CANONICAL.replace(b'"tenant":"acme"', b'"tenant":"ac\\u006de"'), id="escape"),
        pytest.param(_edited(tags=["beta", None]), id="tag-null"),
        pytest.param(CANONICAL.replace(b":", b": "), id="spaces"),
        pytest.param(_edited(attempt="1"), id="number-as-string"),
        pytest.param(_edited(attempt=1.0), id="float-int"),
        pytest.param(_edited(attempt=0), id="attempt-below-1"),
        pytest.param(_edited(streamed=1), id="int-as-bool"),
        pytest.param(_edited(latency_ms=-1), id="negative-latency"),
        pytest.param(_edited(tokens={"input_uncached": -1}), id="negative-tokens"),
        pytest.param(_edited(tokens={"input_uncached": 10**20}), id="huge-tokens"),
        pytest.param(_edited(event_time="2026-11-03T12:00:00+00:00"), id="offset-not-Z"),
        pytest.param(_edited(event_time="2026-11-03T12:00:00"), id="naive-time"),
        pytest.param(_edited(event_time="2026-02-30T12:00:00Z"), id="no-such-day"),
        pytest.param(_edited(event_time="1999-12-31T23:59:59Z"), id="before-2000"),
        pytest.param(_edited(surprise=1), id="unknown-key"),
        pytest.param(_edited(schema_version=2), id="schema-version"),
        pytest.param(_edited(outcome="exploded"), id="unknown-outcome"),
        pytest.param(_edited(event_id=""), id="empty-id"),
        pytest.param(_edited(event_id="x" * 65), id="long-id"),
        pytest.param(_edited(usage_error="broken"), id="usage-error"),
        pytest.param(_edited(price_status="priced", cost_usd="1"), id="already-priced"),
        pytest.param(_edited(raw_usage={"prompt_tokens": 11}), id="usage-contradicts"),
        pytest.param(_edited(tags="beta"), id="tags-not-a-list"),
        pytest.param(_edited(http_status=2**40), id="http-status-out-of-range"),
        pytest.param(CANONICAL[:-1] + b',"tenant":"globex"}', id="repeated-key"),
        pytest.param(
            _edited(raw_usage=None, usage_source="estimated", endpoint=None), id="no-endpoint"
        ),
        pytest.param(_edited(provider=None), id="no-provider"),
        pytest.param(_edited(usage_source="estimated", raw_usage=[1, 2]), id="raw-usage-list"),
        pytest.param(_edited(service_tier=""), id="empty-service-tier"),
        pytest.param(
            _edited(usage_source="estimated", raw_usage={"k": json.loads("[" * 150 + "]" * 150)}),
            id="raw-usage-nesting",
        ),
        pytest.param(
            CANONICAL.replace(
                b'"completion_tokens":5}', b'"completion_tokens":5,"prompt_tokens":10}'
            ),
            id="raw-usage-repeated-key",
        ),
        pytest.param(b"[" + CANONICAL + b"]", id="array"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(CANONICAL[:-3], id="truncated"),
    ],
)
def test_anything_not_in_the_written_shape_is_handed_back(payload: bytes) -> None:
    records = [
        consumer_record(USAGE_EVENTS, 0, 0, CANONICAL),
        consumer_record(USAGE_EVENTS, 0, 1, payload),
    ]
    staged = UsageBatchPricer(Pricer()).stage(records)
    assert staged.calls.column("position").to_pylist() == [0]
    assert staged.rest == [records[1]]


@pytest.mark.parametrize(
    ("rates", "usd_per_unit"),
    [
        pytest.param({"input": "0.0000000000001", "output": "1"}, "1", id="price-too-fine"),
        pytest.param({"input": "600", "output": "600"}, "0.999999999999", id="near-128-bits"),
    ],
)
def test_a_price_the_columns_cannot_hold_is_left_to_the_per_record_path(
    rates: dict[str, str], usd_per_unit: str
) -> None:
    book = load_price_book(REPO / "tokenops/demo_config/price_book.yaml")
    book.add_fx(
        FxRate(
            currency="EUR",
            usd_per_unit=Decimal(usd_per_unit),
            effective_from=datetime(2026, 1, 1, tzinfo=UTC),
            source="test",
        )
    )
    book.add(
        PriceVersion(
            provider="acme-ai",
            model="odd",
            currency="EUR",
            effective_from=datetime(2026, 1, 1, tzinfo=UTC),
            source="test",
            per_million=ClassRates(**{k: Decimal(v) for k, v in rates.items()}),
        )
    )
    odd = usage_event(
        tokens=TokenCounts(input_uncached=10, output=10**12),
        provider="acme-ai",
        provider_model="odd",
        event_time=datetime(2026, 5, 5, tzinfo=UTC),
    )
    records = [
        consumer_record(USAGE_EVENTS, 0, 0, CANONICAL),
        consumer_record(USAGE_EVENTS, 0, 1, odd.to_wire()),
    ]
    staged = UsageBatchPricer(Pricer(book)).stage(records)
    assert staged.calls.column("position").to_pylist() == [0]
    assert staged.rest == [records[1]]


def test_a_tier_too_large_for_the_columns_leaves_its_whole_day_to_the_per_record_path() -> None:
    """Skipping only the oversized tier would let the base rate price the calls inside it."""
    book = load_price_book(REPO / "tokenops/demo_config/price_book.yaml")
    book.add(
        PriceVersion(
            provider="acme-ai",
            model="tiered",
            effective_from=datetime(2026, 1, 1, tzinfo=UTC),
            source="test",
            per_million=ClassRates(input=Decimal("1"), output=Decimal("2")),
            tiers=(
                Tier(
                    max_input_tokens=1000,
                    per_million=ClassRates(input=Decimal("10") ** 24, output=Decimal("2")),
                ),
            ),
        )
    )
    small, large = (
        usage_event(
            tokens=TokenCounts(input_uncached=tokens, output=10),
            provider="acme-ai",
            provider_model="tiered",
            event_time=datetime(2026, 5, 5, 12, tzinfo=UTC),
        )
        for tokens in (500, 5000)
    )
    records = [
        consumer_record(USAGE_EVENTS, 0, 0, CANONICAL),
        consumer_record(USAGE_EVENTS, 0, 1, small.to_wire()),
        consumer_record(USAGE_EVENTS, 0, 2, large.to_wire()),
    ]
    pricer = Pricer(book)
    staged = UsageBatchPricer(pricer).stage(records)
    assert staged.calls.column("position").to_pylist() == [0]
    assert staged.rest == records[1:]
    assert pricer.price_event(small).cost_usd == 500 * Decimal(10) ** 18 + Decimal("0.00002")


def test_rate_choices_cut_a_day_where_prices_change() -> None:
    choices = Pricer(BOOK).rate_choices("moonshotai", "kimi-k2", date(2026, 3, 1), None, None)
    segments = sorted(
        {(c.start.time(), c.version.source, dict(c.rates)["output"]) for c in choices}
    )
    # the catalog until 08:30 (the window's end at 06:00 is a cut, though not yet in force),
    # then the own version, then its night window from 22:00
    assert [(start, source.startswith("genai-prices")) for start, source, _ in segments] == [
        (time(0), True),
        (time(6), True),
        (time(8, 30), False),
        (time(22), False),
    ]
    assert segments[2][2] == 2 * segments[3][2]  # the night rate halves output
