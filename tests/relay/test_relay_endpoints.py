"""Every relay endpoint, driven by the official openai and anthropic SDKs; each call's one usage
event is read back off the broker and must carry the tokens the client was told."""

from __future__ import annotations

import time
import uuid

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from ingest.topics import USAGE_EVENTS
from ingest.usage_event import UsageEvent
from tests.support import end_offsets_by_partition, read_topic


def tagged(relay_url: str, key: str = "sk-acme-demo") -> tuple[str, openai.OpenAI]:
    feature = f"f-{uuid.uuid4().hex[:8]}"
    return feature, openai.OpenAI(
        base_url=f"{relay_url}/v1", api_key=key, default_headers={"X-Feature": feature}
    )


def ask(sdk: openai.OpenAI, model: str, times: int) -> list[ChatCompletion]:
    """`times` plain chat calls saying hello to `model`."""
    return [
        sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])
        for _ in range(times)
    ]


def events(broker: str, since: dict[int, int], feature: str, count: int) -> list[UsageEvent]:
    found: list[UsageEvent] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [
            e
            for e in (UsageEvent.from_wire(v) for v in read_topic(broker, USAGE_EVENTS, since))
            if e.feature == feature
        ]
        if len(found) >= count:
            break
        time.sleep(0.5)
    assert len(found) == count, found
    return sorted(found, key=lambda e: e.event_id)


def test_legacy_completions_streamed_and_not(relay_url: str, broker: str) -> None:
    since = end_offsets_by_partition(broker, USAGE_EVENTS)
    feature, sdk = tagged(relay_url)
    plain = sdk.completions.create(model="gpt-4o-mini", prompt="Say hello", max_tokens=30)
    chunks = list(
        sdk.completions.create(
            model="gpt-4o-mini",
            prompt="Say hello",
            max_tokens=30,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert plain.usage is not None and chunks[-1].usage == plain.usage
    for event in events(broker, since, feature, 2):
        assert event.endpoint == "completions" and event.usage_source == "provider"
        assert event.tokens.input_total == plain.usage.prompt_tokens
        assert event.tokens.output_total == plain.usage.completion_tokens


def test_embeddings_meter_input_tokens_only(relay_url: str, broker: str) -> None:
    since = end_offsets_by_partition(broker, USAGE_EVENTS)
    feature, sdk = tagged(relay_url)
    result = sdk.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0
    (event,) = events(broker, since, feature, 1)
    assert event.endpoint == "embeddings"
    assert event.tokens.input_uncached == result.usage.prompt_tokens
    assert event.tokens.output_total == 0


def test_responses_streamed_and_not(relay_url: str, broker: str) -> None:
    since = end_offsets_by_partition(broker, USAGE_EVENTS)
    feature, sdk = tagged(relay_url)
    answer = sdk.responses.create(model="gpt-4o-mini", input="Explain prompt caching briefly.")
    assert answer.usage is not None and answer.output_text
    with sdk.responses.stream(model="gpt-4o-mini", input="Explain prompt caching briefly.") as s:
        text = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    assert text and final.usage is not None
    for event in events(broker, since, feature, 2):
        assert event.endpoint == "responses"
        assert event.tokens.input_total == answer.usage.input_tokens
        assert event.tokens.output_total == answer.usage.output_tokens
        assert event.tokens.cache_read == answer.usage.input_tokens_details.cached_tokens


def test_anthropic_messages_streamed_and_not(relay_url: str, broker: str) -> None:
    since = end_offsets_by_partition(broker, USAGE_EVENTS)
    feature = f"f-{uuid.uuid4().hex[:8]}"
    sdk = anthropic.Anthropic(
        base_url=relay_url, api_key="sk-globex-demo", default_headers={"X-Feature": feature}
    )
    long = "Summarise the quarterly incident review for the board. " * 100
    message = sdk.messages.create(
        model="claude-3-5-sonnet",
        max_tokens=64,
        messages=[{"role": "user", "content": long}],
    )
    with sdk.messages.stream(
        model="claude-3-5-sonnet", max_tokens=64, messages=[{"role": "user", "content": long}]
    ) as stream:
        streamed_text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed_text and final.usage.output_tokens == message.usage.output_tokens
    billed_input = (
        message.usage.input_tokens
        + (message.usage.cache_read_input_tokens or 0)
        + (message.usage.cache_creation_input_tokens or 0)
    )
    assert message.usage.cache_read_input_tokens  # a long prompt reads from the cache
    for event in events(broker, since, feature, 2):
        assert event.tenant == "globex" and event.endpoint == "messages"
        assert event.provider == "anthropic" and event.usage_source == "provider"
        assert event.tokens.input_uncached == message.usage.input_tokens
        assert event.tokens.cache_read == message.usage.cache_read_input_tokens
        assert event.tokens.input_total == billed_input
        assert event.tokens.output_total == message.usage.output_tokens


def test_anthropic_errors_come_back_in_anthropic_shape(relay_url: str) -> None:
    sdk = anthropic.Anthropic(base_url=relay_url, api_key="sk-globex-demo", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk.messages.create(
            model="claude-9", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "The model `claude-9` does not exist or you do not have access to it.",
        },
    }
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=relay_url, api_key="nope").messages.create(
            model="claude-3-5-sonnet", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    no_max = httpx.post(
        f"{relay_url}/v1/messages",
        json={"model": "claude-3-5-sonnet", "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": "sk-globex-demo"},
    )
    assert no_max.status_code == 400
    assert no_max.json()["error"]["type"] == "invalid_request_error"


def test_a_restricted_key_may_use_only_its_models_and_features(relay_url: str) -> None:
    sdk = openai.OpenAI(
        base_url=f"{relay_url}/v1",
        api_key="sk-initech-batch",
        default_headers={"X-Feature": "batch-summaries"},
        max_retries=0,
    )
    ok = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert ok.usage is not None
    with pytest.raises(openai.PermissionDeniedError) as model_denied:
        sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert model_denied.value.code == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError) as feature_denied:
        sdk.with_options(default_headers={"X-Feature": "search"}).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert feature_denied.value.code == "feature_not_allowed"


def test_a_cut_stream_and_a_client_that_leaves_are_each_metered_once(
    relay_url: str, broker: str
) -> None:
    since = end_offsets_by_partition(broker, USAGE_EVENTS)
    feature, sdk = tagged(relay_url)
    cut = list(
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "[[sim:cut_stream=3]] tell a long story"}],
            stream=True,
            max_tokens=500,
        )
    )
    assert 0 < len(cut) < 10
    with httpx.stream(
        "POST",
        f"{relay_url}/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "stream": True,
            "max_tokens": 200_000,
            # far more than the sockets buffer, so the relay is still streaming when we leave
            "messages": [{"role": "user", "content": "[[sim:completion_tokens=200000]] go on"}],
        },
        headers={"authorization": "Bearer sk-acme-demo", "x-feature": feature},
    ) as response:
        next(response.iter_lines())  # read the first line, then hang up
    found = events(broker, since, feature, 2)
    outcomes = sorted((e.outcome, e.error_code) for e in found)
    assert outcomes == [("cancelled", "stream_cancelled"), ("upstream_error", "stream_incomplete")]
    for event in found:
        assert event.usage_source in ("estimated", "partial")
        assert event.tokens.input_total > 0


def test_metrics_are_exposed_for_prometheus(relay_url: str) -> None:
    text = httpx.get(f"{relay_url}/metrics").text
    assert 'tokenops_relay_requests_total{endpoint="chat.completions",status="200"}' in text
    assert "tokenops_relay_spool_depth" in text
    assert "tokenops_relay_request_seconds_bucket" in text
