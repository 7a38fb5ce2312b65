"""The relay's model endpoints: OpenAI-compatible `/v1/...` and Anthropic `/v1/messages`.

Each route validates what it needs, resolves the model through the catalog, checks the key's
permissions and hands the call to `forwarding.forward`; the body goes upstream unchanged except
for the model name (and, for OpenAI streams, a request for usage).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from starlette.types import Message, Receive, Scope, Send

from relay.budget_gate import CallScope, Refusal
from relay.errors import (
    BodyTooLarge,
    BudgetExceeded,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    RelayError,
)
from relay.forwarding import Answer, Call, Endpoint, forward
from relay.metering import Attribution
from relay.state import Relay, caller_for

log = logging.getLogger("tokenops.relay")

CHAT = Endpoint("chat.completions", "/chat/completions", usage_option=True)
COMPLETIONS = Endpoint("completions", "/completions", usage_option=True)
EMBEDDINGS = Endpoint("embeddings", "/embeddings")
RESPONSES = Endpoint("responses", "/responses")
MESSAGES = Endpoint("messages", "/messages", protocol="anthropic")
MODEL_PATHS = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETIONS,
    "/v1/embeddings": EMBEDDINGS,
    "/v1/responses": RESPONSES,
    "/v1/messages": MESSAGES,
}


class ClientLeft(Exception):
    """The client disconnected before its request body arrived: there is no one to answer."""


UNEXPECTED = RelayError("The relay failed unexpectedly.")


def error_response(error: RelayError, protocol: str) -> Response:
    """The error in the caller's protocol: Anthropic's envelope on /v1/messages. The JSON is
    ASCII, so any text the message quotes from the request (a model name) can be sent."""
    body = error.anthropic_body() if protocol == "anthropic" else error.openai_body()
    return Response(
        json.dumps(body).encode(), error.status, error.headers, media_type="application/json"
    )


async def serve(
    relay: Relay, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send
) -> None:
    """One call of a model endpoint, straight on ASGI.

    The relay's entry (relay.app.RelayApp) sends the model paths here without FastAPI's
    middleware, routing and request objects, which cost more per call than the relay's own
    work; the FastAPI routes below come here too, so both ways answer the same."""
    started = time.perf_counter()
    after_answer: list[Callable[[], None]] = []
    try:
        response: Answer | Response
        try:
            response = await handle(relay, endpoint, scope, receive, after_answer)
        except ClientLeft:
            return
        except RelayError as exc:
            status = exc.status
            response = error_response(exc, endpoint.protocol)
        except Exception:
            log.exception("unexpected relay error")
            status = 500
            response = error_response(UNEXPECTED, endpoint.protocol)
        else:
            status = response.status_code
            relay.metrics.observe(endpoint.name, time.perf_counter() - started)
        relay.metrics.count(endpoint.name, status)
        await response(scope, receive, send)
    finally:
        # also when the client has gone or the request task is cancelled
        for step in after_answer:
            try:
                step()
            except Exception:  # one step's failure must not keep the others from running
                log.exception("metering a relayed call failed")


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name; of a repeated header, the first."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body of {declared} bytes exceeds the {limit} byte limit.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientLeft
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(
                f"Request body of {size} or more bytes exceeds the {limit} byte limit."
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


class Disconnect:
    """Whether the client has gone, asked without waiting (as Starlette's Request does)."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._gone = False

    async def __call__(self) -> bool:
        if not self._gone:
            message: Message = {}
            with anyio.CancelScope() as scope:
                scope.cancel()
                message = await self._receive()
            self._gone = message.get("type") == "http.disconnect"
        return self._gone


def _require(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise InvalidRequest(message, param=param)


async def handle(
    relay: Relay,
    endpoint: Endpoint,
    scope: Scope,
    receive: Receive,
    after_answer: list[Callable[[], None]],
) -> Answer | StreamingResponse:
    headers = request_headers(scope)
    caller = caller_for(relay, headers)
    raw = await read_body(receive, headers, relay.settings.max_body_bytes)
    body = parse_json_object(raw)
    size = len(raw)
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
    attribution = Attribution.from_request(headers, body)
    if caller.allowed_features is not None and attribution.feature not in caller.allowed_features:
        error = PermissionDenied(f"This key may not be used for feature {attribution.feature!r}.")
        error.code = "feature_not_allowed"
        raise error
    scope_ = CallScope(caller.tenant, caller.key_id, attribution.feature, model, targets[0].model)
    reservation = relay.gate.reserve(
        scope_, targets, body, size, with_output=endpoint is not EMBEDDINGS
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
        client_headers=headers,
        client_gone=Disconnect(receive),
        reservation=reservation,
        after_answer=after_answer,
    )
    streaming = False
    try:
        response = await forward(relay, call, targets)
        streaming = isinstance(response, StreamingResponse)
    finally:
        if reservation is not None and not streaming:  # a stream finishes it when it ends
            # after the call's last event has settled it
            after_answer.append(lambda: relay.gate.finish(reservation))
    return response


class Served(Response):
    """What a model route in FastAPI's router answers: `serve` itself, which reads the body and
    sends the answer (FastAPI calls the route's result as an ASGI app)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve(scope["app"].state.relay, self.endpoint, scope, receive, send)


class RelayRoute(APIRoute):
    """A model endpoint in FastAPI's router, answered by `serve` as the relay's entry answers
    it: FastAPI's request and body handling is skipped (the relay reads and checks the body
    itself, to answer in the caller's protocol). The route stays in the OpenAPI document."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = MODEL_PATHS[self.path]

        async def handler(request: Request) -> Response:
            return Served(endpoint)

        return handler


router = APIRouter(route_class=RelayRoute)


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


async def _model_call(request: Request) -> Response:
    """What FastAPI needs to document a model route; RelayRoute answers it with `serve`."""
    raise AssertionError("a model route is served by RelayRoute")


for _path, _endpoint in MODEL_PATHS.items():
    router.add_api_route(
        _path, _model_call, methods=["POST"], name=_endpoint.name.replace(".", "_")
    )
