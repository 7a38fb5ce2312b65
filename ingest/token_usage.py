"""Provider usage objects -> disjoint token classes.

Each provider counts differently; the rule for each is stated where it is applied. A usage object
whose parts do not add up is refused with `UsageMismatch` rather than priced by guess.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    if cache_read + cache_write > prompt:
        raise UsageMismatch(
            f"cache read {cache_read} + cache write {cache_write} exceed prompt_tokens {prompt}"
        )
    if reasoning > completion:
        raise UsageMismatch(f"reasoning_tokens {reasoning} exceed completion_tokens {completion}")
    total = usage.get("total_tokens")
    if total is not None and _int(usage, "total_tokens") != prompt + completion:
        raise UsageMismatch(
            f"total_tokens {total} != prompt_tokens {prompt} + completion_tokens {completion}"
        )
    return TokenCounts(
        input_uncached=prompt - cache_read - cache_write,
        cache_read=cache_read,
        cache_write=cache_write,
        output=completion - reasoning,
        reasoning=reasoning,
    )


def usage_violation(event: UsageEvent) -> str | None:
    """Why an event's token classes cannot be trusted, or None.

    Provider-reported usage is re-derived from the raw usage kept for audit; the classes must
    equal what the provider's own totals say. Estimated usage has no provider totals to check.
    """
    if event.usage_error:
        return event.usage_error
    if event.usage_source != "provider" or not event.raw_usage:
        return None
    try:
        expected = from_openai_chat_usage(event.raw_usage)
    except UsageMismatch as exc:
        return str(exc)
    if expected != event.tokens:
        return f"token classes {event.tokens.model_dump()} do not match the provider usage"
    return None
