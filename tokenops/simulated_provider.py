"""The simulated provider: an OpenAI-compatible model server for offline runs, tests and demos.

Usage is deterministic: the same request always reports the same tokens, so a test can compute
exactly what a call must cost. Directives inside message text steer it:
  [[sim:error=500]]              answer with that HTTP status and an OpenAI-shaped error body
  [[sim:latency_ms=250]]         wait before answering (time to first byte when streaming)
  [[sim:completion_tokens=40]]   fix the number of completion tokens
Prompts of 1,024 tokens or more report half of them (in 128-token blocks) as cached, as OpenAI
does; reasoning models (`*reasoner*`, `o1*`, `o3*`, `o4*`) spend half the completion on reasoning.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

DIRECTIVE = re.compile(r"\[\[sim:(\w+)=([\w.]+)\]\]")
WORDS = ("the", "cost", "of", "every", "token", "is", "metered", "by", "tokenops", "today")
REASONING_PREFIXES = ("o1", "o3", "o4")


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


def create_app() -> FastAPI:
    app = FastAPI(title="tokenops simulated provider", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is required.")
        directives = _directives(body)
        if "latency_ms" in directives:
            await asyncio.sleep(float(directives["latency_ms"]) / 1000)
        if "error" in directives:
            status = int(directives["error"])
            return _error(status, f"Simulated upstream error {status}.", code=f"simulated_{status}")
        usage = simulated_usage(body)
        model = str(body.get("model", "simulated"))
        n = body.get("n") or 1
        visible = (
            usage["completion_tokens"] - usage["completion_tokens_details"]["reasoning_tokens"]
        )
        words = [WORDS[i % len(WORDS)] for i in range(max(visible // n, 1))]
        created = int(time.time())
        tier = body.get("service_tier")
        served_tier = tier if tier in ("flex", "priority") else "default"
        completion_id = f"chatcmpl-sim{zlib.crc32(json.dumps(body).encode()):08x}"
        if body.get("stream") is True:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                _stream(completion_id, created, model, n, words, usage, include_usage, served_tier),
                media_type="text/event-stream",
            )
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": " ".join(words), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
            for i in range(n)
        ]
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": choices,
                "usage": usage,
                "service_tier": served_tier,
                "system_fingerprint": "fp_tokenops_sim",
            }
        )

    return app


async def _stream(
    completion_id: str,
    created: int,
    model: str,
    n: int,
    words: list[str],
    usage: dict[str, Any],
    include_usage: bool,
    service_tier: str,
) -> AsyncIterator[bytes]:
    def chunk(choices: list[dict[str, Any]], chunk_usage: Any = None) -> bytes:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": service_tier,
            "system_fingerprint": "fp_tokenops_sim",
            "choices": choices,
        }
        if include_usage:
            body["usage"] = chunk_usage
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    for i in range(n):
        yield chunk(
            [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        )
    for start in range(0, len(words), 4):
        piece = (" " if start else "") + " ".join(words[start : start + 4])
        for i in range(n):
            yield chunk([{"index": i, "delta": {"content": piece}, "finish_reason": None}])
        await asyncio.sleep(0)
    for i in range(n):
        yield chunk([{"index": i, "delta": {}, "finish_reason": "stop"}])
    if include_usage:
        yield chunk([], usage)
    yield b"data: [DONE]\n\n"
