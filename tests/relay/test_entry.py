"""The relay's two ways into a model endpoint answer alike: its ASGI entry (also below a root
path) and the FastAPI routes that document them; and an error whose message quotes text that
UTF-8 cannot carry still gets the caller's JSON error."""

from __future__ import annotations

from pathlib import Path

import httpx

from relay.app import create_app
from tests.support import served_on_loopback
from tokenops.settings import Settings

AUTH = {"authorization": "Bearer sk-acme-demo", "content-type": "application/json"}
UNKNOWN = b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}'


def settings(tmp_path: Path, broker: str) -> Settings:
    return Settings(data_dir=tmp_path, kafka_bootstrap=broker)


def assert_model_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "model_not_found"


def test_below_a_root_path_model_calls_are_answered_by_the_relay(
    tmp_path: Path, broker: str
) -> None:
    # behind a proxy that strips /relay: uvicorn puts it back in front of the path
    with served_on_loopback(create_app(settings(tmp_path, broker)), root_path="/relay") as base:
        assert_model_not_found(
            httpx.post(f"{base}/v1/chat/completions", content=UNKNOWN, headers=AUTH)
        )
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}


def test_the_fastapi_routes_answer_model_calls_as_the_entry_does(
    tmp_path: Path, broker: str
) -> None:
    relay = create_app(settings(tmp_path, broker))
    with served_on_loopback(relay.api) as base:  # FastAPI alone: its router serves the model routes
        assert_model_not_found(
            httpx.post(f"{base}/v1/chat/completions", content=UNKNOWN, headers=AUTH)
        )
        messages = httpx.post(
            f"{base}/v1/messages",
            content=b'{"model": "x", "max_tokens": 5, "messages": [{"role": "user"}]}',
            headers={"x-api-key": "sk-acme-demo", "content-type": "application/json"},
        )
        assert messages.status_code == 404
        assert messages.json()["error"]["type"] == "not_found_error"  # Anthropic's envelope
        assert "/v1/chat/completions" in httpx.get(f"{base}/openapi.json").json()["paths"]


def test_a_model_name_utf8_cannot_carry_gets_a_json_404(relay_url: str) -> None:
    body = b'{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}'
    response = httpx.post(f"{relay_url}/v1/chat/completions", content=body, headers=AUTH)
    assert_model_not_found(response)
    assert response.headers["content-type"] == "application/json"
