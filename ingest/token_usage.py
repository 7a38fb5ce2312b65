"""Provider usage objects -> disjoint token classes.

Each provider counts differently; the rule for each is stated where it is applied. A usage object
whose parts do not add up is refused with `UsageMismatch` rather than priced by guess.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from ingest.usage_event import TokenCounts, UsageEvent


class UsageMismatch(ValueError):
    """The provider's usage object contradicts itself (e.g. cached tokens > prompt tokens)."""


def _int(obj: Mapping[str, Any] | None, key: str) -> int:
    if not obj:
        return 0
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageMismatch(f"usage field {key!r} is not a non-negative integer: {value!r}")
    return value


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = usage.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageMismatch(f"usage field {key!r} is not an object: {value!r}")
    return value


def _split_openai(
    usage: Mapping[str, Any],
    prompt: int,
    completion: int,
    cache_read: int,
    cache_write: int,
    reasoning: int,
    style: str,
) -> TokenCounts:
    """OpenAI-style totals (input includes cache reads and writes, output includes reasoning)
    into disjoint classes, refusing parts that exceed their totals. `style` names the fields
    in messages: "prompt" (prompt_tokens/completion_tokens) or "input" (input/output_tokens)."""
    inp, out = ("prompt", "completion") if style == "prompt" else ("input", "output")
    if cache_read + cache_write > prompt:
        raise UsageMismatch(
            f"cache read {cache_read} + cache write {cache_write} exceed {inp}_tokens {prompt}"
        )
    if reasoning > completion:
        raise UsageMismatch(f"reasoning_tokens {reasoning} exceed {out}_tokens {completion}")
    if not _total_matches(usage, "total_tokens", prompt + completion):
        raise UsageMismatch(
            f"total_tokens {usage['total_tokens']} != {inp}_tokens {prompt} "
            f"+ {out}_tokens {completion}"
        )
    return TokenCounts(
        input_uncached=prompt - cache_read - cache_write,
        cache_read=cache_read,
        cache_write=cache_write,
        output=completion - reasoning,
        reasoning=reasoning,
    )


def from_openai_chat_usage(usage: Mapping[str, Any]) -> TokenCounts:
    """OpenAI Chat Completions and the OpenAI-compatible providers (DeepSeek, Qwen, Kimi, GLM).

    `prompt_tokens` includes cached tokens and cache writes; `completion_tokens` includes reasoning.
    DeepSeek reports hits as `prompt_cache_hit_tokens` (and also `cached_tokens` on newer APIs).
    """
    prompt = _int(usage, "prompt_tokens")
    completion = _int(usage, "completion_tokens")
    prompt_details = _details(usage, "prompt_tokens_details")
    completion_details = _details(usage, "completion_tokens_details")
    hits = _int(usage, "prompt_cache_hit_tokens")
    if (
        "prompt_cache_miss_tokens" in usage
        and hits + _int(usage, "prompt_cache_miss_tokens") != prompt
    ):
        raise UsageMismatch(
            f"prompt_cache_hit_tokens {hits} + prompt_cache_miss_tokens "
            f"{usage['prompt_cache_miss_tokens']} != prompt_tokens {prompt}"
        )
    cache_read = _int(prompt_details, "cached_tokens") or hits
    cache_write = _int(prompt_details, "cache_write_tokens")
    reasoning = _int(completion_details, "reasoning_tokens")
    return _split_openai(usage, prompt, completion, cache_read, cache_write, reasoning, "prompt")


def _total_matches(usage: Mapping[str, Any], key: str, expected: int) -> bool:
    """True when `key` is absent/null or equals `expected` (it is validated either way)."""
    return usage.get(key) is None or _int(usage, key) == expected


def from_anthropic_usage(usage: Mapping[str, Any]) -> TokenCounts:
    """Anthropic Messages (`usage` of a message, or the merged usage of a stream).

    `input_tokens` EXCLUDES cache reads and writes: the billed input is input_tokens +
    cache_read_input_tokens + cache_creation_input_tokens. Cache writes are split by retention
    when the `cache_creation` object is present (its parts must add up to
    cache_creation_input_tokens); without it every write counts at the default 5 minute
    retention. `output_tokens` INCLUDES thinking: output_tokens_details.thinking_tokens is
    carved out of it as reasoning. With context compaction the top level leaves the compaction
    passes out and `iterations` lists every pass: the billed usage is their sum. Other fields
    (server_tool_use, service_tier, inference_geo, ...) are ignored.
    """
    iterations = usage.get("iterations")
    if isinstance(iterations, list) and iterations:
        if not all(isinstance(it, Mapping) for it in iterations):
            raise UsageMismatch("usage field 'iterations' must be a list of objects")
        parts = [_anthropic_single(it) for it in iterations]
        return TokenCounts(
            **{name: sum(getattr(p, name) for p in parts) for name in TokenCounts.model_fields}
        )
    return _anthropic_single(usage)


def _anthropic_single(usage: Mapping[str, Any]) -> TokenCounts:
    input_uncached = _int(usage, "input_tokens")
    cache_read = _int(usage, "cache_read_input_tokens")
    creation_total = _int(usage, "cache_creation_input_tokens")
    creation = _details(usage, "cache_creation")
    if usage.get("cache_creation") is not None:
        cache_write = _int(creation, "ephemeral_5m_input_tokens")
        cache_write_1h = _int(creation, "ephemeral_1h_input_tokens")
        if not _total_matches(usage, "cache_creation_input_tokens", cache_write + cache_write_1h):
            raise UsageMismatch(
                f"cache_creation ephemeral_5m_input_tokens {cache_write} + "
                f"ephemeral_1h_input_tokens {cache_write_1h} != "
                f"cache_creation_input_tokens {creation_total}"
            )
    else:
        cache_write, cache_write_1h = creation_total, 0
    output_total = _int(usage, "output_tokens")
    thinking = _int(_details(usage, "output_tokens_details"), "thinking_tokens")
    if thinking > output_total:
        raise UsageMismatch(f"thinking_tokens {thinking} exceed output_tokens {output_total}")
    return TokenCounts(
        input_uncached=input_uncached,
        cache_read=cache_read,
        cache_write=cache_write,
        cache_write_1h=cache_write_1h,
        output=output_total - thinking,
        reasoning=thinking,
    )


def from_openai_responses_usage(usage: Mapping[str, Any]) -> TokenCounts:
    """OpenAI Responses API.

    `input_tokens` includes input_tokens_details.cached_tokens and .cache_write_tokens;
    `output_tokens` includes output_tokens_details.reasoning_tokens; `total_tokens` (when
    present) is input_tokens + output_tokens.
    """
    prompt = _int(usage, "input_tokens")
    completion = _int(usage, "output_tokens")
    input_details = _details(usage, "input_tokens_details")
    cache_read = _int(input_details, "cached_tokens")
    cache_write = _int(input_details, "cache_write_tokens")
    reasoning = _int(_details(usage, "output_tokens_details"), "reasoning_tokens")
    return _split_openai(usage, prompt, completion, cache_read, cache_write, reasoning, "input")


def from_openai_embeddings_usage(usage: Mapping[str, Any]) -> TokenCounts:
    """OpenAI Embeddings: only `prompt_tokens` (all uncached input) and `total_tokens`."""
    prompt = _int(usage, "prompt_tokens")
    if not _total_matches(usage, "total_tokens", prompt):
        raise UsageMismatch(f"total_tokens {usage['total_tokens']} != prompt_tokens {prompt}")
    return TokenCounts(input_uncached=prompt)


_PARSERS: dict[str, Callable[[Mapping[str, Any]], TokenCounts]] = {
    "chat.completions": from_openai_chat_usage,
    "completions": from_openai_chat_usage,
    "responses": from_openai_responses_usage,
    "embeddings": from_openai_embeddings_usage,
    "messages": from_anthropic_usage,
}
KNOWN_ENDPOINTS: tuple[str, ...] = tuple(_PARSERS)
"""Endpoints whose usage objects `tokens_from_usage` and `StreamUsage` understand."""


def _unknown_endpoint(endpoint: str) -> UsageMismatch:
    return UsageMismatch(
        f"no usage parser for endpoint {endpoint!r} (known: {', '.join(KNOWN_ENDPOINTS)})"
    )


def tokens_from_usage(endpoint: str, usage: Mapping[str, Any]) -> TokenCounts:
    """The token classes of `usage`, read with the rules of the endpoint that produced it."""
    parser = _PARSERS.get(endpoint)
    if parser is None:
        raise _unknown_endpoint(endpoint)
    if not isinstance(usage, Mapping):
        raise UsageMismatch(f"usage for endpoint {endpoint!r} is not an object: {usage!r}")
    return parser(usage)


_RESPONSES_FINAL_EVENTS = frozenset(
    {"response.completed", "response.incomplete", "response.failed"}
)


def _breakdown_sum(breakdown: Any) -> int | None:
    """ephemeral_5m + ephemeral_1h of a cache_creation object, or None if it is not well formed."""
    if not isinstance(breakdown, Mapping):
        return None
    try:
        return _int(breakdown, "ephemeral_5m_input_tokens") + _int(
            breakdown, "ephemeral_1h_input_tokens"
        )
    except UsageMismatch:
        return None


class StreamUsage:
    """Collects the usage of one streamed call, one parsed SSE `data:` object at a time.

    `raw` is the usage of the whole call in the endpoint's own non-stream format, ready for
    `tokens_from_usage(endpoint, raw)`; None while (or if) the stream has carried no usage.

    - chat.completions / completions: the last chunk whose `usage` is an object. OpenAI and Qwen
      send it on a final chunk with empty `choices`; DeepSeek and GLM on the finish_reason chunk;
      OpenRouter on a trailing chunk that keeps a non-empty `choices`.
    - responses: `response.usage` of the terminal event (response.completed, .incomplete or
      .failed); response.created / .in_progress carry `usage: null`.
    - messages (Anthropic): message_start's `message.usage`, then every message_delta `usage`
      (cumulative) overrides the keys it carries with a non-null value. A message_delta that
      moves cache_creation_input_tokens without sending a `cache_creation` breakdown makes the
      breakdown from message_start stale: it is dropped (the writes then count at the default
      5 minute retention) if it held no 1 hour writes, and otherwise kept, so that the
      contradiction is refused by `from_anthropic_usage` instead of being priced by guess.
    """

    __slots__ = ("_raw", "endpoint")

    def __init__(self, endpoint: str) -> None:
        if endpoint not in _PARSERS:
            raise _unknown_endpoint(endpoint)
        self.endpoint = endpoint
        self._raw: dict[str, Any] | None = None

    @property
    def raw(self) -> dict[str, Any] | None:
        return copy.deepcopy(self._raw)

    def feed(self, obj: Mapping[str, Any]) -> None:
        if not isinstance(obj, Mapping):
            return
        if self.endpoint == "messages":
            self._feed_anthropic(obj)
        elif self.endpoint == "responses":
            if obj.get("type") in _RESPONSES_FINAL_EVENTS:
                response = obj.get("response")
                if isinstance(response, Mapping):
                    usage = response.get("usage")
                    if isinstance(usage, Mapping):
                        self._raw = dict(usage)
        else:  # chat.completions, completions, embeddings (never streamed, same shape)
            usage = obj.get("usage")
            if not isinstance(usage, Mapping):
                # Moonshot/Kimi streams carry the usage inside the finishing choice.
                choices = obj.get("choices")
                first = choices[0] if isinstance(choices, list) and choices else None
                usage = first.get("usage") if isinstance(first, Mapping) else None
            if isinstance(usage, Mapping):
                self._raw = dict(usage)

    def _feed_anthropic(self, obj: Mapping[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "message_start":
            message = obj.get("message")
            usage = message.get("usage") if isinstance(message, Mapping) else None
            if isinstance(usage, Mapping):
                self._raw = dict(usage)
        elif kind == "message_delta":
            usage = obj.get("usage")
            if not isinstance(usage, Mapping):
                return
            merged = dict(self._raw) if self._raw is not None else {}
            merged.update((key, value) for key, value in usage.items() if value is not None)
            stale = merged.get("cache_creation")
            if (
                usage.get("cache_creation_input_tokens") is not None
                and usage.get("cache_creation") is None
                and isinstance(stale, Mapping)
                and not stale.get("ephemeral_1h_input_tokens")
                and _breakdown_sum(stale) != merged["cache_creation_input_tokens"]
            ):
                del merged["cache_creation"]
            self._raw = merged


def usage_violation(event: UsageEvent) -> str | None:
    """Why an event's token classes cannot be trusted, or None.

    Provider-reported usage is re-derived from the raw usage kept for audit, with the parser of
    the event's endpoint (an endpoint without one is a violation); the classes must
    equal what the provider's own totals say. Estimated usage has no provider totals to check.
    """
    if event.usage_error:
        return event.usage_error
    if event.usage_source != "provider" or not event.raw_usage:
        return None
    try:
        expected = tokens_from_usage(event.endpoint, event.raw_usage)
    except UsageMismatch as exc:
        return str(exc)
    if expected != event.tokens:
        return f"token classes {event.tokens.model_dump()} do not match the provider usage"
    return None
