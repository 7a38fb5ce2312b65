"""The usage event: one immutable fact per model call, shared by relay, streams and warehouse.

Wire format is the model's JSON (money as decimal strings), Kafka key = tenant. The relay
publishes events with `price_status="pending"`; pricing returns a copy with the cost fields set.
"""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, field_validator

Money = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), when_used="json")]
"""A Decimal that goes on the wire as a fixed-point string ("0.00000015", never "1.5E-7")."""

Outcome = Literal["ok", "upstream_error", "timeout", "connection_error", "cancelled"]
UsageSource = Literal["provider", "estimated", "partial", "none"]
PriceStatus = Literal["pending", "priced", "unpriced"]


class TokenCounts(BaseModel):
    """Disjoint token classes: their sum is every token the provider billed for the call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_uncached: int = Field(0, ge=0)
    cache_read: int = Field(0, ge=0)
    cache_write: int = Field(0, ge=0)
    """Cache writes at the provider's default (5 minute) retention."""
    cache_write_1h: int = Field(0, ge=0)
    output: int = Field(0, ge=0)
    """Visible output, reasoning excluded."""
    reasoning: int = Field(0, ge=0)

    @property
    def input_total(self) -> int:
        return self.input_uncached + self.cache_read + self.cache_write + self.cache_write_1h

    @property
    def output_total(self) -> int:
        return self.output + self.reasoning


class UsageEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    # identity
    event_id: str = Field(min_length=1, max_length=64)
    event_time: AwareDatetime
    """When the relay received the call (UTC); prices in force at this instant apply."""

    # attribution
    tenant: str = Field(min_length=1, max_length=128)
    relay_key_id: str | None = None
    feature: str | None = None
    prompt_version: str | None = None
    end_user: str | None = None
    tags: tuple[str, ...] = ()

    # the call
    endpoint: str
    requested_model: str
    served_model: str
    provider: str
    provider_model: str
    attempt: int = Field(1, ge=1)
    fallback_reason: str | None = None
    """Why the previous attempt of this call failed (http_503, timeout, circuit_open, ...)."""
    service_tier: str | None = None
    """The tier the provider says it served (default, flex, priority, batch)."""
    streamed: bool = False
    latency_ms: int = Field(0, ge=0)

    # usage
    tokens: TokenCounts = TokenCounts()
    usage_source: UsageSource = "provider"
    raw_usage: dict[str, Any] | None = None
    usage_error: str | None = None
    """Why the provider's usage could not be split into token classes (the event is quarantined)."""

    # outcome
    outcome: Outcome = "ok"
    http_status: int | None = None
    error_code: str | None = None

    # pricing (set by ingest.pricing, never by the relay)
    price_status: PriceStatus = "pending"
    unpriced_reason: str | None = None
    price_version_id: str | None = None
    billing_currency: str | None = None
    cost_billed: Money | None = None
    """Total in the provider's billing currency."""
    fx_rate: Money | None = None
    """USD per unit of the billing currency at event time."""
    cost_usd: Money | None = None
    cost_by_class: dict[str, Money] | None = None
    """USD per token class (and "request" for per-request fees); sums to cost_usd."""

    @field_validator("event_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def kafka_key(self) -> bytes:
        return self.tenant.encode()

    def to_wire(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_wire(cls, payload: bytes | str) -> UsageEvent:
        return cls.model_validate_json(payload)


_ID_BITS = random.Random(os.urandom(32))  # seeded once from the OS: no syscall per id


def new_event_id() -> str:
    """A time-ordered unique id (UUIDv7 layout: 48-bit ms clock, 74 random bits)."""
    ms = time.time_ns() // 1_000_000
    rand = _ID_BITS.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & (2**62 - 1))
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
