"""Forwarding one call to the catalog's targets in order, metering every attempt.

Every attempt that reached (or tried to reach) an upstream publishes exactly one usage event:
success, upstream error, timeout, connection error, a stream cut short, or a client that went
away mid-stream. A retryable failure (429, 5xx, timeout, connection error) moves on to the next
target while the call's deadline allows; a target whose circuit breaker is open is skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ingest.token_usage import StreamUsage
from ingest.usage_event import Outcome, UsageEvent
from relay.budget_gate import Reservation
from relay.errors import UpstreamFailed
from relay.metering import Attribution, CallMeter
from relay.model_catalog import Target
from relay.state import Relay
from relay.tenants import Caller
from relay.upstream import (
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
)

EVENT_ID_HEADER = "x-tokenops-event-id"
"""Every relayed response names the usage event it produced."""
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class Endpoint:
    name: str
    """The event's `endpoint`: chat.completions, completions, embeddings, responses, messages."""
    upstream_path: str
    protocol: Literal["openai", "anthropic"] = "openai"
    usage_option: bool = False
    """OpenAI chat/completions streams carry usage only when stream_options.include_usage."""


@dataclass(frozen=True)
class Call:
    endpoint: Endpoint
    caller: Caller
    attribution: Attribution
    requested_model: str
    body: dict[str, Any]
    stream: bool
    prompt_chars: int
    client_headers: Mapping[str, str]
    client_gone: Callable[[], Awaitable[bool]]
    """True once the client has disconnected (checked while streaming)."""
    after_answer: list[Callable[[], None]]
    """Work that waits until the answer is sent (relay.routes.serve runs it, also when the
    client has gone): the successful attempt's event, so the caller does not wait for it.
    No default: an event put on a list that nobody runs would be lost."""
    reservation: Reservation | None = None
    """The call's hold on its hard budgets; each event settles it (see relay.budget_gate)."""


def upstream_headers(call: Call, target: Target) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if call.endpoint.protocol == "anthropic":
        headers["anthropic-version"] = call.client_headers.get("anthropic-version", "2023-06-01")
        beta = call.client_headers.get("anthropic-beta")
        if beta:
            headers["anthropic-beta"] = beta
        if target.api_key is not None:
            headers["x-api-key"] = target.api_key.get_secret_value()
    elif target.api_key is not None:
        headers["authorization"] = f"Bearer {target.api_key.get_secret_value()}"
    return headers


def _payload(call: Call, target: Target) -> bytes:
    body = {**call.body, "model": target.model}
    if call.stream and call.endpoint.usage_option:
        options = call.body.get("stream_options") or {}
        body["stream_options"] = {**options, "include_usage": True}
    return json.dumps(body).encode()


def latin1(value: str) -> str:
    """A header value an HTTP response can carry (aiohttp reads headers as UTF-8)."""
    return value.encode("latin-1", errors="replace").decode("latin-1")


class Answer:
    """An upstream's answer passed on whole, as two ASGI messages (Starlette's Response does
    more per call than a body that is already encoded needs)."""

    __slots__ = ("body", "raw_headers", "status_code")

    def __init__(self, body: bytes, status_code: int, content_type: str, event_id: str) -> None:
        self.body = body
        self.status_code = status_code
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", latin1(content_type).encode("latin-1")),
            (EVENT_ID_HEADER.encode(), event_id.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": self.body})


async def forward(
    relay: Relay, call: Call, targets: tuple[Target, ...]
) -> Answer | StreamingResponse:
    deadline = time.monotonic() + relay.settings.request_deadline_s
    fallback_reason: str | None = None
    failure = UpstreamFailed("No upstream target is available for this model.", unavailable=True)
    for attempt, target in enumerate(targets, start=1):
        breaker = relay.breakers[(target.provider, target.model)]
        last = attempt == len(targets)
        if not breaker.allow():
            fallback_reason = "circuit_open"
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            failure = UpstreamFailed("The call's deadline passed before an answer.", timeout=True)
            break
        meter = CallMeter(
            caller=call.caller,
            attribution=call.attribution,
            endpoint=call.endpoint.name,
            requested_model=call.requested_model,
            target=target,
            attempt=attempt,
            fallback_reason=fallback_reason,
            streamed=call.stream,
            prompt_chars=call.prompt_chars,
        )
        wait_s = min(remaining, relay.settings.upstream_timeout_s)
        try:
            upstream = await relay.upstream.post(
                relay.upstream_url(target.base_url, call.endpoint.upstream_path),
                _payload(call, target),
                upstream_headers(call, target),
                connect_s=min(5.0, wait_s),
                read_s=wait_s,
            )
            if upstream.status in RETRYABLE_STATUS and not last:
                upstream.close()
                breaker.failure()
                fallback_reason = f"http_{upstream.status}"
                relay.publish(
                    meter.event(
                        outcome="upstream_error",
                        http_status=upstream.status,
                        error_code=fallback_reason,
                    ),
                    call.reservation,
                )
                continue
            if call.stream and upstream.status == 200:
                breaker.success()
                content_type = upstream.headers.get("content-type", "text/event-stream")
                return StreamingResponse(
                    relay_stream(relay, call, upstream, meter),
                    media_type=latin1(content_type),
                    headers={"cache-control": "no-cache", EVENT_ID_HEADER: meter.event_id},
                )
            content = await upstream.read()
        except UpstreamTimeout:
            breaker.failure()
            fallback_reason = "timeout"
            relay.publish(
                meter.event(outcome="timeout", http_status=None, error_code="timeout"),
                call.reservation,
            )
            failure = UpstreamFailed(f"Upstream {target.provider} timed out.", timeout=True)
            continue
        except UpstreamUnreachable as exc:
            breaker.failure()
            fallback_reason = "connection_error"
            relay.publish(
                meter.event(
                    outcome="connection_error",
                    http_status=None,
                    error_code=exc.code,
                ),
                call.reservation,
            )
            failure = UpstreamFailed(f"Upstream {target.provider} could not be reached.")
            continue
        if upstream.status >= 500 or upstream.status == 429:
            breaker.failure()
        else:
            breaker.success()
        call.after_answer.append(
            partial(publish_completed, relay, call, meter, upstream.status, content)
        )
        content_type = upstream.headers.get("content-type", "application/json")
        return Answer(content, upstream.status, content_type, meter.event_id)
    raise failure


def _service_tier(obj: Mapping[str, Any]) -> str | None:
    message = obj.get("message")
    nested = message.get("usage") if isinstance(message, Mapping) else None
    for holder in (obj, obj.get("response"), obj.get("usage"), nested):
        if isinstance(holder, Mapping) and isinstance(holder.get("service_tier"), str):
            return str(holder["service_tier"])
    return None


def publish_completed(
    relay: Relay, call: Call, meter: CallMeter, status: int, content: bytes
) -> None:
    relay.publish(completed_event(call, meter, status, content), call.reservation)


def completed_event(call: Call, meter: CallMeter, status: int, content: bytes) -> UsageEvent:
    if status != 200:
        return meter.event(
            outcome="upstream_error", http_status=status, error_code=f"http_{status}"
        )
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    return meter.event(
        outcome="ok",
        http_status=status,
        raw_usage=usage if isinstance(usage, dict) else None,
        output_chars=0 if usage else len(content),
        service_tier=_service_tier(parsed) if isinstance(parsed, dict) else None,
    )


def _stream_error(outcome: Outcome) -> str | None:
    if outcome == "ok":
        return None
    return "stream_incomplete" if outcome == "upstream_error" else f"stream_{outcome}"


async def relay_stream(
    relay: Relay, call: Call, upstream: UpstreamResponse, meter: CallMeter
) -> AsyncIterator[bytes]:
    """Pass the SSE stream through line by line, reading usage on the way.

    For OpenAI chat/completions streams the relay always asks upstream for usage; the usage-only
    chunk (empty `choices`) is hidden from a client that did not ask for it. The event is
    published in `finally`, so a client that disconnects still yields one event (cancelled,
    usage estimated from what was streamed), and a stream cut short is metered as such.
    """
    usage = StreamUsage(call.endpoint.name)
    wants_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
    hide_usage_chunks = call.endpoint.usage_option and not wants_usage
    tier: str | None = None
    output_chars = 0
    finished = False
    outcome: Outcome = "cancelled"
    skip_blank = False
    lines = 0
    try:
        async for line in upstream.lines():
            lines += 1
            # The server may drop writes to a closed connection silently: ask, and stop
            # paying for upstream tokens nobody reads.
            if lines % 64 == 0 and await call.client_gone():
                break
            if not line:
                if skip_blank:
                    skip_blank = False
                    continue
                yield b"\n"
                continue
            if line.startswith("data:"):
                data = line[5:].strip()
                if data == "[DONE]" or '"message_stop"' in data or '"response.completed"' in data:
                    finished = True
                # Only chunks that carry usage are parsed; they also carry the service tier.
                if '"usage"' in data and '"usage":null' not in data:
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        chunk = None
                    if isinstance(chunk, dict):
                        usage.feed(chunk)
                        tier = _service_tier(chunk) or tier
                        if (
                            hide_usage_chunks
                            and isinstance(chunk.get("usage"), dict)
                            and not chunk.get("choices")
                        ):
                            skip_blank = True
                            continue
                else:
                    output_chars += len(data)  # for an estimate if the stream stops early
            yield line.encode() + b"\n"
        else:
            outcome = "ok" if finished else "upstream_error"
    except UpstreamError:
        outcome = "connection_error"
    finally:
        upstream.close()
        raw = usage.raw
        event = meter.event(
            outcome=outcome,
            http_status=200,
            raw_usage=raw,
            output_chars=output_chars,
            error_code=_stream_error(outcome),
            service_tier=tier,
            partial=outcome != "ok",
        )
        relay.publish(event, call.reservation)
        if call.reservation is not None:
            relay.gate.finish(call.reservation)
