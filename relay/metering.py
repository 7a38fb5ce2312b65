"""Turns one upstream attempt into exactly one usage event."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ingest.token_usage import UsageMismatch, tokens_from_usage
from ingest.usage_event import Outcome, TokenCounts, UsageEvent, UsageSource, new_event_id
from relay.model_catalog import Target
from relay.tenants import Caller


@dataclass(frozen=True)
class Attribution:
    feature: str | None = None
    prompt_version: str | None = None
    end_user: str | None = None
    tags: tuple[str, ...] = ()

    @classmethod
    def from_request(cls, headers: Mapping[str, str], body: Mapping[str, Any]) -> Attribution:
        user = body.get("user")
        tags = headers.get("x-tags", "")
        return cls(
            feature=headers.get("x-feature") or None,
            prompt_version=headers.get("x-prompt-version") or None,
            end_user=headers.get("x-end-user") or (user if isinstance(user, str) else None),
            tags=tuple(t.strip() for t in tags.split(",") if t.strip()),
        )


def estimate_tokens(chars: int) -> int:
    """A rough tokens-from-characters estimate, used only when the provider reported nothing."""
    return (chars + 3) // 4


@dataclass
class CallMeter:
    caller: Caller
    attribution: Attribution
    endpoint: str
    requested_model: str
    target: Target
    attempt: int
    fallback_reason: str | None
    streamed: bool
    prompt_chars: int
    event_id: str = field(default_factory=new_event_id)
    """Known before the call is forwarded, so it can be returned to the client as a header."""
    event_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    _t0: float = field(default_factory=time.perf_counter)

    def event(
        self,
        *,
        outcome: Outcome,
        http_status: int | None,
        raw_usage: Mapping[str, Any] | None = None,
        output_chars: int = 0,
        error_code: str | None = None,
        service_tier: str | None = None,
        partial: bool = False,
    ) -> UsageEvent:
        tokens, source, usage_error = self._tokens(raw_usage, outcome, output_chars, partial)
        return UsageEvent(
            event_id=self.event_id,
            event_time=self.event_time,
            tenant=self.caller.tenant,
            relay_key_id=self.caller.key_id,
            feature=self.attribution.feature,
            prompt_version=self.attribution.prompt_version,
            end_user=self.attribution.end_user,
            tags=self.attribution.tags,
            endpoint=self.endpoint,
            requested_model=self.requested_model,
            served_model=self.target.model,
            provider=self.target.provider,
            provider_model=self.target.model,
            attempt=self.attempt,
            fallback_reason=self.fallback_reason,
            service_tier=service_tier,
            streamed=self.streamed,
            latency_ms=int((time.perf_counter() - self._t0) * 1000),
            tokens=tokens,
            usage_source=source,
            raw_usage=dict(raw_usage) if raw_usage else None,
            usage_error=usage_error,
            outcome=outcome,
            http_status=http_status,
            error_code=error_code,
        )

    def _tokens(
        self,
        raw_usage: Mapping[str, Any] | None,
        outcome: Outcome,
        output_chars: int,
        partial: bool,
    ) -> tuple[TokenCounts, UsageSource, str | None]:
        if raw_usage:
            try:
                tokens = tokens_from_usage(self.endpoint, raw_usage)
            except UsageMismatch as exc:
                # Never priced by guess: the event carries the reason and is quarantined.
                return TokenCounts(), "provider", str(exc)
            if not partial:
                return tokens, "provider", None
            # A stream that stopped early: the provider's input count, and output at least
            # what was streamed to the client.
            streamed = estimate_tokens(output_chars)
            if streamed > tokens.output_total:
                tokens = tokens.model_copy(update={"output": streamed - tokens.reasoning})
            return tokens, "partial", None
        if outcome == "cancelled" or output_chars:
            estimate = TokenCounts(
                input_uncached=estimate_tokens(self.prompt_chars),
                output=estimate_tokens(output_chars),
            )
            return estimate, "estimated", None
        return TokenCounts(), "none", None
