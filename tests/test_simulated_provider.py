"""The simulated provider served for real by uvicorn, called with the official SDKs."""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from tests.support import served_on_loopback
from tokenops.simulated_provider import (
    OPENROUTER_PRICE_PER_MTOK,
    PROVIDERS,
    anthropic_usage,
    create_app,
    openrouter_cost,
    simulated_usage,
)

LONG = "metering every token of a long shared system prompt " * 120  # > 1,024 tokens
OPENAI_SHAPE = ("openai", "anthropic", "alibaba", "moonshotai", "minimax")
USAGE_ON_FINISH = ("deepseek", "zai", "zhipu")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with served_on_loopback(create_app()) as url:
        yield url


def oai(base_url: str, dialect: str | None = None) -> openai.OpenAI:
    prefix = f"/{dialect}" if dialect else ""
    return openai.OpenAI(base_url=f"{base_url}{prefix}/v1", api_key="sk-sim", max_retries=0)


def claude(base_url: str, prefix: str = "") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url + prefix, api_key="sk-ant-sim", max_retries=0)


def chat_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "deepseek-reasoner",
        "messages": [
            {"role": "system", "content": LONG},
            {"role": "user", "content": "How much did that cost?"},
        ],
        **extra,
    }


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) of every data-carrying SSE event of a raw body."""
    events = []
    for block in text.split("\n\n"):
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        if data:
            events.append((name, "\n".join(data)))
    return events


def without_created(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("created", "created_at")}


# ----------------------------------------------------------------------------- chat completions


def test_openai_prefix_is_the_plain_v1_dialect(base_url: str) -> None:
    body = chat_body(model="gpt-4o", n=2)
    plain = httpx.post(f"{base_url}/v1/chat/completions", json=body).json()
    prefixed = httpx.post(f"{base_url}/openai/v1/chat/completions", json=body).json()
    assert without_created(plain) == without_created(prefixed)
    assert plain["usage"] == simulated_usage(body)
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    a = httpx.post(f"{base_url}/v1/chat/completions", json=streamed).text
    b = httpx.post(f"{base_url}/openai/v1/chat/completions", json=streamed).text
    strip = [without_created(json.loads(d)) for _, d in sse_events(a) if d != "[DONE]"]
    assert strip == [without_created(json.loads(d)) for _, d in sse_events(b) if d != "[DONE]"]


@pytest.mark.parametrize("dialect", PROVIDERS)
def test_chat_usage_per_dialect_has_the_common_totals(base_url: str, dialect: str) -> None:
    body = chat_body()
    core = simulated_usage(body)
    assert core["prompt_tokens_details"]["cached_tokens"] > 0
    assert core["completion_tokens_details"]["reasoning_tokens"] > 0
    client = oai(base_url, dialect)
    first = client.chat.completions.create(**body)
    again = client.chat.completions.create(**body)
    usage = first.model_dump()["usage"]
    assert usage == again.model_dump()["usage"]  # deterministic
    assert usage["prompt_tokens"] == core["prompt_tokens"]
    assert usage["completion_tokens"] == core["completion_tokens"]
    assert usage["total_tokens"] == core["prompt_tokens"] + core["completion_tokens"]
    cached = core["prompt_tokens_details"]["cached_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == cached
    reasoning = core["completion_tokens_details"]["reasoning_tokens"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == reasoning
    raw = httpx.post(f"{base_url}/{dialect}/v1/chat/completions", json=body).json()
    extra = raw["usage"]
    if dialect == "deepseek":
        assert extra["prompt_cache_hit_tokens"] == cached
        assert (
            extra["prompt_cache_hit_tokens"] + extra["prompt_cache_miss_tokens"]
            == (core["prompt_tokens"])
        )
        assert "service_tier" not in raw
    elif dialect == "openrouter":
        prompt_cost, completion_cost = openrouter_cost(core)
        assert Decimal(str(extra["cost"])) == prompt_cost + completion_cost
        details = extra["cost_details"]
        assert Decimal(str(details["upstream_inference_prompt_cost"])) == prompt_cost
        assert Decimal(str(details["upstream_inference_completions_cost"])) == completion_cost
        uncached = core["prompt_tokens"] - cached
        expected = (
            uncached * OPENROUTER_PRICE_PER_MTOK["input"]
            + cached * OPENROUTER_PRICE_PER_MTOK["cached_input"]
        ) / 1_000_000
        assert prompt_cost == expected
        assert raw["provider"] == "Simulated"
    elif dialect in ("zai", "zhipu"):
        assert raw["request_id"] == raw["id"]
    elif dialect == "minimax":
        assert extra["total_characters"] == 0
        assert raw["base_resp"] == {"status_code": 0, "status_msg": ""}
    else:
        assert extra == simulated_usage(body)


def stream_chunks(client: openai.OpenAI, **body: Any) -> list[dict[str, Any]]:
    return [chunk.model_dump() for chunk in client.chat.completions.create(stream=True, **body)]


@pytest.mark.parametrize("dialect", PROVIDERS)
def test_chat_stream_places_usage_like_the_provider(base_url: str, dialect: str) -> None:
    body = chat_body()
    client = oai(base_url, dialect)
    plain = client.chat.completions.create(**body).model_dump()
    chunks = stream_chunks(client, stream_options={"include_usage": True}, **body)
    again = stream_chunks(client, stream_options={"include_usage": True}, **body)
    assert [without_created(c) for c in chunks] == [without_created(c) for c in again]
    with_usage = [c for c in chunks if c.get("usage")]
    assert len(with_usage) == 1
    usage_chunk = with_usage[0]
    expected = dict(plain["usage"])
    if dialect == "openrouter":
        expected["cost_details"] = {**expected["cost_details"], "upstream_inference_cost": None}
    assert usage_chunk["usage"] == expected
    text = "".join(
        choice["delta"]["content"] or "" for c in chunks for choice in c["choices"] if choice
    )
    assert text == plain["choices"][0]["message"]["content"]
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] == "stop"]
    assert len(finish) == 1
    if dialect in OPENAI_SHAPE:
        assert usage_chunk is chunks[-1] and usage_chunk["choices"] == []
        assert all(c["usage"] is None for c in chunks[:-1])
    elif dialect in USAGE_ON_FINISH:
        assert usage_chunk is finish[0] is chunks[-1]
        assert all(c["choices"] for c in chunks)
    else:  # openrouter: one more chunk after the finish, choices not empty
        assert usage_chunk is chunks[-1] and chunks[-2] is finish[0]
        assert usage_chunk["choices"][0]["finish_reason"] is None


@pytest.mark.parametrize("dialect", PROVIDERS)
def test_chat_stream_without_include_usage(base_url: str, dialect: str) -> None:
    body = chat_body(model="gpt-4o", stream=True)
    raw = httpx.post(f"{base_url}/{dialect}/v1/chat/completions", json=body).text
    data = [json.loads(d) for _, d in sse_events(raw) if d != "[DONE]"]
    assert raw.rstrip().endswith("data: [DONE]")
    usages = [c["usage"] for c in data if c.get("usage")]
    if dialect == "openrouter":  # documented: always returned, include_usage has no effect
        assert len(usages) == 1
        assert raw.startswith(": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\n")
        assert raw.index(": OPENROUTER PROCESSING") < raw.index("data: ")
    else:
        assert usages == []
        assert ": OPENROUTER" not in raw
    if dialect in ("zai", "zhipu", "openrouter"):
        assert all("usage" not in c for c in data[:-1])


def test_deepseek_stream_has_no_empty_choices_chunk(base_url: str) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    raw = httpx.post(f"{base_url}/deepseek/v1/chat/completions", json=body).text
    data = [json.loads(d) for _, d in sse_events(raw) if d != "[DONE]"]
    assert all(c["choices"] for c in data)
    assert all(c["usage"] is None for c in data[:-1])
    last = data[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    usage = last["usage"]
    assert (
        usage["prompt_cache_hit_tokens"] + usage["prompt_cache_miss_tokens"]
        == (usage["prompt_tokens"])
    )


def test_chat_with_several_choices_streams_every_choice(base_url: str) -> None:
    client = oai(base_url, "deepseek")
    body = chat_body(model="deepseek-chat", n=2)
    chunks = stream_chunks(client, stream_options={"include_usage": True}, **body)
    finishes = [c for c in chunks if c["choices"][0]["finish_reason"] == "stop"]
    assert [c["choices"][0]["index"] for c in finishes] == [0, 1]
    assert finishes[0]["usage"] is None
    assert finishes[1]["usage"]["completion_tokens"] == simulated_usage(body)["completion_tokens"]
    raw = httpx.post(f"{base_url}/deepseek/v1/chat/completions", json=body).json()
    assert "completion_tokens_details" not in raw["usage"]  # deepseek-chat does not reason


# ----------------------------------------------------------------------------- legacy completions


@pytest.mark.parametrize("dialect", [None, "deepseek", "openrouter"])
def test_legacy_completions(base_url: str, dialect: str | None) -> None:
    client = oai(base_url, dialect)
    prompts = ["Say hello", "Say goodbye [[sim:completion_tokens=12]]"]
    result = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=prompts, n=2)
    core = simulated_usage(
        {
            "model": "gpt-3.5-turbo-instruct",
            "messages": [{"content": p} for p in prompts],
            "max_tokens": 16,
            "n": 4,
        }
    )
    assert result.object == "text_completion"
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert all(c.text for c in result.choices)
    assert result.usage is not None
    assert result.usage.prompt_tokens == core["prompt_tokens"]
    assert result.usage.completion_tokens == 48 == core["completion_tokens"]
    single = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello")
    assert single.usage is not None and len(single.choices) == 1
    stream = client.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="Say hello",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == single.choices[0].text
    usages = [c.usage for c in chunks if c.usage]
    assert len(usages) == 1
    assert usages[0].total_tokens == single.usage.total_tokens


def test_legacy_completions_rejects_a_missing_prompt(base_url: str) -> None:
    with pytest.raises(openai.BadRequestError):
        oai(base_url).completions.create(model="m", prompt=None)


# ----------------------------------------------------------------------------- embeddings


def test_embeddings_base64_by_default_decode_to_the_dimensions(base_url: str) -> None:
    client = oai(base_url)
    result = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
    assert [len(item.embedding) for item in result.data] == [1536, 1536]
    assert math.isclose(sum(x * x for x in result.data[0].embedding), 1.0, rel_tol=1e-4)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.model_dump() == {"prompt_tokens": 4, "total_tokens": 4}
    again = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
    assert again.data[1].embedding == result.data[1].embedding  # deterministic


def test_embeddings_float_and_base64_agree(base_url: str) -> None:
    url = f"{base_url}/v1/embeddings"
    body = {"model": "text-embedding-3-large", "input": "metered", "dimensions": 256}
    floats = httpx.post(url, json=body).json()
    encoded = httpx.post(url, json={**body, "encoding_format": "base64"}).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert len(raw) == 256 * 4
    decoded = list(struct.unpack("<256f", raw))
    assert decoded == floats["data"][0]["embedding"]
    assert set(floats["usage"]) == {"prompt_tokens", "total_tokens"}
    tokens = httpx.post(url, json={"model": "m", "input": [[1, 2, 3], [4, 5]]}).json()
    assert tokens["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert len(tokens["data"]) == 2
    bad = httpx.post(url, json={"model": "m", "input": "x", "encoding_format": "hex"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_embeddings_under_a_provider_prefix(base_url: str) -> None:
    result = oai(base_url, "alibaba").embeddings.create(
        model="text-embedding-v4", input="hello", dimensions=64
    )
    assert len(result.data[0].embedding) == 64


# ----------------------------------------------------------------------------- responses


def responses_core(model: str, text: str, instructions: str | None = None) -> dict[str, Any]:
    messages = [{"content": instructions}] if instructions else []
    return simulated_usage({"model": model, "messages": [*messages, {"content": text}]})


def test_responses_non_stream(base_url: str) -> None:
    client = oai(base_url)
    response = client.responses.create(model="o3", input=LONG, instructions="Be brief.")
    core = responses_core("o3", LONG, "Be brief.")
    assert response.status == "completed"
    assert response.output_text
    assert [item.type for item in response.output] == ["reasoning", "message"]
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens == core["prompt_tokens"]
    assert (
        usage.input_tokens_details.cached_tokens == core["prompt_tokens_details"]["cached_tokens"]
    )
    assert usage.input_tokens_details.cached_tokens > 0
    assert usage.output_tokens == core["completion_tokens"]
    assert usage.output_tokens_details.reasoning_tokens == core["completion_tokens"] // 2
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    items = client.responses.create(
        model="gpt-4o",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        max_output_tokens=5,
    )
    assert items.usage is not None and items.usage.output_tokens == 5
    assert [item.type for item in items.output] == ["message"]


def test_responses_stream_parsed_by_the_sdk(base_url: str) -> None:
    client = oai(base_url)
    plain = client.responses.create(model="gpt-4o", input="stream me")
    events = list(client.responses.create(model="gpt-4o", input="stream me", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 2
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created, completed = events[0], events[-1]
    assert created.type == "response.created" and created.response.usage is None
    assert completed.type == "response.completed"
    assert completed.response.usage == plain.usage
    assert "".join(d.delta for d in deltas) == plain.output_text
    with client.responses.stream(model="gpt-4o", input="stream me") as stream:
        final = stream.get_final_response()
    assert final.output_text == plain.output_text
    assert final.usage == plain.usage


# ----------------------------------------------------------------------------- anthropic messages


def test_messages_usage_excludes_the_cache(base_url: str) -> None:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 300,
        "system": LONG,
        "messages": [{"role": "user", "content": "How much did that cost?"}],
    }
    message = claude(base_url).messages.create(**body)
    usage = message.usage
    chat = simulated_usage(
        {
            "model": body["model"],
            "max_tokens": 300,
            "messages": [{"role": "system", "content": LONG}, *body["messages"]],
        }
    )
    read = chat["prompt_tokens_details"]["cached_tokens"]
    assert usage.cache_read_input_tokens == read > 0
    assert usage.cache_creation_input_tokens == 0
    assert usage.input_tokens == chat["prompt_tokens"] - read
    assert usage.output_tokens == chat["completion_tokens"]
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "end_turn"
    assert usage.model_dump(exclude_none=True) == {
        k: v for k, v in anthropic_usage(body).items() if v is not None
    }


def test_messages_cache_control_writes_with_its_ttl(base_url: str) -> None:
    client = claude(base_url, "/anthropic")
    system: list[Any] = [
        {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    messages: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "context " * 200, "cache_control": {"type": "ephemeral"}}
            ],
        },
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and now?"},
    ]
    usage = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=50, system=system, messages=messages
    ).usage
    creation = usage.cache_creation
    assert creation is not None
    assert creation.ephemeral_1h_input_tokens > 0 and creation.ephemeral_5m_input_tokens > 0
    assert usage.cache_creation_input_tokens == (
        creation.ephemeral_1h_input_tokens + creation.ephemeral_5m_input_tokens
    )
    chat = simulated_usage(
        {"model": "claude", "messages": [{"content": system}, *messages], "max_tokens": 50}
    )
    assert usage.cache_read_input_tokens == chat["prompt_tokens_details"]["cached_tokens"]
    total = (usage.input_tokens or 0) + (usage.cache_read_input_tokens or 0)
    assert total + usage.cache_creation_input_tokens == chat["prompt_tokens"]
    after_breakpoint = (4 + (len("ok") + 3) // 4) + (4 + (len("and now?") + 3) // 4)
    assert usage.input_tokens == after_breakpoint


def test_messages_stream_like_the_sdk_fixture(base_url: str) -> None:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 300,
        "system": LONG,
        "messages": [{"role": "user", "content": "Stream it"}],
    }
    client = claude(base_url)
    plain = client.messages.create(**body)
    with client.messages.stream(**body) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text == final.content[0].text  # type: ignore[union-attr]
    assert final.usage.model_dump() == plain.usage.model_dump()
    raw = httpx.post(f"{base_url}/anthropic/v1/messages", json={**body, "stream": True}).text
    events = sse_events(raw)
    names = [name for name, _ in events]
    assert all(json.loads(data)["type"] == name for name, data in events)
    deltas = names.count("content_block_delta")
    assert deltas >= 2
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = json.loads(events[0][1])["message"]["usage"]
    delta = json.loads(events[-2][1])["usage"]
    assert start["output_tokens"] == 1
    assert delta["output_tokens"] == plain.usage.output_tokens
    assert delta["input_tokens"] == start["input_tokens"] == plain.usage.input_tokens
    assert delta["cache_read_input_tokens"] == start["cache_read_input_tokens"] > 0


def test_messages_requires_max_tokens(base_url: str) -> None:
    response = httpx.post(
        f"{base_url}/v1/messages",
        json={"model": "claude", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        claude(base_url).messages.create(
            model="claude",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=0,
        )


# ----------------------------------------------------------------------------- directives

ENDPOINT_BODIES: dict[str, dict[str, Any]] = {
    "chat/completions": {"model": "m", "messages": [{"role": "user", "content": "{d}"}]},
    "completions": {"model": "m", "prompt": "{d}"},
    "embeddings": {"model": "m", "input": "{d}"},
    "responses": {"model": "m", "input": "{d}"},
    "messages": {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "{d}"}]},
}


def with_directive(path: str, directive: str, **extra: Any) -> dict[str, Any]:
    text = json.dumps(ENDPOINT_BODIES[path]).replace("{d}", directive)
    return {**json.loads(text), **extra}


@pytest.mark.parametrize("path", list(ENDPOINT_BODIES))
@pytest.mark.parametrize("status", [429, 500])
def test_error_directive_on_every_endpoint(base_url: str, path: str, status: int) -> None:
    body = with_directive(path, f"[[sim:error={status}]]")
    response = httpx.post(f"{base_url}/deepseek/v1/{path}", json=body)
    assert response.status_code == status
    error = response.json()
    if path == "messages":
        expected = "rate_limit_error" if status == 429 else "api_error"
        assert error["type"] == "error" and error["error"]["type"] == expected
        assert set(error["error"]) == {"type", "message"}
    else:
        assert set(error["error"]) == {"message", "type", "param", "code"}
        assert error["error"]["code"] == f"simulated_{status}"


def test_errors_raise_the_sdk_exceptions(base_url: str) -> None:
    client = oai(base_url, "openrouter")
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="m", input="[[sim:error=429]]")
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="m", input="[[sim:error=503]]", stream=True)
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude(base_url).messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "[[sim:error=429]]"}]
        )
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError):
        claude(base_url).messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "[[sim:error=529]]"}]
        )


@pytest.mark.parametrize("path", list(ENDPOINT_BODIES))
def test_latency_directive_on_every_endpoint(base_url: str, path: str) -> None:
    started = time.monotonic()
    response = httpx.post(
        f"{base_url}/v1/{path}", json=with_directive(path, "[[sim:latency_ms=250]]")
    )
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.25


CUT_CASES = [
    ("openai", "chat/completions"),
    ("deepseek", "chat/completions"),
    ("zai", "chat/completions"),
    ("openrouter", "chat/completions"),
    ("openai", "completions"),
    ("openai", "responses"),
    ("anthropic", "messages"),
]
CONTENT_MARKS = {
    "chat/completions": '"content":"',
    "completions": '"text":"',
    "responses": "response.output_text.delta\n",
    "messages": "content_block_delta\n",
}


def cut_body(path: str, directive: str) -> dict[str, Any]:
    extra: dict[str, Any] = {"stream": True}
    if path in ("chat/completions", "completions"):
        extra["stream_options"] = {"include_usage": True}
    if path == "completions":
        extra["max_tokens"] = 200
    return with_directive(path, f"{directive} " + "words " * 40, **extra)


def assert_cut_after(text: str, path: str, count: int) -> None:
    assert "[DONE]" not in text
    for end in ("message_delta", "message_stop", "response.completed", 'finish_reason":"stop'):
        assert end not in text
    if path != "messages":  # message_start carries the input usage; the final one is missing
        assert "usage" not in text.replace('"usage":null', "")
    seen = text.count(CONTENT_MARKS[path])
    if path == "chat/completions":
        seen -= 1  # the opening chunk carries "content":""
    assert seen == count


@pytest.mark.parametrize(("dialect", "path"), CUT_CASES)
def test_cut_stream_ends_early_without_usage(base_url: str, dialect: str, path: str) -> None:
    body = cut_body(path, "[[sim:cut_stream=2]]")
    with httpx.stream("POST", f"{base_url}/{dialect}/v1/{path}", json=body) as response:
        assert response.status_code == 200
        assert response.headers["connection"] == "close"
        text = response.read().decode()  # the body ends cleanly, just early
    assert_cut_after(text, path, 2)


@pytest.mark.parametrize(("dialect", "path"), CUT_CASES)
def test_drop_stream_aborts_the_connection(base_url: str, dialect: str, path: str) -> None:
    body = cut_body(path, "[[sim:drop_stream=3]]")
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{base_url}/{dialect}/v1/{path}", json=body) as response,
    ):
        assert response.status_code == 200
        for part in response.iter_bytes():
            received += part
    assert_cut_after(received.decode(), path, 3)


def test_cut_streams_in_the_sdks(base_url: str) -> None:
    client = oai(base_url)
    messages: Any = [{"role": "user", "content": "[[sim:cut_stream=1]] hello there"}]
    body: dict[str, Any] = {"model": "m", "messages": messages, "stream": True}
    chunks = list(client.chat.completions.create(**body, stream_options={"include_usage": True}))
    assert len(chunks) == 2 and all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason is None
    dropped = [{"role": "user", "content": "[[sim:drop_stream=1]] hello there"}]
    seen: list[Any] = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        seen.extend(client.chat.completions.create(**{**body, "messages": dropped}))
    assert len(seen) == 2
    events = list(client.responses.create(model="m", input="[[sim:cut_stream=2]] hi", stream=True))
    assert events[-1].type == "response.output_text.delta"
    with claude(base_url).messages.stream(
        model="m", max_tokens=100, messages=[{"role": "user", "content": "[[sim:cut_stream=1]] x"}]
    ) as stream:
        kinds = [event.type for event in stream]
    assert kinds[-1] == "text" and "message_stop" not in kinds
    with (
        pytest.raises((httpx2.RemoteProtocolError, anthropic.APIError)),
        claude(base_url).messages.stream(
            model="m",
            max_tokens=100,
            messages=[{"role": "user", "content": "[[sim:drop_stream=1]] hello"}],
        ) as anthropic_stream,
    ):
        anthropic_stream.get_final_message()


def test_bad_usage_contradicts_itself(base_url: str) -> None:
    directive = "[[sim:bad_usage=1]]"
    for dialect in ("openai", "deepseek", "openrouter", "zai"):
        chat = httpx.post(
            f"{base_url}/{dialect}/v1/chat/completions",
            json=with_directive("chat/completions", directive),
        ).json()["usage"]
        assert chat["prompt_tokens_details"]["cached_tokens"] > chat["prompt_tokens"]
    responses = httpx.post(
        f"{base_url}/v1/responses", json=with_directive("responses", directive)
    ).json()["usage"]
    assert responses["input_tokens_details"]["cached_tokens"] > responses["input_tokens"]
    embeddings = httpx.post(
        f"{base_url}/v1/embeddings", json=with_directive("embeddings", directive)
    ).json()["usage"]
    assert embeddings["total_tokens"] < embeddings["prompt_tokens"]
    message = claude(base_url).messages.create(
        model="m", max_tokens=10, messages=[{"role": "user", "content": directive}]
    )
    creation = message.usage.cache_creation
    assert creation is not None
    parts = creation.ephemeral_5m_input_tokens + creation.ephemeral_1h_input_tokens
    assert parts != message.usage.cache_creation_input_tokens


def test_unknown_provider_prefix_is_not_found(base_url: str) -> None:
    response = httpx.post(f"{base_url}/nosuch/v1/chat/completions", json=chat_body())
    assert response.status_code == 404
    assert httpx.get(f"{base_url}/healthz").json() == {"status": "ok"}
