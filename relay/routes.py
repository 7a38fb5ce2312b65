"""The relay's model endpoints: OpenAI-compatible `/v1/...` and Anthropic `/v1/messages`.

Each route validates what it needs, resolves the model through the catalog, checks the key's
permissions and hands the call to `forwarding.forward`; the body goes upstream unchanged except
for the model name (and, for OpenAI streams, a request for usage).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute

from relay.budget_gate import CallScope, Refusal
from relay.errors import (
    BodyTooLarge,
    BudgetExceeded,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    RelayError,
)
from relay.forwarding import Call, Endpoint, forward
from relay.metering import Attribution
from relay.state import Relay, current_caller


class RelayRoute(APIRoute):
    """A model endpoint takes the request as it is: it reads and checks the body itself (to
    answer in the caller's protocol), so FastAPI's dependency and body handling is skipped.
    The route stays in the OpenAPI document."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint


router = APIRouter(route_class=RelayRoute)

CHAT = Endpoint("chat.completions", "/chat/completions", usage_option=True)
COMPLETIONS = Endpoint("completions", "/completions", usage_option=True)
EMBEDDINGS = Endpoint("embeddings", "/embeddings")
RESPONSES = Endpoint("responses", "/responses")
MESSAGES = Endpoint("messages", "/messages", protocol="anthropic")


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


def _require(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise InvalidRequest(message, param=param)


async def handle(request: Request, endpoint: Endpoint) -> Response:
    # The hot path resolves its two dependencies directly, without FastAPI's injection.
    started = time.perf_counter()
    relay: Relay = request.app.state.relay
    caller = await current_caller(request)
    body, size = await read_json_object(request, relay.settings.max_body_bytes)
    model = body.get("model")
    _require(isinstance(model, str) and bool(model), "You must provide a model parameter.", "model")
    assert isinstance(model, str)
    stream = body.get("stream", False)
    _require(isinstance(stream, bool), "'stream' must be a boolean.", "stream")
    options = body.get("stream_options")
    _require(
        options is None or isinstance(options, dict),
        "'stream_options' must be an object.",
        "stream_options",
    )
    _validate(endpoint, body)
    targets = relay.catalog.resolve(model)
    if targets is None:
        raise ModelNotFound(
            f"The model `{model}` does not exist or you do not have access to it.", param="model"
        )
    if caller.allowed_models is not None and model not in caller.allowed_models:
        raise PermissionDenied(f"This key may not use the model `{model}`.", param="model")
    attribution = Attribution.from_request(request.headers, body)
    if caller.allowed_features is not None and attribution.feature not in caller.allowed_features:
        error = PermissionDenied(f"This key may not be used for feature {attribution.feature!r}.")
        error.code = "feature_not_allowed"
        raise error
    scope = CallScope(caller.tenant, caller.key_id, attribution.feature, model, targets[0].model)
    reservation = relay.gate.reserve(
        scope, targets, body, size, with_output=endpoint is not EMBEDDINGS
    )
    if isinstance(reservation, Refusal):
        raise BudgetExceeded(
            reservation.message(),
            retry_after_s=int((reservation.period_end - datetime.now(UTC)).total_seconds()),
        )
    call = Call(
        endpoint=endpoint,
        caller=caller,
        attribution=attribution,
        requested_model=model,
        body=body,
        stream=stream,
        prompt_chars=size,
        client_headers=request.headers,
        client_gone=request.is_disconnected,
        reservation=reservation,
    )
    streaming = False
    try:
        response = await forward(relay, call, targets)
        streaming = isinstance(response, StreamingResponse)
    except RelayError as exc:
        relay.metrics.requests.labels(endpoint.name, str(exc.status)).inc()
        raise
    finally:
        if reservation is not None and not streaming:  # a stream finishes it when it ends
            relay.gate.finish(reservation)
    relay.metrics.requests.labels(endpoint.name, str(response.status_code)).inc()
    relay.metrics.latency.labels(endpoint.name).observe(time.perf_counter() - started)
    return response


def _validate(endpoint: Endpoint, body: dict[str, Any]) -> None:
    if endpoint in (CHAT, MESSAGES):
        messages = body.get("messages")
        _require(
            isinstance(messages, list) and bool(messages),
            "'messages' must be a non-empty array.",
            "messages",
        )
    if endpoint is MESSAGES:
        max_tokens = body.get("max_tokens")
        _require(
            isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0,
            "'max_tokens' must be a positive integer.",
            "max_tokens",
        )
    if endpoint is COMPLETIONS:
        prompt = body.get("prompt")
        _require(isinstance(prompt, str | list), "'prompt' must be a string or an array.", "prompt")
    if endpoint is EMBEDDINGS:
        _require(
            isinstance(body.get("input"), str | list),
            "'input' must be a string or an array.",
            "input",
        )
        _require(not body.get("stream"), "Embeddings cannot be streamed.", "stream")
    if endpoint is RESPONSES:
        _require(
            isinstance(body.get("input"), str | list),
            "'input' must be a string or an array.",
            "input",
        )


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await handle(request, CHAT)


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await handle(request, COMPLETIONS)


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    return await handle(request, EMBEDDINGS)


@router.post("/v1/responses")
async def responses(request: Request) -> Response:
    return await handle(request, RESPONSES)


@router.post("/v1/messages")
async def messages(request: Request) -> Response:
    return await handle(request, MESSAGES)
