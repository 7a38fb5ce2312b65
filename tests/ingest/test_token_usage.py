"""from_openai_chat_usage on real provider payloads, plus refusal of contradictory usage."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pytest

from ingest.token_usage import UsageMismatch, from_openai_chat_usage
from ingest.usage_event import TokenCounts, UsageEvent
from tests.support import provider_sample, usage_event


def make_event(tokens: TokenCounts, **overrides: Any) -> UsageEvent:
    return usage_event(tokens, **overrides)


_sample_path = provider_sample


def _sse_usage(text: str) -> dict[str, Any]:
    """The usage object of an OpenAI-style SSE stream: the one data chunk with non-null usage."""
    usages = []
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if not data or data == "[DONE]":
            continue
        chunk = json.loads(data)
        if chunk.get("usage") is not None:
            usages.append(chunk["usage"])
    assert len(usages) == 1, f"expected exactly one usage chunk, found {len(usages)}"
    return usages[0]


def load_usage(name: str) -> dict[str, Any]:
    path = _sample_path(name)
    text = path.read_text(encoding="utf-8")
    if name.endswith(".sse"):
        return _sse_usage(text)
    return json.loads(text)["usage"]


# sample file -> the disjoint token classes a person computes by hand from its usage object
EXPECTED = {
    # prompt 4020 of which 4012 cached
    "openai-chat-completions.cache-hit.json": TokenCounts(
        input_uncached=8, cache_read=4012, output=4
    ),
    # prompt 4020 of which 4012 written to the cache
    "openai-chat-completions.cache-write.json": TokenCounts(
        input_uncached=8, cache_write=4012, output=4
    ),
    # completion 87 of which 64 reasoning
    "openai-chat-completions.reasoning-tokens.json": TokenCounts(
        input_uncached=7, output=23, reasoning=64
    ),
    # 495 = 320 hit + 175 miss; completion 144 of which 118 reasoning
    "deepseek-chat.reasoner.cache-hit.json": TokenCounts(
        input_uncached=175, cache_read=320, output=26, reasoning=118
    ),
    # no completion_tokens_details at all
    "deepseek-chat.chat.json": TokenCounts(input_uncached=13, output=300),
    # completion 1668 of which 1353 reasoning
    "qwen-compatible-mode.reasoning.json": TokenCounts(
        input_uncached=24, output=315, reasoning=1353
    ),
    # 15 prompt with 3 cached; 249 completion with 239 reasoning
    "zhipu-glm.zai-coding.chat.json": TokenCounts(
        input_uncached=12, cache_read=3, output=10, reasoning=239
    ),
    # 3329 prompt = 3211 cached + 115 written + 3 uncached
    "openrouter-chat.cache-and-cost.json": TokenCounts(
        input_uncached=3, cache_read=3211, cache_write=115, output=53
    ),
    # final chunk of a stream with include_usage
    "openai-chat-completions.stream-include-usage.sse": TokenCounts(input_uncached=14, output=8),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_sample_decomposes_into_expected_classes(name: str) -> None:
    assert from_openai_chat_usage(load_usage(name)) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_sample_totals_are_preserved(name: str) -> None:
    usage = load_usage(name)
    tokens = from_openai_chat_usage(usage)
    assert tokens.input_total == usage["prompt_tokens"]
    assert tokens.output_total == usage["completion_tokens"]
    assert tokens.input_total + tokens.output_total == usage["total_tokens"]


def test_sse_usage_chunk_is_the_empty_choices_chunk() -> None:
    path = _sample_path("openai-chat-completions.stream-include-usage.sse")
    chunks = [
        json.loads(line[len("data:") :])
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("data:") and line.strip() != "data: [DONE]"
    ]
    with_usage = [c for c in chunks if c.get("usage") is not None]
    assert len(chunks) > 1
    assert len(with_usage) == 1
    assert with_usage[0]["choices"] == []
    assert with_usage[0] is chunks[-1]


def test_deepseek_hit_count_used_when_prompt_details_absent() -> None:
    """Older DeepSeek responses only carry prompt_cache_hit_tokens, not prompt_tokens_details."""
    usage = copy.deepcopy(load_usage("deepseek-chat.reasoner.cache-hit.json"))
    del usage["prompt_tokens_details"]
    tokens = from_openai_chat_usage(usage)
    assert tokens.cache_read == 320
    assert tokens.input_uncached == 175
    assert tokens.input_total == 495


def test_usage_from_sample_survives_event_wire_round_trip() -> None:
    usage = load_usage("openrouter-chat.cache-and-cost.json")
    event = make_event(from_openai_chat_usage(usage), raw_usage=usage)
    back = UsageEvent.from_wire(event.to_wire())
    assert back.tokens == EXPECTED["openrouter-chat.cache-and-cost.json"]
    assert back.tokens.input_total == usage["prompt_tokens"]


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 10, "completion_tokens": 2},
        {
            "prompt_tokens": 10,
            "completion_tokens": 2,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
        {
            "prompt_tokens": 10,
            "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": None},
            "completion_tokens_details": {"reasoning_tokens": None},
        },
    ],
    ids=["no-details", "null-details", "null-detail-fields"],
)
def test_missing_or_null_details_mean_zero(usage: dict[str, Any]) -> None:
    assert from_openai_chat_usage(usage) == TokenCounts(input_uncached=10, output=2)


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}},
        {"prompt_tokens": 10, "prompt_tokens_details": {"cache_write_tokens": 11}},
        {
            "prompt_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 5},
        },
        {"prompt_tokens": 10, "prompt_cache_hit_tokens": 11},
        {"prompt_tokens_details": {"cached_tokens": 1}},
        {"completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 6}},
        {"completion_tokens_details": {"reasoning_tokens": 1}},
    ],
    ids=[
        "cached>prompt",
        "write>prompt",
        "cached+write>prompt",
        "deepseek-hit>prompt",
        "cached-without-prompt",
        "reasoning>completion",
        "reasoning-without-completion",
    ],
)
def test_contradictory_usage_is_refused(usage: dict[str, Any]) -> None:
    with pytest.raises(UsageMismatch):
        from_openai_chat_usage(usage)


BAD_VALUES = [-1, 1.5, 12.0, "12", [1], True, False]


def _with_value(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": 20,
        "completion_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 1},
        "completion_tokens_details": {"reasoning_tokens": 1},
    }
    target = usage
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return usage


@pytest.mark.parametrize(
    "path",
    [
        ("prompt_tokens",),
        ("completion_tokens",),
        ("prompt_tokens_details", "cached_tokens"),
        ("prompt_tokens_details", "cache_write_tokens"),
        ("completion_tokens_details", "reasoning_tokens"),
    ],
    ids=lambda p: ".".join(p),
)
@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
def test_non_integer_negative_or_boolean_fields_are_refused(
    path: tuple[str, ...], value: Any
) -> None:
    usage = _with_value(path, value)
    # the same usage with a valid value at that place is accepted
    from_openai_chat_usage(_with_value(path, 10))
    with pytest.raises(UsageMismatch):
        from_openai_chat_usage(usage)


@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
def test_bad_deepseek_hit_count_is_refused(value: Any) -> None:
    with pytest.raises(UsageMismatch):
        from_openai_chat_usage({"prompt_tokens": 20, "prompt_cache_hit_tokens": value})


def test_usage_mismatch_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        from_openai_chat_usage({"prompt_tokens": -3})


@pytest.mark.parametrize(
    ("prompt", "cached", "written"), list(itertools.product(range(4), repeat=3))
)
def test_input_side_grid(prompt: int, cached: int, written: int) -> None:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": 0,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
    }
    if cached + written > prompt:
        with pytest.raises(UsageMismatch):
            from_openai_chat_usage(usage)
        return
    tokens = from_openai_chat_usage(usage)
    assert tokens.cache_read == cached
    assert tokens.cache_write == written
    assert tokens.input_uncached == prompt - cached - written >= 0
    assert tokens.input_total == prompt
    assert tokens.output_total == 0


@pytest.mark.parametrize(("completion", "reasoning"), list(itertools.product(range(5), repeat=2)))
def test_output_side_grid(completion: int, reasoning: int) -> None:
    usage = {
        "prompt_tokens": 1,
        "completion_tokens": completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    if reasoning > completion:
        with pytest.raises(UsageMismatch):
            from_openai_chat_usage(usage)
        return
    tokens = from_openai_chat_usage(usage)
    assert tokens.reasoning == reasoning
    assert tokens.output == completion - reasoning >= 0
    assert tokens.output_total == completion
    assert tokens.input_total == 1


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 10, "prompt_tokens_details": [1]},
        {"prompt_tokens": 10, "completion_tokens": 2, "completion_tokens_details": "x"},
        {"prompt_tokens": 495, "prompt_cache_hit_tokens": 320, "prompt_cache_miss_tokens": 100},
    ],
)
def test_malformed_details_and_inconsistent_deepseek_counts_are_refused(
    usage: dict[str, object],
) -> None:
    with pytest.raises(UsageMismatch):
        from_openai_chat_usage(usage)
