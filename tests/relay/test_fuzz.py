"""Fuzzing the running relay: whatever the body, the answer is never a 5xx or a traceback.

Bodies mix valid and hostile values for every field the relay reads (model, messages, stream,
stream_options, prompt, input, max_tokens, user, metadata) plus arbitrary extra JSON.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
MODELS = st.sampled_from(["gpt-4o-mini", "claude-3-5-sonnet", "no-such-model", "", "cheap-chat"])
MESSAGES = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", 7]), "content": JSON}),
    max_size=3,
)
FIELDS: dict[str, Any] = {
    "model": MODELS | JSON,
    "messages": MESSAGES | JSON,
    "stream": st.booleans() | JSON,
    "stream_options": st.fixed_dictionaries({"include_usage": JSON}) | JSON,
    "prompt": st.text(max_size=30) | JSON,
    "input": st.text(max_size=30) | JSON,
    "max_tokens": st.integers(min_value=-5, max_value=64) | JSON,
    "user": JSON,
    "metadata": JSON,
    "extra": JSON,
}
BODIES = st.fixed_dictionaries({}, optional=FIELDS)
PATHS = st.sampled_from(
    ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"]
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=PATHS, body=BODIES | JSON)
def test_no_body_makes_the_relay_fail(relay_url: str, path: str, body: Any) -> None:
    response = httpx.post(
        f"{relay_url}{path}",
        content=json.dumps(body).encode(),
        headers={"authorization": "Bearer sk-acme-demo", "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code < 500, (response.status_code, response.text[:500])
    assert "Traceback" not in response.text
