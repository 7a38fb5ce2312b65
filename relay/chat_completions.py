"""POST /v1/chat/completions: forward to the catalog's targets in order, meter every attempt.

Every attempt that reached (or tried to reach) an upstream publishes exactly one usage event:
success, upstream error, timeout, connection error, or a client that went away mid-stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from relay.errors import BodyTooLarge, InvalidRequest, ModelNotFound, UpstreamFailed
from relay.metering import Attribution, CallMeter
from relay.model_catalog import Target
from relay.state import CallerDep, Relay, RelayDep

router = APIRouter()

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


async def read_json_object(request: Request, limit: int) -> tuple[dict[str, Any], int]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body of {declared} bytes exceeds the {limit} byte limit.")
    raw = await request.body()
    if len(raw) > limit:
        raise BodyTooLarge(f"Request body of {len(raw)} bytes exceeds the {limit} byte limit.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body, len(raw)


def upstream_headers(target: Target) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if target.api_key is not None:
        headers["authorization"] = f"Bearer {target.api_key.get_secret_value()}"
    return headers


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, caller: CallerDep, relay: RelayDep) -> Response:
    body, size = await read_json_object(request, relay.settings.max_body_bytes)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("You must provide a model parameter.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    targets = relay.catalog.resolve(model)
    if targets is None:
        raise ModelNotFound(
            f"The model `{model}` does not exist or you do not have access to it.", param="model"
        )
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    client_wants_usage = bool(stream_options and stream_options.get("include_usage"))
    attribution = Attribution.from_request(request.headers, body)

    failure: UpstreamFailed | None = None
    for attempt, target in enumerate(targets, start=1):
        meter = CallMeter(
            caller=caller,
            attribution=attribution,
            endpoint="chat.completions",
            requested_model=model,
            target=target,
            attempt=attempt,
            streamed=stream,
            prompt_chars=size,
        )
        payload = {**body, "model": target.model}
        if stream:
            payload["stream_options"] = {**(stream_options or {}), "include_usage": True}
        upstream_request = relay.http.build_request(
            "POST",
            f"{target.base_url}/chat/completions",
            content=json.dumps(payload).encode(),
            headers=upstream_headers(target),
        )
        last_target = attempt == len(targets)
        try:
            upstream = await relay.http.send(upstream_request, stream=True)
            if upstream.status_code in RETRYABLE_STATUS and not last_target:
                await upstream.aread()
                await upstream.aclose()
                relay.publisher.publish(
                    meter.event(
                        outcome="upstream_error",
                        http_status=upstream.status_code,
                        error_code=f"http_{upstream.status_code}",
                    )
                )
                continue
            if stream and upstream.status_code == 200:
                return StreamingResponse(
                    relay_stream(relay, upstream, meter, client_wants_usage),
                    media_type="text/event-stream",
                    headers={"cache-control": "no-cache"},
                )
            try:
                content = await upstream.aread()
            finally:
                await upstream.aclose()
        except httpx.TimeoutException:
            relay.publisher.publish(
                meter.event(outcome="timeout", http_status=None, error_code="upstream_timeout")
            )
            failure = UpstreamFailed(f"Upstream {target.provider} timed out.", timeout=True)
            continue
        except httpx.HTTPError as exc:
            relay.publisher.publish(
                meter.event(
                    outcome="connection_error",
                    http_status=None,
                    error_code=type(exc).__name__,
                )
            )
            failure = UpstreamFailed(f"Upstream {target.provider} could not be reached.")
            continue
        relay.publisher.publish(_completed_event(meter, upstream.status_code, content))
        return Response(
            content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type", "application/json"),
        )
    assert failure is not None
    raise failure


def _completed_event(meter: CallMeter, status: int, content: bytes) -> Any:
    if status != 200:
        return meter.event(
            outcome="upstream_error", http_status=status, error_code=f"http_{status}"
        )
    usage = tier = None
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        usage = parsed.get("usage")
        tier = parsed.get("service_tier")
    return meter.event(
        outcome="ok",
        http_status=status,
        raw_usage=usage if isinstance(usage, dict) else None,
        output_chars=0 if usage else len(content),
        service_tier=tier if isinstance(tier, str) else None,
    )


async def relay_stream(
    relay: Relay, upstream: httpx.Response, meter: CallMeter, client_wants_usage: bool
) -> AsyncIterator[bytes]:
    """Pass the SSE stream through line by line, reading usage on the way.

    The relay always asks upstream for usage; the usage-only chunk (empty `choices`) is hidden
    from clients that did not ask for it. The event is published in `finally`, so a client that
    disconnects still yields one event (cancelled, usage estimated from what was streamed).
    """
    usage: dict[str, Any] | None = None
    tier: str | None = None
    output_chars = 0
    outcome = "cancelled"
    skip_blank = False
    try:
        async for line in upstream.aiter_lines():
            if not line:
                if skip_blank:
                    skip_blank = False
                    continue
                yield b"\n"
                continue
            if line.startswith("data:"):
                data = line[5:].strip()
                if '"usage"' in data and '"usage":null' not in data:
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        chunk = None
                    if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                        usage = chunk["usage"]
                        if isinstance(chunk.get("service_tier"), str):
                            tier = chunk["service_tier"]
                        if not client_wants_usage and not chunk.get("choices"):
                            skip_blank = True
                            continue
                else:
                    output_chars += len(data)
            yield line.encode() + b"\n"
        outcome = "ok"
    except httpx.HTTPError:
        outcome = "connection_error"
    finally:
        await upstream.aclose()
        relay.publisher.publish(
            meter.event(
                outcome=outcome,  # type: ignore[arg-type]
                http_status=200,
                raw_usage=usage,
                output_chars=output_chars,
                error_code=None if outcome == "ok" else f"stream_{outcome}",
                service_tier=tier,
            )
        )
