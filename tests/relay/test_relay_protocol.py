"""The running relay, called by the official openai SDK, with usage events read off the broker."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from ingest.topics import USAGE_EVENTS
from ingest.usage_event import UsageEvent
from tests.support import Service, end_offsets_by_partition, free_port, read_topic


def client(relay_url: str, key: str = "sk-acme-demo", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{relay_url}/v1", api_key=key, default_headers=headers)


def events_for(broker: str, since: dict[int, int], feature: str, count: int) -> list[UsageEvent]:
    """The events of `feature` since `since`, once `count` of them arrived (or 30 s passed)."""
    deadline = time.monotonic() + 30
    while True:
        events = [UsageEvent.from_wire(v) for v in read_topic(broker, USAGE_EVENTS, since)]
        found = [e for e in events if e.feature == feature]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


MESSAGES = [{"role": "user", "content": "How much does this call cost?"}]


def test_sdk_calls_each_publish_exactly_one_event_with_the_tokens_the_client_saw(
    relay_url: str, broker: str
) -> None:
    feature = f"f-{uuid.uuid4().hex[:8]}"
    since = end_offsets_by_partition(broker, USAGE_EVENTS)
    sdk = client(relay_url, **{"X-Feature": feature, "X-Prompt-Version": "v7", "X-Tags": "a, b"})

    plain = sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
    with_usage = list(
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    without_usage = list(
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=50, stream=True
        )
    )

    assert plain.usage is not None
    streamed_usage = with_usage[-1].usage
    assert streamed_usage is not None and with_usage[-1].choices == []
    assert streamed_usage.prompt_tokens == plain.usage.prompt_tokens
    # The relay asked upstream for usage but hides the usage-only chunk from this client.
    assert all(chunk.choices for chunk in without_usage)
    assert all(chunk.usage is None for chunk in without_usage)

    events = events_for(broker, since, feature, 3)
    assert len(events) == 3
    assert len({e.event_id for e in events}) == 3
    for event in events:
        assert event.tenant == "acme" and event.relay_key_id == "acme-demo"
        assert event.prompt_version == "v7" and event.tags == ("a", "b")
        assert event.outcome == "ok" and event.usage_source == "provider"
        assert event.tokens.input_total == plain.usage.prompt_tokens
        assert event.tokens.output_total == plain.usage.completion_tokens
        assert event.price_status == "pending" and event.cost_usd is None
    assert sorted(e.streamed for e in events) == [False, True, True]


def test_upstream_error_is_passed_through_and_metered_once(relay_url: str, broker: str) -> None:
    feature = f"f-{uuid.uuid4().hex[:8]}"
    since = end_offsets_by_partition(broker, USAGE_EVENTS)
    sdk = client(relay_url, **{"X-Feature": feature})
    with pytest.raises(openai.InternalServerError) as raised:
        sdk.with_options(max_retries=0).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "[[sim:error=500]]"}]
        )
    assert raised.value.status_code == 500
    events = events_for(broker, since, feature, 1)
    assert len(events) == 1
    assert events[0].outcome == "upstream_error" and events[0].http_status == 500
    assert events[0].tokens.input_total == 0


def test_missing_and_unknown_keys_get_401_in_openai_shape(relay_url: str) -> None:
    url = f"{relay_url}/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    missing = httpx.post(url, json=body)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError) as raised:
        client(relay_url, key="sk-not-a-tenant").chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
    assert raised.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client(relay_url, key="sk-not-a-tenant").models.list()


def test_unknown_model_gets_404_model_not_found(relay_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client(relay_url).chat.completions.create(model="gpt-9-imaginary", messages=MESSAGES)
    error = raised.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    assert "gpt-9-imaginary" in error["message"]


@pytest.mark.parametrize(
    ("content", "status", "param"),
    [
        (b'{"model": "gpt-4o-mini", "messages": [', 400, None),
        (b"[1, 2, 3]", 400, None),
        (b'{"model": 42, "messages": []}', 400, "model"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', 400, "messages"),
        (b'{"model": "gpt-4o-mini", "messages": [{}], "stream": "yes"}', 400, "stream"),
        (b'{"model": "gpt-4o-mini", "messages": [{}], "pad": "' + b"x" * 70_000 + b'"}', 413, None),
    ],
)
def test_bad_requests_get_openai_shaped_errors(
    relay_url: str, content: bytes, status: int, param: str | None
) -> None:
    response = httpx.post(
        f"{relay_url}/v1/chat/completions",
        content=content,
        headers={"authorization": "Bearer sk-acme-demo", "content-type": "application/json"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert "Traceback" not in response.text


def test_models_lists_the_catalog(relay_url: str) -> None:
    names = {model.id for model in client(relay_url).models.list()}
    assert {"gpt-4o-mini", "gpt-4o", "deepseek-chat", "claude-3-5-sonnet", "kimi-k2"} <= names


def test_relay_keeps_serving_and_spools_when_the_broker_is_unreachable(
    tmp_path: Path, services: list[Service]
) -> None:
    dead_broker = f"127.0.0.1:{free_port()}"
    relay_port, sim_port = free_port(), free_port()
    env = {
        "TOKENOPS_KAFKA_BOOTSTRAP": dead_broker,
        "TOKENOPS_DATA_DIR": str(tmp_path),
        "TOKENOPS_RELAY_PORT": str(relay_port),
        "TOKENOPS_SIMULATOR_PORT": str(sim_port),
        "TOKENOPS_SIMULATE": "always",
    }
    services.append(Service(["simulator"], env, tmp_path / "simulator.log"))
    services.append(relay := Service(["relay"], env, tmp_path / "relay.log"))
    services[0].wait_http(f"http://127.0.0.1:{sim_port}/healthz")
    relay.wait_http(f"http://127.0.0.1:{relay_port}/healthz")
    url = f"http://127.0.0.1:{relay_port}"

    for _ in range(3):
        answer = client(url).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert answer.usage is not None

    deadline = time.monotonic() + 30
    ready = httpx.get(f"{url}/readyz", timeout=10)
    while ready.json()["spool_depth"] < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["broker"] == "unreachable" and ready.json()["spool_depth"] == 3
    assert dead_broker in relay.log.read_text()
    assert "Traceback" not in relay.log.read_text()
