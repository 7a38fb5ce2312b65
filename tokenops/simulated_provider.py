"""The simulated provider: an OpenAI-compatible model server for offline runs, tests and demos.

Usage is deterministic: the same request always reports the same tokens, so a test can compute
exactly what a call must cost. Directives inside the request text (messages, prompt, input,
instructions, system) steer it on every endpoint:
  [[sim:error=500]]              answer with that HTTP status and an error body (OpenAI shape;
                                 Anthropic shape on /messages)
  [[sim:latency_ms=250]]         wait before answering (time to first byte when streaming)
  [[sim:completion_tokens=40]]   fix the number of completion (output) tokens per choice
  [[sim:cut_stream=3]]           streaming only: end the stream after that many content chunks,
                                 without the usage and without [DONE] / message_stop /
                                 response.completed; the body ends cleanly and the server closes
                                 the connection (Connection: close)
  [[sim:drop_stream=3]]          the same, but the connection is aborted mid-body (the client
                                 sees an incomplete chunked read: a network failure)
  [[sim:bad_usage=1]]            report usage whose parts contradict each other (cached tokens
                                 above the prompt tokens; Anthropic: cache_creation breakdown
                                 that does not add up; embeddings: total below prompt)
Prompts of 1,024 tokens or more report half of them (in 128-token blocks) as cached, as OpenAI
does; reasoning models (`*reasoner*`, `o1*`, `o3*`, `o4*`) spend half the completion on reasoning.

Routes (each one at `/v1/...` and at `/{provider}/v1/...` for every provider in PROVIDERS):
  POST chat/completions, completions, embeddings, responses, messages; GET /healthz.
/messages always speaks Anthropic (usage: `anthropic_usage`; input_tokens excludes cache reads
and writes, which add up to the chat prompt_tokens); /responses and /embeddings always OpenAI.
The provider prefix picks the dialect of the chat (and legacy completions) usage, the way the real
provider reports it; the token numbers are the same for every dialect (`simulated_usage`):
  openai, anthropic, alibaba, moonshotai  OpenAI shape: with stream_options.include_usage every
                                 chunk has "usage": null and a last chunk with "choices": []
                                 carries the usage
  minimax                        OpenAI shape plus usage.total_characters and base_resp
  deepseek                       prompt_cache_hit_tokens + prompt_cache_miss_tokens = prompt;
                                 streams put the usage on the finish_reason chunk (choices not
                                 empty), no separate usage chunk; only with include_usage, since
                                 the recorded sample was requested with it
  zai, zhipu                     GLM: usage on the finish_reason chunk (only with include_usage,
                                 as recorded); other chunks have no usage key
  openrouter                     ": OPENROUTER PROCESSING" SSE comments before the first chunk;
                                 usage always sent (include_usage has no effect, as documented),
                                 on a last chunk whose choices hold one empty delta; usage.cost
                                 and cost_details from OPENROUTER_PRICE_PER_MTOK
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import math
import random
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

DIRECTIVE = re.compile(r"\[\[sim:(\w+)=([\w.]+)\]\]")
WORDS = ("the", "cost", "of", "every", "token", "is", "metered", "by", "tokenops", "today")
REASONING_PREFIXES = ("o1", "o3", "o4")
PROVIDERS = (
    "openai",
    "anthropic",
    "deepseek",
    "alibaba",
    "moonshotai",
    "zai",
    "zhipu",
    "minimax",
    "openrouter",
)
DEFAULT_EMBEDDING_DIMENSIONS = 1536
MAX_EMBEDDING_DIMENSIONS = 8192
# The prices behind the `cost` the openrouter dialect reports, in USD per million tokens.
OPENROUTER_PRICE_PER_MTOK = {
    "input": Decimal("1.00"),
    "cached_input": Decimal("0.10"),
    "output": Decimal("4.00"),
}
_MTOK = Decimal(1_000_000)
_GLM = ("zai", "zhipu")

Event = tuple[bytes, bool]  # (bytes on the wire, whether it is a content chunk)
Handler = Callable[[Request], Awaitable[Response]]


class SimulatedStreamCut(Exception):
    """Raised inside a streaming body to abort the connection (the `drop_stream` directive)."""


class _CutStreams:
    """Swallows SimulatedStreamCut: the response stays incomplete and the server closes the
    connection (uvicorn logs one line, "ASGI callable returned without completing response")."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(SimulatedStreamCut):
            await self.app(scope, receive, send)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def simulated_usage(body: dict[str, Any]) -> dict[str, Any]:
    """The usage the simulator reports for a chat completion request (also used by tests)."""
    messages = body.get("messages") or []
    texts = [_text(m.get("content")) for m in messages if isinstance(m, dict)]
    prompt_tokens = 3 + sum(4 + (len(t) + 3) // 4 for t in texts)
    directives = dict(DIRECTIVE.findall(" ".join(texts)))
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or 256
    fixed = directives.get("completion_tokens")
    per_choice = int(fixed) if fixed else 8 + zlib.crc32(" ".join(texts).encode()) % 56
    per_choice = max(1, min(per_choice, int(limit)))
    n = body.get("n") or 1
    completion_tokens = per_choice * n
    model = str(body.get("model", ""))
    reasoning = completion_tokens // 2 if _reasons(model) else 0
    cached = (prompt_tokens // 2) // 128 * 128 if prompt_tokens >= 1024 else 0
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    if "deepseek" in model:
        usage["prompt_cache_hit_tokens"] = cached
        usage["prompt_cache_miss_tokens"] = prompt_tokens - cached
    return usage


def openrouter_cost(usage: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """(prompt cost, completion cost) in USD the openrouter dialect reports for a usage."""
    prompt = int(usage["prompt_tokens"])
    cached = min(int(usage["prompt_tokens_details"]["cached_tokens"]), prompt)
    prices = OPENROUTER_PRICE_PER_MTOK
    prompt_cost = ((prompt - cached) * prices["input"] + cached * prices["cached_input"]) / _MTOK
    completion_cost = int(usage["completion_tokens"]) * prices["output"] / _MTOK
    return prompt_cost, completion_cost


def _reasons(model: str) -> bool:
    return "reasoner" in model or model.startswith(REASONING_PREFIXES)


def _directives(body: dict[str, Any]) -> dict[str, str]:
    messages = body.get("messages") or []
    text = " ".join(_text(m.get("content")) for m in messages if isinstance(m, dict))
    return dict(DIRECTIVE.findall(text))


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    error_type = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        404: "invalid_request_error",
        429: "rate_limit_error",
    }.get(status, "api_error")
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _anthropic_error(status: int, message: str) -> JSONResponse:
    body = {
        "type": "error",
        "error": {"type": ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": f"req_sim{zlib.crc32(message.encode()):08x}",
    }
    return JSONResponse(body, status_code=status)


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _steer(directives: dict[str, str], anthropic: bool = False) -> Response | None:
    """Apply latency; return the error response the directives ask for, if any."""
    if "latency_ms" in directives:
        await asyncio.sleep(float(directives["latency_ms"]) / 1000)
    if "error" in directives:
        status = int(directives["error"])
        if anthropic:
            return _anthropic_error(status, f"Simulated upstream error {status}.")
        return _error(status, f"Simulated upstream error {status}.", code=f"simulated_{status}")
    return None


def _words(count: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(max(count, 1))]


def _pieces(words: list[str]) -> list[str]:
    """The text deltas of a stream: four words at a time."""
    return [
        (" " if start else "") + " ".join(words[start : start + 4])
        for start in range(0, len(words), 4)
    ]


def _sse_data(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _sse_event(body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":"))
    return f"event: {body['type']}\ndata: {data}\n\n".encode()


async def _emit(events: list[Event], cut: int | None, drop: bool) -> AsyncIterator[bytes]:
    """Send the events; with `cut`, stop after that many content events: end the body there
    (the connection is then closed), or with `drop` abort the connection mid-body."""
    if cut is not None:
        cut = min(cut, sum(1 for _, content in events if content))
    sent = 0
    for data, content in events:
        if content and sent == cut:
            break
        yield data
        if content:
            sent += 1
            await asyncio.sleep(0)
            if sent == cut:
                break
    else:
        return
    if drop:
        raise SimulatedStreamCut(f"simulated dropped stream after {cut} content chunks")


def _streaming(events: list[Event], directives: dict[str, str]) -> StreamingResponse:
    cut: int | None = None
    headers: dict[str, str] = {}
    for name in ("cut_stream", "drop_stream"):
        if name in directives:
            cut = int(float(directives[name]))
            headers["connection"] = "close"
    drop = "drop_stream" in directives and "cut_stream" not in directives
    return StreamingResponse(
        _emit(events, cut, drop), media_type="text/event-stream", headers=headers
    )


# ----------------------------------------------------------------------------- usage shapes


def _contradict(usage: dict[str, Any]) -> dict[str, Any]:
    """The bad_usage directive: cached tokens above the prompt tokens."""
    usage = copy.deepcopy(usage)
    prompt = usage["prompt_tokens"]
    usage["prompt_tokens_details"]["cached_tokens"] = prompt + 128
    if "prompt_cache_hit_tokens" in usage:
        usage["prompt_cache_hit_tokens"] = prompt + 128
        usage["prompt_cache_miss_tokens"] = -128
    return usage


def _dialect_usage(dialect: str, core: dict[str, Any], streamed: bool) -> dict[str, Any]:
    """The chat usage object the given provider would report for the core numbers."""
    prompt, completion = core["prompt_tokens"], core["completion_tokens"]
    cached = core["prompt_tokens_details"]["cached_tokens"]
    reasoning = core["completion_tokens_details"]["reasoning_tokens"]
    if dialect == "deepseek":
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": core["total_tokens"],
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        if reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        usage["prompt_cache_hit_tokens"] = core.get("prompt_cache_hit_tokens", cached)
        usage["prompt_cache_miss_tokens"] = core.get("prompt_cache_miss_tokens", prompt - cached)
        return usage
    if dialect in _GLM:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": core["total_tokens"],
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    if dialect == "openrouter":
        prompt_cost, completion_cost = openrouter_cost(core)
        cost = prompt_cost + completion_cost
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": core["total_tokens"],
            "cost": float(cost),
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "cost_details": {
                "upstream_inference_cost": None if streamed else float(cost),
                "upstream_inference_prompt_cost": float(prompt_cost),
                "upstream_inference_completions_cost": float(completion_cost),
            },
            "completion_tokens_details": {"reasoning_tokens": reasoning, "image_tokens": 0},
        }
    if dialect == "minimax":
        return {**core, "total_characters": 0}
    return core


def _openai_stream_events(
    dialect: str,
    envelope: Callable[[list[dict[str, Any]]], dict[str, Any]],
    opening: list[list[dict[str, Any]]],
    content: list[list[dict[str, Any]]],
    finish: list[list[dict[str, Any]]],
    tail: list[dict[str, Any]],
    usage: dict[str, Any],
    include_usage: bool,
) -> list[Event]:
    """Chunks of an OpenAI-style stream with the usage placed the way `dialect` places it.

    `opening`, `content` and `finish` hold the choices of each chunk; `tail` the choices of
    OpenRouter's trailing usage chunk.
    """
    openai_shape = dialect not in ("deepseek", "openrouter", *_GLM)
    nulls = include_usage and (openai_shape or dialect == "deepseek")

    def chunk(choices: list[dict[str, Any]], chunk_usage: Any = None) -> bytes:
        body = envelope(choices)
        if nulls or chunk_usage is not None:
            body["usage"] = chunk_usage
        return _sse_data(body)

    events: list[Event] = []
    if dialect == "openrouter":
        events += [(b": OPENROUTER PROCESSING\n\n", False)] * 2
    events += [(chunk(choices), False) for choices in opening]
    events += [(chunk(choices), True) for choices in content]
    on_finish = include_usage and dialect in ("deepseek", *_GLM)
    for position, choices in enumerate(finish):
        last = position == len(finish) - 1
        events.append((chunk(choices, usage if on_finish and last else None), False))
    if dialect == "openrouter":
        events.append((chunk(tail, usage), False))
    elif include_usage and openai_shape:
        events.append((chunk([], usage), False))
    events.append((b"data: [DONE]\n\n", False))
    return events


# ----------------------------------------------------------------------------- chat completions


async def chat_completions(request: Request, dialect: str) -> Response:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _error(400, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return _error(400, "'messages' is required.")
    directives = _directives(body)
    refusal = await _steer(directives)
    if refusal is not None:
        return refusal
    core = simulated_usage(body)
    if "bad_usage" in directives:
        core = _contradict(core)
    model = str(body.get("model", "simulated"))
    n = body.get("n") or 1
    visible = core["completion_tokens"] - core["completion_tokens_details"]["reasoning_tokens"]
    words = _words(visible // n)
    created = int(time.time())
    tier = body.get("service_tier")
    served_tier = tier if tier in ("flex", "priority") else "default"
    completion_id = f"chatcmpl-sim{zlib.crc32(json.dumps(body).encode()):08x}"
    streamed = body.get("stream") is True
    usage = _dialect_usage(dialect, core, streamed)
    if streamed:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = _chat_stream_events(
            dialect, completion_id, created, model, n, words, usage, include_usage, served_tier
        )
        return _streaming(events, directives)
    return JSONResponse(
        _chat_response(dialect, completion_id, created, model, n, words, usage, served_tier)
    )


def _chat_response(
    dialect: str,
    completion_id: str,
    created: int,
    model: str,
    n: int,
    words: list[str],
    usage: dict[str, Any],
    served_tier: str,
) -> dict[str, Any]:
    text = " ".join(words)
    if dialect == "deepseek":
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
                for i in range(n)
            ],
            "usage": usage,
            "system_fingerprint": "fp_tokenops_sim",
        }
    if dialect in _GLM:
        return {
            "choices": [
                {
                    "finish_reason": "stop",
                    "index": i,
                    "message": {"content": text, "role": "assistant"},
                }
                for i in range(n)
            ],
            "created": created,
            "id": completion_id,
            "model": model,
            "object": "chat.completion",
            "request_id": completion_id,
            "usage": usage,
        }
    if dialect == "openrouter":
        return {
            "id": completion_id,
            "provider": "Simulated",
            "model": model,
            "object": "chat.completion",
            "created": created,
            "choices": [
                {
                    "finish_reason": "stop",
                    "native_finish_reason": "stop",
                    "index": i,
                    "logprobs": None,
                    "message": {
                        "role": "assistant",
                        "content": text,
                        "refusal": None,
                        "reasoning": None,
                    },
                }
                for i in range(n)
            ],
            "system_fingerprint": None,
            "usage": usage,
        }
    response: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
            for i in range(n)
        ],
        "usage": usage,
        "service_tier": served_tier,
        "system_fingerprint": "fp_tokenops_sim",
    }
    if dialect == "minimax":
        response["base_resp"] = {"status_code": 0, "status_msg": ""}
    return response


def _chat_stream_events(
    dialect: str,
    completion_id: str,
    created: int,
    model: str,
    n: int,
    words: list[str],
    usage: dict[str, Any],
    include_usage: bool,
    service_tier: str,
) -> list[Event]:
    def envelope(choices: list[dict[str, Any]]) -> dict[str, Any]:
        if dialect == "deepseek":
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_tokenops_sim",
                "choices": choices,
            }
        if dialect in _GLM:
            return {
                "id": completion_id,
                "created": created,
                "object": "chat.completion.chunk",
                "model": model,
                "choices": choices,
            }
        if dialect == "openrouter":
            return {
                "id": completion_id,
                "provider": "Simulated",
                "model": model,
                "object": "chat.completion.chunk",
                "created": created,
                "choices": choices,
            }
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": service_tier,
            "system_fingerprint": "fp_tokenops_sim",
            "choices": choices,
        }

    def choice(index: int, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        if dialect == "deepseek":
            return {
                "index": index,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        if dialect in _GLM:
            delta = {"role": "assistant", **delta}
            if finish_reason is None:
                return {"index": index, "delta": delta}
            return {"index": index, "finish_reason": finish_reason, "delta": delta}
        if dialect == "openrouter":
            return {
                "index": index,
                "delta": {"role": "assistant", **delta},
                "finish_reason": finish_reason,
                "native_finish_reason": finish_reason,
                "logprobs": None,
            }
        return {"index": index, "delta": delta, "finish_reason": finish_reason}

    opening = [[choice(i, {"role": "assistant", "content": ""}, None)] for i in range(n)]
    content = [[choice(i, {"content": piece}, None)] for piece in _pieces(words) for i in range(n)]
    closing: dict[str, Any] = {"content": ""} if dialect in ("openrouter", *_GLM) else {}
    finish = [[choice(i, dict(closing), "stop")] for i in range(n)]
    tail = [choice(0, {"content": ""}, None)]
    return _openai_stream_events(
        dialect, envelope, opening, content, finish, tail, usage, include_usage
    )


# ----------------------------------------------------------------------------- legacy completions


async def completions(request: Request, dialect: str) -> Response:
    body = await _json_object(request)
    if body is None:
        return _error(400, "We could not parse the JSON body of your request.")
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        return _error(400, "'prompt' must be a string or a list of strings.")
    n = body.get("n") or 1
    choices_count = len(prompts) * n
    core_body = {
        "model": body.get("model", ""),
        "messages": [{"role": "user", "content": p} for p in prompts],
        "max_tokens": body.get("max_tokens") or 16,
        "n": choices_count,
    }
    directives = _directives(core_body)
    refusal = await _steer(directives)
    if refusal is not None:
        return refusal
    core = simulated_usage(core_body)
    if "bad_usage" in directives:
        core = _contradict(core)
    model = str(body.get("model", "simulated"))
    visible = core["completion_tokens"] - core["completion_tokens_details"]["reasoning_tokens"]
    words = _words(visible // choices_count)
    created = int(time.time())
    completion_id = f"cmpl-sim{zlib.crc32(json.dumps(body).encode()):08x}"
    streamed = body.get("stream") is True
    usage = _dialect_usage(dialect, core, streamed)

    def envelope(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_tokenops_sim",
            "choices": choices,
        }

    def choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
        return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}

    if streamed:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        pieces = _pieces(words)
        content = [[choice(i, piece, None)] for piece in pieces for i in range(choices_count)]
        finish = [[choice(i, "", "stop")] for i in range(choices_count)]
        events = _openai_stream_events(
            dialect, envelope, [], content, finish, [choice(0, "", None)], usage, include_usage
        )
        return _streaming(events, directives)
    response = envelope([choice(i, " ".join(words), "stop") for i in range(choices_count)])
    response["usage"] = usage
    return JSONResponse(response)


# ----------------------------------------------------------------------------- embeddings


def _embedding(model: str, item: str | list[int], dimensions: int) -> list[float]:
    """A deterministic unit vector, rounded to float32 so both encodings carry the same values."""
    seed = hashlib.sha256(json.dumps([model, item]).encode()).digest()
    rng = random.Random(int.from_bytes(seed[:8], "big"))
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(x / norm for x in raw))
    return list(struct.unpack(f"<{dimensions}f", packed))


def _embedding_items(value: Any) -> list[str | list[int]] | None:
    def tokens(x: Any) -> bool:
        return isinstance(x, list) and bool(x) and all(type(t) is int for t in x)

    if isinstance(value, str):
        return [value]
    if tokens(value):
        return [value]
    if isinstance(value, list) and value and all(isinstance(x, str) or tokens(x) for x in value):
        return list(value)
    return None


async def embeddings(request: Request, dialect: str) -> Response:
    del dialect  # every provider reports embeddings usage the OpenAI way
    body = await _json_object(request)
    if body is None:
        return _error(400, "We could not parse the JSON body of your request.")
    items = _embedding_items(body.get("input"))
    if items is None:
        return _error(400, "'input' must be a string, a list of strings or of token arrays.")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        return _error(400, f"Invalid encoding_format {encoding!r}: use 'float' or 'base64'.")
    dimensions = body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
    if type(dimensions) is not int or not 0 < dimensions <= MAX_EMBEDDING_DIMENSIONS:
        return _error(400, f"'dimensions' must be an integer from 1 to {MAX_EMBEDDING_DIMENSIONS}.")
    texts = [item for item in items if isinstance(item, str)]
    directives = dict(DIRECTIVE.findall(" ".join(texts)))
    refusal = await _steer(directives)
    if refusal is not None:
        return refusal
    model = str(body.get("model", "simulated-embedding"))
    prompt_tokens = sum(
        max(1, (len(item) + 3) // 4) if isinstance(item, str) else len(item) for item in items
    )
    data = []
    for index, item in enumerate(items):
        vector = _embedding(model, item, dimensions)
        embedded: Any = vector
        if encoding == "base64":
            embedded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedded})
    total = prompt_tokens - 1 if "bad_usage" in directives else prompt_tokens
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": total},
        }
    )


# ----------------------------------------------------------------------------- responses


def _responses_messages(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The Responses input as chat messages (instructions first), or None when invalid."""
    value = body.get("input")
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(value, str):
        return [*messages, {"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        return None
    for item in value:
        if not isinstance(item, dict):
            return None
        content = item.get("content")
        if content is None and isinstance(item.get("output"), str):
            content = item["output"]
        messages.append({"role": item.get("role", "user"), "content": content})
    return messages


async def responses(request: Request, dialect: str) -> Response:
    del dialect  # the Responses API is OpenAI's own
    body = await _json_object(request)
    if body is None:
        return _error(400, "We could not parse the JSON body of your request.")
    messages = _responses_messages(body)
    if messages is None:
        return _error(400, "'input' must be a string or a list of input items.")
    max_output_tokens = body.get("max_output_tokens")
    core_body = {"model": body.get("model", ""), "messages": messages}
    if max_output_tokens:
        core_body["max_tokens"] = max_output_tokens
    directives = _directives(core_body)
    refusal = await _steer(directives)
    if refusal is not None:
        return refusal
    core = simulated_usage(core_body)
    cached = core["prompt_tokens_details"]["cached_tokens"]
    if "bad_usage" in directives:
        cached = core["prompt_tokens"] + 128
    reasoning = core["completion_tokens_details"]["reasoning_tokens"]
    usage = {
        "input_tokens": core["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": core["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": core["total_tokens"],
    }
    model = str(body.get("model", "simulated"))
    words = _words(core["completion_tokens"] - reasoning)
    text = " ".join(words)
    digest = f"{zlib.crc32(json.dumps(body).encode()):08x}"
    response_id, message_id, reasoning_id = (
        f"resp_sim{digest}",
        f"msg_sim{digest}",
        f"rs_sim{digest}",
    )
    tier = body.get("service_tier")
    served_tier = tier if tier in ("flex", "priority") else "default"
    created = int(time.time())

    def response_object(status: str, output: list[dict[str, Any]], usage: Any) -> dict[str, Any]:
        return {
            "id": response_id,
            "object": "response",
            "created_at": created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": max_output_tokens,
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": served_tier,
            "store": bool(body.get("store", True)),
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    def part(part_text: str) -> dict[str, Any]:
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": part_text}

    def message(status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": message_id,
            "type": "message",
            "status": status,
            "content": content,
            "role": "assistant",
        }

    reasoning_items: list[dict[str, Any]] = (
        [{"id": reasoning_id, "type": "reasoning", "summary": []}] if reasoning else []
    )
    output = [*reasoning_items, message("completed", [part(text)])]
    if body.get("stream") is not True:
        return JSONResponse(response_object("completed", output, usage))

    index = len(reasoning_items)
    located = {"item_id": message_id, "output_index": index, "content_index": 0}
    bodies: list[tuple[dict[str, Any], bool]] = [
        ({"type": "response.created", "response": response_object("in_progress", [], None)}, False),
        (
            {"type": "response.in_progress", "response": response_object("in_progress", [], None)},
            False,
        ),
    ]
    for position, item in enumerate(reasoning_items):
        for kind in ("response.output_item.added", "response.output_item.done"):
            bodies.append(({"type": kind, "output_index": position, "item": item}, False))
    bodies += [
        (
            {
                "type": "response.output_item.added",
                "output_index": index,
                "item": message("in_progress", []),
            },
            False,
        ),
        ({"type": "response.content_part.added", **located, "part": part("")}, False),
    ]
    bodies += [
        ({"type": "response.output_text.delta", **located, "delta": piece, "logprobs": []}, True)
        for piece in _pieces(words)
    ]
    bodies += [
        ({"type": "response.output_text.done", **located, "text": text, "logprobs": []}, False),
        ({"type": "response.content_part.done", **located, "part": part(text)}, False),
        (
            {"type": "response.output_item.done", "output_index": index, "item": output[-1]},
            False,
        ),
        (
            {"type": "response.completed", "response": response_object("completed", output, usage)},
            False,
        ),
    ]
    events: list[Event] = []
    for sequence, (event, content) in enumerate(bodies):
        head = {"type": event["type"], "sequence_number": sequence}
        events.append((_sse_event({**event, **head}), content))
    return _streaming(events, directives)


# ----------------------------------------------------------------------------- anthropic messages


def _cache_ttl(blocks: Any) -> str | None:
    """The TTL of the last cache_control breakpoint among content blocks ("5m" or "1h")."""
    ttl = None
    if isinstance(blocks, list):
        for block in blocks:
            control = block.get("cache_control") if isinstance(block, dict) else None
            if isinstance(control, dict):
                ttl = "1h" if control.get("ttl") == "1h" else "5m"
    return ttl


def anthropic_usage(body: dict[str, Any]) -> dict[str, Any]:
    """The usage the simulator reports for an Anthropic Messages request (also used by tests).

    The prompt is counted as for chat (system first); input_tokens excludes the cache: for
    prompts of 1,024 tokens or more the same half as chat's cached_tokens is a cache read, and
    the tokens up to each cache_control breakpoint that were not read are written to the cache
    with that breakpoint's TTL.
    """
    units: list[tuple[Any, str | None]] = []
    system = body.get("system")
    if system:
        units.append((system, _cache_ttl(system)))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            units.append((message.get("content"), _cache_ttl(message.get("content"))))
    core = simulated_usage(
        {
            "model": body.get("model", ""),
            "messages": [{"content": content} for content, _ in units],
            "max_tokens": body.get("max_tokens"),
        }
    )
    prompt = core["prompt_tokens"]
    read = core["prompt_tokens_details"]["cached_tokens"]
    written = {"5m": 0, "1h": 0}
    running, breakpoint, unread = 3, 0, read
    for content, ttl in units:
        running += 4 + (len(_text(content)) + 3) // 4
        if ttl is not None:
            segment = running - breakpoint
            taken = min(segment, unread)
            unread -= taken
            written[ttl] += segment - taken
            breakpoint = running
    creation = written["5m"] + written["1h"]
    return {
        "input_tokens": prompt - read - creation,
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": written["5m"],
            "ephemeral_1h_input_tokens": written["1h"],
        },
        "output_tokens": core["completion_tokens"],
        "service_tier": "standard",
    }


async def messages(request: Request, dialect: str) -> Response:
    del dialect  # the Anthropic dialect whatever the prefix
    body = await _json_object(request)
    if body is None:
        return _anthropic_error(400, "There was an error parsing the body of your request.")
    if not isinstance(body.get("messages"), list):
        return _anthropic_error(400, "messages: Field required")
    max_tokens = body.get("max_tokens")
    if type(max_tokens) is not int or max_tokens < 1:
        return _anthropic_error(400, "max_tokens: Field required")
    system = body.get("system")
    texts = [_text(system)] + [
        _text(m.get("content")) for m in body["messages"] if isinstance(m, dict)
    ]
    directives = dict(DIRECTIVE.findall(" ".join(texts)))
    refusal = await _steer(directives, anthropic=True)
    if refusal is not None:
        return refusal
    usage = anthropic_usage(body)
    if "bad_usage" in directives:
        usage["cache_creation"]["ephemeral_5m_input_tokens"] += 128
    model = str(body.get("model", "simulated"))
    reasoning = usage["output_tokens"] // 2 if _reasons(model) else 0
    words = _words(usage["output_tokens"] - reasoning)
    message_id = f"msg_sim{zlib.crc32(json.dumps(body).encode()):08x}"

    def message(content: list[dict[str, Any]], stop: str | None, msg_usage: Any) -> dict[str, Any]:
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": msg_usage,
        }

    if body.get("stream") is not True:
        text_block = {"type": "text", "text": " ".join(words)}
        return JSONResponse(message([text_block], "end_turn", usage))
    start_usage = {**usage, "output_tokens": 1}
    delta_usage = {
        key: usage[key]
        for key in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
        )
    }
    bodies: list[tuple[dict[str, Any], bool]] = [
        ({"type": "message_start", "message": message([], None, start_usage)}, False),
        (
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            False,
        ),
        ({"type": "ping"}, False),
    ]
    bodies += [
        (
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
            True,
        )
        for piece in _pieces(words)
    ]
    bodies += [
        ({"type": "content_block_stop", "index": 0}, False),
        (
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": delta_usage,
            },
            False,
        ),
        ({"type": "message_stop"}, False),
    ]
    return _streaming([(_sse_event(event), content) for event, content in bodies], directives)


# ----------------------------------------------------------------------------- app

ENDPOINTS: dict[str, Callable[[Request, str], Awaitable[Response]]] = {
    "chat/completions": chat_completions,
    "completions": completions,
    "embeddings": embeddings,
    "responses": responses,
    "messages": messages,
}


def _bind(endpoint: Callable[[Request, str], Awaitable[Response]], dialect: str) -> Handler:
    async def handler(request: Request) -> Response:
        return await endpoint(request, dialect)

    return handler


def create_app() -> FastAPI:
    app = FastAPI(title="tokenops simulated provider", docs_url=None, redoc_url=None)
    app.add_middleware(_CutStreams)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    prefixes = [("openai", "/v1"), *((p, f"/{p}/v1") for p in PROVIDERS)]
    for dialect, prefix in prefixes:
        for path, endpoint in ENDPOINTS.items():
            app.add_api_route(
                f"{prefix}/{path}",
                _bind(endpoint, dialect),
                methods=["POST"],
                response_model=None,
                name=f"{dialect}:{path}",
            )
    return app
