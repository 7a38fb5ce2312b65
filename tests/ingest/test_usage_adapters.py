"""Anthropic / OpenAI Responses / Embeddings usage parsers, endpoint dispatch and StreamUsage.

Expected numbers are worked out by hand from the real payloads in ../shared/provider-samples
(see its README.md for where each one was recorded).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ingest.token_usage import (
    KNOWN_ENDPOINTS,
    StreamUsage,
    UsageMismatch,
    from_anthropic_usage,
    from_openai_chat_usage,
    from_openai_embeddings_usage,
    from_openai_responses_usage,
    tokens_from_usage,
    usage_violation,
)
from ingest.usage_event import TokenCounts, UsageEvent, new_event_id
from tests.support import provider_sample

sample_path = provider_sample


def load_json(name: str) -> Any:
    return json.loads(sample_path(name).read_text(encoding="utf-8"))


# --- a small SSE parser ------------------------------------------------------------------------

DONE = "[DONE]"


def parse_sse(text: str) -> list[tuple[str | None, Any]]:
    """(event name or None, parsed data) per SSE event; `[DONE]` is kept as the string DONE.

    Events are separated by blank lines (LF, CRLF or CR line ends). Lines starting with ':'
    are comments. `data:` lines of one event are joined with newlines; one space after the
    colon is dropped. Trailing spaces after the JSON (Anthropic) are harmless to json.loads.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    events: list[tuple[str | None, Any]] = []
    for block in text.split("\n\n"):
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if not data:
            continue
        payload = "\n".join(data)
        events.append((name, DONE if payload.strip() == DONE else json.loads(payload)))
    return events


def stream_objects(name: str) -> list[dict[str, Any]]:
    """The data objects of a recorded stream (.sse or .chunks.json), without [DONE]."""
    if name.endswith(".chunks.json"):
        chunks = load_json(name)
        assert isinstance(chunks, list)
        return chunks
    events = parse_sse(sample_path(name).read_text(encoding="utf-8"))
    for event_name, obj in events:
        # where the provider names its events, the name repeats the object's type
        if event_name is not None and isinstance(obj, dict):
            assert obj.get("type") == event_name
    return [obj for _, obj in events if obj is not DONE]


def stream_raw(endpoint: str, name: str) -> dict[str, Any]:
    meter = StreamUsage(endpoint)
    for obj in stream_objects(name):
        meter.feed(obj)
    raw = meter.raw
    assert raw is not None, f"{name}: no usage found in the stream"
    return raw


def test_sse_parser_handles_comments_crlf_events_and_done() -> None:
    text = (
        ": OPENROUTER PROCESSING\r\n\r\n"
        'event: ping\r\ndata: {"type": "ping"}   \r\n\r\n'
        'data: {"a":\ndata: 1}\n\n'
        "data: [DONE]\n\n"
    )
    assert parse_sse(text) == [("ping", {"type": "ping"}), (None, {"a": 1}), (None, DONE)]


def test_sse_parser_on_samples_with_comments_and_done() -> None:
    raw = sample_path("openrouter-chat.stream.sse").read_text(encoding="utf-8")
    assert ": OPENROUTER PROCESSING" in raw
    events = parse_sse(raw)
    assert events[-1] == (None, DONE)
    assert all(isinstance(obj, dict) for _, obj in events[:-1])


def test_sse_parser_keeps_anthropic_lines_with_trailing_spaces() -> None:
    raw = sample_path("anthropic-messages.stream.sse").read_text(encoding="utf-8")
    assert '"output_tokens":5}       }' in raw  # the padding really is there
    kinds = [obj["type"] for obj in stream_objects("anthropic-messages.stream.sse")]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]


# --- Anthropic Messages ------------------------------------------------------------------------


def test_anthropic_cache_read_and_write() -> None:
    usage = load_json("anthropic-messages.cache-read-and-write.json")["usage"]
    # input_tokens 3 excludes the 1111 read and the 418 written (all 5 minute retention)
    expected = TokenCounts(input_uncached=3, cache_read=1111, cache_write=418, output=33)
    assert from_anthropic_usage(usage) == expected
    assert tokens_from_usage("messages", usage) == expected
    assert expected.input_total == 3 + 1111 + 418


def test_anthropic_1h_docs_fragment_is_inconsistent_and_refused() -> None:
    usage = load_json("anthropic-messages.usage-fragment.1h-cache.docs.json")["usage"]
    # the README warns about it: cache_creation_input_tokens 248 != 456 + 100
    assert usage["cache_creation_input_tokens"] == 248
    with pytest.raises(UsageMismatch, match="248"):
        from_anthropic_usage(usage)


def test_anthropic_1h_split_when_the_parts_add_up() -> None:
    """The docs fragment with its total corrected to the sum of its parts (hand-made)."""
    usage = copy.deepcopy(load_json("anthropic-messages.usage-fragment.1h-cache.docs.json"))
    usage["usage"]["cache_creation_input_tokens"] = 456 + 100
    assert from_anthropic_usage(usage["usage"]) == TokenCounts(
        input_uncached=2048, cache_read=1800, cache_write=456, cache_write_1h=100, output=503
    )


def test_anthropic_without_breakdown_writes_count_at_5_minutes() -> None:
    usage = {"input_tokens": 5, "cache_creation_input_tokens": 40, "output_tokens": 2}
    assert from_anthropic_usage(usage) == TokenCounts(input_uncached=5, cache_write=40, output=2)


def test_anthropic_thinking_is_carved_out_of_output() -> None:
    usage = {
        "input_tokens": 5,
        "output_tokens": 100,
        "output_tokens_details": {"thinking_tokens": 70},
    }
    assert from_anthropic_usage(usage) == TokenCounts(input_uncached=5, output=30, reasoning=70)


def test_anthropic_ignores_unknown_fields() -> None:
    usage = {
        "input_tokens": 5,
        "output_tokens": 2,
        "server_tool_use": {"web_search_requests": 3},
        "service_tier": "priority",
        "inference_geo": "global",
    }
    assert from_anthropic_usage(usage) == TokenCounts(input_uncached=5, output=2)


@pytest.mark.parametrize(
    "usage",
    [
        {"output_tokens": 5, "output_tokens_details": {"thinking_tokens": 6}},
        {"output_tokens_details": {"thinking_tokens": 1}},
        {
            "cache_creation_input_tokens": 10,
            "cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 5},
        },
        {"cache_creation_input_tokens": 10, "cache_creation": {}},
        {"cache_creation_input_tokens": 10, "cache_creation": [10]},
        {"input_tokens": -1},
        {"cache_read_input_tokens": 1.5},
        {"cache_creation_input_tokens": True},
        {"output_tokens_details": "x"},
    ],
    ids=[
        "thinking>output",
        "thinking-without-output",
        "parts<total",
        "empty-breakdown",
        "breakdown-not-object",
        "negative",
        "float",
        "bool",
        "details-not-object",
    ],
)
def test_anthropic_contradictory_or_malformed_usage_is_refused(usage: dict[str, Any]) -> None:
    with pytest.raises(UsageMismatch):
        from_anthropic_usage(usage)


# --- Anthropic streams -------------------------------------------------------------------------

ANTHROPIC_STREAMS = {
    # message_start {input 20, output 1}; message_delta (cumulative) {input 20, output 5}
    "anthropic-messages.stream.sse": TokenCounts(input_uncached=20, output=5),
    # message_start {input 11, output 1}; message_delta carries only output 6
    "anthropic-messages.stream.sdk-fixture.sse": TokenCounts(input_uncached=11, output=6),
    # message_start {input 2, cache_creation 3068, read 0, output 69} is superseded by the
    # final message_delta {input 6, cache_creation 3337, read 6289, output 198, thinking 0}
    "anthropic-messages.stream.server-tool-cumulative.chunks.json": TokenCounts(
        input_uncached=6, cache_read=6289, cache_write=3337, output=198
    ),
    # the top level {input 181, read 0, output 8} leaves out the compaction pass; billed is the
    # sum of `iterations`: compaction {100, read 55096, out 83} + message {181, out 8}
    "anthropic-messages.stream.compaction-iterations.sse": TokenCounts(
        input_uncached=281, cache_read=55096, output=91
    ),
}


@pytest.mark.parametrize("name", sorted(ANTHROPIC_STREAMS))
def test_anthropic_stream_usage(name: str) -> None:
    raw = stream_raw("messages", name)
    assert tokens_from_usage("messages", raw) == ANTHROPIC_STREAMS[name]


def test_anthropic_stream_keeps_message_start_fields_the_delta_does_not_carry() -> None:
    raw = stream_raw("messages", "anthropic-messages.stream.sdk-fixture.sse")
    assert raw == {"input_tokens": 11, "output_tokens": 6}


def test_server_tool_stream_final_totals_come_from_message_delta() -> None:
    objects = stream_objects("anthropic-messages.stream.server-tool-cumulative.chunks.json")
    start = objects[0]["message"]["usage"]
    assert start["cache_creation"] == {
        "ephemeral_5m_input_tokens": 3068,
        "ephemeral_1h_input_tokens": 0,
    }
    raw = stream_raw("messages", "anthropic-messages.stream.server-tool-cumulative.chunks.json")
    assert raw["input_tokens"] == 6
    assert raw["cache_creation_input_tokens"] == 3337
    assert raw["cache_read_input_tokens"] == 6289
    assert raw["output_tokens"] == 198
    assert raw["output_tokens_details"] == {"thinking_tokens": 0}
    # the 3068-token breakdown from message_start no longer adds up to 3337 and is dropped
    assert "cache_creation" not in raw
    assert raw["service_tier"] == "standard"  # only in message_start


def test_compaction_stream_is_billed_as_the_sum_of_its_iterations() -> None:
    """Anthropic's compaction docs: the top level excludes compaction iterations and the billed
    total is the sum over `usage.iterations`."""
    raw = stream_raw("messages", "anthropic-messages.stream.compaction-iterations.sse")
    assert raw["cache_read_input_tokens"] == 0  # message_delta's 0 overrides message_start's 55096
    assert raw["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
    iterations = raw["iterations"]
    assert [it["type"] for it in iterations] == ["compaction", "message"]
    assert sum(it["input_tokens"] for it in iterations) == 100 + 181
    assert sum(it["cache_read_input_tokens"] for it in iterations) == 55096
    assert sum(it["output_tokens"] for it in iterations) == 83 + 8
    tokens = tokens_from_usage("messages", raw)
    assert (tokens.input_total, tokens.output_total) == (100 + 55096 + 181, 83 + 8)


def test_anthropic_stream_null_delta_fields_do_not_override() -> None:
    meter = StreamUsage("messages")
    meter.feed(
        {"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": 1}}}
    )
    meter.feed({"type": "message_delta", "usage": {"input_tokens": None, "output_tokens": 9}})
    assert meter.raw == {"input_tokens": 7, "output_tokens": 9}


def test_anthropic_stream_stale_1h_breakdown_is_refused_not_guessed() -> None:
    meter = StreamUsage("messages")
    meter.feed(
        {
            "type": "message_start",
            "message": {
                "usage": {
                    "input_tokens": 2,
                    "cache_creation_input_tokens": 30,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 10,
                        "ephemeral_1h_input_tokens": 20,
                    },
                    "output_tokens": 1,
                }
            },
        }
    )
    meter.feed({"type": "message_delta", "usage": {"cache_creation_input_tokens": 50}})
    raw = meter.raw
    assert raw is not None
    with pytest.raises(UsageMismatch):
        tokens_from_usage("messages", raw)


def test_anthropic_stream_delta_with_its_own_breakdown() -> None:
    meter = StreamUsage("messages")
    meter.feed(
        {
            "type": "message_start",
            "message": {
                "usage": {
                    "cache_creation_input_tokens": 30,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 10,
                        "ephemeral_1h_input_tokens": 20,
                    },
                }
            },
        }
    )
    meter.feed(
        {
            "type": "message_delta",
            "usage": {
                "cache_creation_input_tokens": 50,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 10,
                    "ephemeral_1h_input_tokens": 40,
                },
            },
        }
    )
    raw = meter.raw
    assert raw is not None
    assert tokens_from_usage("messages", raw) == TokenCounts(cache_write=10, cache_write_1h=40)


# --- OpenAI Responses and Embeddings -----------------------------------------------------------

RESPONSES = {
    # input 4020 of which 4012 written to the cache; output 5, no reasoning
    "openai-responses.cache-write.json": TokenCounts(input_uncached=8, cache_write=4012, output=5),
    # input 1493 of which 1280 cached; output 125 of which 64 reasoning
    "openai-responses.cached-and-reasoning.json": TokenCounts(
        input_uncached=213, cache_read=1280, output=61, reasoning=64
    ),
    # input 81; output 1035 of which 832 reasoning
    "openai-responses.docs-example.reasoning.json": TokenCounts(
        input_uncached=81, output=203, reasoning=832
    ),
}


@pytest.mark.parametrize("name", sorted(RESPONSES))
def test_openai_responses_samples(name: str) -> None:
    usage = load_json(name)["usage"]
    tokens = from_openai_responses_usage(usage)
    assert tokens == RESPONSES[name]
    assert tokens_from_usage("responses", usage) == tokens
    assert tokens.input_total + tokens.output_total == usage["total_tokens"]


def test_openai_responses_stream_usage_comes_from_response_completed() -> None:
    objects = stream_objects("openai-responses.stream.sse")
    assert objects[0]["type"] == "response.created"
    assert objects[0]["response"]["usage"] is None
    meter = StreamUsage("responses")
    for obj in objects:
        if obj["type"] == "response.completed":
            assert meter.raw is None  # nothing before the terminal event
        meter.feed(obj)
    raw = meter.raw
    assert raw is not None
    assert raw["total_tokens"] == 522
    # input 53; output 469 of which 448 reasoning
    assert tokens_from_usage("responses", raw) == TokenCounts(
        input_uncached=53, output=21, reasoning=448
    )


@pytest.mark.parametrize("kind", ["response.incomplete", "response.failed"])
def test_openai_responses_stream_accepts_other_terminal_events(kind: str) -> None:
    meter = StreamUsage("responses")
    meter.feed({"type": "response.created", "response": {"usage": None}})
    meter.feed({"type": kind, "response": {"usage": {"input_tokens": 3, "output_tokens": 2}}})
    assert meter.raw == {"input_tokens": 3, "output_tokens": 2}


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": 10, "output_tokens": 2, "total_tokens": 13},
        {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 11}},
        {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 5}},
        {"output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 3}},
        {"input_tokens": "10"},
        {"input_tokens": 10, "input_tokens_details": 4},
    ],
    ids=["total", "cached>input", "cached+write>input", "reasoning>output", "string", "details"],
)
def test_openai_responses_contradictions_are_refused(usage: dict[str, Any]) -> None:
    with pytest.raises(UsageMismatch):
        from_openai_responses_usage(usage)


def test_openai_embeddings_sample() -> None:
    usage = load_json("openai-embeddings.json")["usage"]
    assert usage == {"prompt_tokens": 4, "total_tokens": 4}
    assert from_openai_embeddings_usage(usage) == TokenCounts(input_uncached=4)
    assert tokens_from_usage("embeddings", usage) == TokenCounts(input_uncached=4)


@pytest.mark.parametrize(
    "usage", [{"prompt_tokens": 4, "total_tokens": 5}, {"prompt_tokens": -4}, {"total_tokens": 1}]
)
def test_openai_embeddings_contradictions_are_refused(usage: dict[str, Any]) -> None:
    with pytest.raises(UsageMismatch):
        from_openai_embeddings_usage(usage)


# --- chat streams ------------------------------------------------------------------------------

CHAT_STREAMS = {
    # usage on the finish_reason chunk (choices not empty): prompt 18 = 0 hit + 18 miss;
    # completion 219 of which 205 reasoning
    "deepseek-chat.reasoner.stream.chunks.json": TokenCounts(
        input_uncached=18, output=14, reasoning=205
    ),
    # final chunk with choices [] : prompt 18, completion 779, no completion details
    "qwen-compatible-mode.stream.chunks.json": TokenCounts(input_uncached=18, output=779),
    # usage on the finish_reason chunk: prompt 13; completion 564 of which 561 reasoning
    "zhipu-glm.zai.stream.sse": TokenCounts(input_uncached=13, output=3, reasoning=561),
    # ': OPENROUTER PROCESSING' comments; prompt 43; completion 36 of which 13 reasoning
    "openrouter-chat.stream.sse": TokenCounts(input_uncached=43, output=23, reasoning=13),
    # prompt 687 of which 679 cached; completion 187 of which 118 reasoning
    "openrouter-chat.stream.cached-reasoning.sse": TokenCounts(
        input_uncached=8, cache_read=679, output=69, reasoning=118
    ),
    # OpenAI include_usage: every chunk "usage": null, then a choices [] chunk with the usage
    "openai-chat-completions.stream-include-usage.sse": TokenCounts(input_uncached=14, output=8),
}


@pytest.mark.parametrize("name", sorted(CHAT_STREAMS))
def test_chat_stream_usage(name: str) -> None:
    raw = stream_raw("chat.completions", name)
    tokens = tokens_from_usage("chat.completions", raw)
    assert tokens == CHAT_STREAMS[name]
    assert tokens == from_openai_chat_usage(raw)
    assert tokens.input_total == raw["prompt_tokens"]
    assert tokens.output_total == raw["completion_tokens"]
    assert tokens.input_total + tokens.output_total == raw["total_tokens"]


@pytest.mark.parametrize("name", sorted(CHAT_STREAMS))
def test_chat_stream_has_one_usage_chunk(name: str) -> None:
    with_usage = [o for o in stream_objects(name) if o.get("usage") is not None]
    assert len(with_usage) == 1


def test_openrouter_usage_chunk_follows_the_finish_reason_chunk() -> None:
    """Unlike DeepSeek and GLM, OpenRouter's usage chunk is a separate, later chunk with a
    non-empty choices array and finish_reason null."""
    objects = stream_objects("openrouter-chat.stream.sse")
    finish = [i for i, o in enumerate(objects) if o["choices"][0].get("finish_reason")]
    usage = [i for i, o in enumerate(objects) if o.get("usage") is not None]
    assert len(finish) == 1
    assert usage == [finish[0] + 1]
    assert objects[usage[0]]["choices"][0]["finish_reason"] is None


def test_chat_stream_takes_the_last_usage_and_ignores_other_objects() -> None:
    meter = StreamUsage("completions")
    assert meter.raw is None
    meter.feed({"choices": [{"delta": {"content": "x"}}], "usage": None})
    meter.feed({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    meter.feed({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    meter.feed({"object": "chat.completion.chunk"})
    assert meter.raw == {"prompt_tokens": 5, "completion_tokens": 2}


def test_stream_raw_is_a_copy() -> None:
    meter = StreamUsage("messages")
    meter.feed(
        {
            "type": "message_start",
            "message": {
                "usage": {"input_tokens": 1, "cache_creation": {"ephemeral_5m_input_tokens": 0}}
            },
        }
    )
    raw = meter.raw
    assert raw is not None
    raw["input_tokens"] = 99
    raw["cache_creation"]["ephemeral_5m_input_tokens"] = 99
    assert meter.raw == {"input_tokens": 1, "cache_creation": {"ephemeral_5m_input_tokens": 0}}


def test_stream_without_usage_has_no_raw() -> None:
    meter = StreamUsage("messages")
    for obj in ({"type": "ping"}, {"type": "content_block_delta", "delta": {}}, {"type": "error"}):
        meter.feed(obj)
    assert meter.raw is None


# --- dispatch ----------------------------------------------------------------------------------


def test_dispatch_by_endpoint() -> None:
    chat = {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 6},
    }
    assert tokens_from_usage("chat.completions", chat) == TokenCounts(
        input_uncached=4, cache_read=6, output=4
    )
    assert tokens_from_usage("completions", chat) == tokens_from_usage("chat.completions", chat)
    anthropic = {"input_tokens": 10, "cache_read_input_tokens": 6, "output_tokens": 4}
    assert tokens_from_usage("messages", anthropic) == TokenCounts(
        input_uncached=10, cache_read=6, output=4
    )
    assert set(KNOWN_ENDPOINTS) == {
        "chat.completions",
        "completions",
        "responses",
        "embeddings",
        "messages",
    }


@pytest.mark.parametrize("endpoint", ["generateContent", "", "Messages", "/v1/messages"])
def test_unknown_endpoint_is_refused_clearly(endpoint: str) -> None:
    with pytest.raises(UsageMismatch, match="no usage parser for endpoint") as info:
        tokens_from_usage(endpoint, {"prompt_tokens": 1})
    assert repr(endpoint) in str(info.value)
    with pytest.raises(UsageMismatch, match="no usage parser for endpoint"):
        StreamUsage(endpoint)


def test_non_object_usage_is_refused() -> None:
    with pytest.raises(UsageMismatch):
        tokens_from_usage("messages", [1, 2])  # type: ignore[arg-type]


# --- usage_violation ---------------------------------------------------------------------------


def make_event(endpoint: str, tokens: TokenCounts, raw_usage: dict[str, Any]) -> UsageEvent:
    return UsageEvent(
        event_id=new_event_id(),
        event_time=datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
        tenant="acme",
        endpoint=endpoint,
        requested_model="claude-sonnet-4-5",
        served_model="claude-sonnet-4-5",
        provider="anthropic",
        provider_model="claude-sonnet-4-5-20250929",
        tokens=tokens,
        raw_usage=raw_usage,
    )


def test_usage_violation_reads_anthropic_usage_for_messages_events() -> None:
    usage = load_json("anthropic-messages.cache-read-and-write.json")["usage"]
    honest = make_event("messages", from_anthropic_usage(usage), usage)
    assert usage_violation(honest) is None
    # the same tokens filed with cache reads counted as uncached input
    tampered = honest.model_copy(
        update={"tokens": TokenCounts(input_uncached=3 + 1111, cache_write=418, output=33)}
    )
    reason = usage_violation(tampered)
    assert reason is not None
    assert "do not match" in reason


def test_usage_violation_reads_responses_usage_for_responses_events() -> None:
    usage = load_json("openai-responses.cached-and-reasoning.json")["usage"]
    event = make_event("responses", from_openai_responses_usage(usage), usage)
    assert usage_violation(event) is None


def test_usage_violation_on_unknown_endpoint_names_it() -> None:
    event = make_event("generateContent", TokenCounts(input_uncached=1), {"promptTokenCount": 1})
    reason = usage_violation(event)
    assert reason is not None
    assert "generateContent" in reason


def test_usage_violation_reports_inconsistent_anthropic_raw_usage() -> None:
    usage = load_json("anthropic-messages.usage-fragment.1h-cache.docs.json")["usage"]
    event = make_event("messages", TokenCounts(input_uncached=2048), usage)
    reason = usage_violation(event)
    assert reason is not None
    assert "248" in reason


def test_kimi_stream_usage_inside_the_finishing_choice_is_read() -> None:
    meter = StreamUsage("chat.completions")
    meter.feed({"choices": [{"index": 0, "delta": {"content": "hi"}}]})
    meter.feed(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {},
                    "finish_reason": "stop",
                    "usage": {"prompt_tokens": 19, "completion_tokens": 13, "total_tokens": 32},
                }
            ]
        }
    )
    assert tokens_from_usage("chat.completions", meter.raw or {}) == TokenCounts(
        input_uncached=19, output=13
    )
