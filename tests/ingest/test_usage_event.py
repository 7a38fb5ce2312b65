"""UsageEvent wire format, validation and ids."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from ingest.usage_event import TokenCounts, UsageEvent, new_event_id

EVENT_TIME = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def make_event(**overrides: Any) -> UsageEvent:
    fields: dict[str, Any] = {
        "event_id": new_event_id(),
        "event_time": EVENT_TIME,
        "tenant": "acme",
        "endpoint": "chat.completions",
        "requested_model": "gpt-4o-mini",
        "served_model": "gpt-4o-mini-2024-07-18",
        "provider": "openai",
        "provider_model": "gpt-4o-mini",
    }
    fields.update(overrides)
    return UsageEvent(**fields)


def full_event() -> UsageEvent:
    return make_event(
        relay_key_id="key-1",
        feature="search",
        prompt_version="v3",
        end_user="user-42",
        tags=("beta", "eu"),
        attempt=2,
        streamed=True,
        latency_ms=812,
        tokens=TokenCounts(
            input_uncached=8,
            cache_read=4012,
            cache_write=3,
            cache_write_1h=2,
            output=4,
            reasoning=9,
        ),
        usage_source="provider",
        raw_usage={"prompt_tokens": 4025, "prompt_tokens_details": {"cached_tokens": 4012}},
        outcome="ok",
        http_status=200,
        price_status="priced",
        cost_usd=Decimal("0.00045"),
        cost_by_class={"input_uncached": Decimal("0.00015"), "output": Decimal("0.0003")},
        billing_currency="USD",
        price_version_id="genai-prices@x:openai:gpt-4o-mini:base",
    )


def test_full_event_wire_round_trip() -> None:
    event = full_event()
    wire = event.to_wire()
    assert isinstance(wire, bytes)
    back = UsageEvent.from_wire(wire)
    assert back == event
    assert back.tags == ("beta", "eu")
    assert back.tokens.input_total == 4025
    # str payloads are accepted too
    assert UsageEvent.from_wire(wire.decode()) == event


def test_minimal_event_wire_round_trip_omits_nulls() -> None:
    event = make_event()
    wire = event.to_wire()
    doc = json.loads(wire)
    for absent in ("cost_usd", "cost_by_class", "price_version_id", "raw_usage", "http_status"):
        assert absent not in doc
    assert doc["price_status"] == "pending"
    back = UsageEvent.from_wire(wire)
    assert back == event
    assert back.cost_usd is None


def test_money_is_a_decimal_string_on_the_wire() -> None:
    doc = json.loads(full_event().to_wire())
    assert doc["cost_usd"] == "0.00045"
    assert doc["cost_by_class"] == {"input_uncached": "0.00015", "output": "0.0003"}
    assert doc["billing_currency"] == "USD"


def test_money_keeps_precision_a_float_would_lose() -> None:
    exact = Decimal("0.30000000000000000001")
    event = make_event(cost_usd=exact)
    doc = json.loads(event.to_wire())
    assert doc["cost_usd"] == "0.30000000000000000001"
    back = UsageEvent.from_wire(event.to_wire())
    assert type(back.cost_usd) is Decimal
    assert back.cost_usd == exact


@pytest.mark.parametrize(
    "local",
    [
        datetime(2025, 6, 1, 20, 0, tzinfo=timezone(timedelta(hours=8))),
        datetime(2025, 6, 1, 6, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    ],
    ids=["utc+8", "utc-5:30"],
)
def test_event_time_is_normalised_to_utc(local: datetime) -> None:
    event = make_event(event_time=local)
    assert event.event_time == EVENT_TIME
    assert event.event_time.utcoffset() == timedelta(0)
    assert event.event_time.hour == 12
    doc = json.loads(event.to_wire())
    assert doc["event_time"] == "2025-06-01T12:00:00Z"
    back = UsageEvent.from_wire(event.to_wire())
    assert back.event_time.utcoffset() == timedelta(0)
    assert back == event


def test_event_time_offset_on_the_wire_is_normalised() -> None:
    doc = json.loads(make_event().to_wire())
    doc["event_time"] = "2025-06-01T14:00:00+02:00"
    event = UsageEvent.from_wire(json.dumps(doc))
    assert event.event_time == EVENT_TIME
    assert event.event_time.utcoffset() == timedelta(0)
    assert event.event_time.hour == 12


def test_naive_event_time_is_rejected() -> None:
    with pytest.raises(ValidationError):
        make_event(event_time=datetime(2025, 6, 1, 12, 0))


def test_unknown_field_is_rejected_in_constructor() -> None:
    with pytest.raises(ValidationError, match="cost_eur"):
        make_event(cost_eur=Decimal("1"))


def test_unknown_field_is_rejected_on_the_wire() -> None:
    doc = json.loads(make_event().to_wire())
    UsageEvent.from_wire(json.dumps(doc))  # the unmodified document is valid
    doc["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        UsageEvent.from_wire(json.dumps(doc))


def test_unknown_token_class_is_rejected() -> None:
    with pytest.raises(ValidationError):
        TokenCounts(input_uncached=1, audio=3)  # type: ignore[call-arg]
    doc = json.loads(make_event().to_wire())
    doc["tokens"]["audio"] = 3
    with pytest.raises(ValidationError, match="audio"):
        UsageEvent.from_wire(json.dumps(doc))


def test_wrong_schema_version_is_rejected() -> None:
    doc = json.loads(make_event().to_wire())
    doc["schema_version"] = 2
    with pytest.raises(ValidationError):
        UsageEvent.from_wire(json.dumps(doc))


TOKEN_FIELDS = [
    "input_uncached",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "output",
    "reasoning",
]


@pytest.mark.parametrize("field", TOKEN_FIELDS)
def test_negative_token_count_is_rejected(field: str) -> None:
    assert getattr(TokenCounts(**{field: 0}), field) == 0
    with pytest.raises(ValidationError):
        TokenCounts(**{field: -1})


@pytest.mark.parametrize("field", TOKEN_FIELDS)
def test_negative_token_count_is_rejected_on_the_wire(field: str) -> None:
    doc = json.loads(make_event().to_wire())
    doc["tokens"][field] = -5
    with pytest.raises(ValidationError):
        UsageEvent.from_wire(json.dumps(doc))


def test_token_totals() -> None:
    tokens = TokenCounts(
        input_uncached=1,
        cache_read=20,
        cache_write=300,
        cache_write_1h=4000,
        output=5,
        reasoning=60,
    )
    assert tokens.input_total == 4321
    assert tokens.output_total == 65


def test_event_is_frozen() -> None:
    event = make_event()
    with pytest.raises(ValidationError):
        event.tenant = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        event.tokens.output = 5  # type: ignore[misc]
    assert event.tenant == "acme"


def test_new_event_ids_are_unique_and_time_ordered() -> None:
    first = [new_event_id() for _ in range(500)]
    time.sleep(0.005)
    second = [new_event_id() for _ in range(500)]
    ids = first + second
    assert len(set(ids)) == 1000
    assert max(first) < min(second)
    assert sorted(ids)[:500] == sorted(first)
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_new_event_id_embeds_creation_millisecond() -> None:
    before = int(time.time() * 1000)
    value = new_event_id()
    after = int(time.time() * 1000)
    ms = uuid.UUID(value).int >> 80
    assert before <= ms <= after


def test_new_event_id_is_accepted_by_the_event() -> None:
    value = new_event_id()
    assert make_event(event_id=value).event_id == value


def test_kafka_key_is_the_tenant_bytes() -> None:
    assert make_event().kafka_key() == b"acme"
    assert make_event(tenant="café-δ").kafka_key() == "café-δ".encode()
    # two events of one tenant share a partition key, different tenants do not
    assert make_event().kafka_key() == make_event(feature="x").kafka_key()
    assert make_event(tenant="globex").kafka_key() != make_event().kafka_key()
