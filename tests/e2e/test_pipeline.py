"""The whole pipeline, started the way a user starts it (`tokenops up`), driven by the official
openai SDK: the query API's totals must equal, exactly, what the client was told and what
genai-prices says those tokens cost; the tenant over its budget must get an alert."""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from genai_prices import Usage, calc_price

from tests.e2e.conftest import Pipeline, poll, running_pipeline
from tokenops.broker import port_is_open

pytestmark = pytest.mark.slow

# requested model -> (provider, served model) as in the demo catalog; costs group by served model
CATALOG = {
    "gpt-4o-mini": ("openai", "gpt-4o-mini"),
    "gpt-4o": ("openai", "gpt-4o"),
    "claude-3-5-sonnet": ("anthropic", "claude-3-5-sonnet-latest"),
    "kimi-k2": ("moonshotai", "kimi-k2"),
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    budgets = [
        {"tenant": "globex", "period": "day", "limit_usd": "0.0005", "thresholds": [0.5, 1.0]},
        {"tenant": "acme", "period": "month", "limit_usd": "1000", "thresholds": [1.0]},
        {"tenant": "initech", "period": "day", "limit_usd": "0.0002", "hard": True},
    ]
    with running_pipeline(tmp_path_factory.mktemp("pipeline"), budgets) as pipeline:
        yield pipeline


def expected_cost(model: str, usage: Any) -> Decimal:
    provider, provider_model = CATALOG[model]
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    price = calc_price(
        Usage(
            input_tokens=usage.prompt_tokens,
            cache_read_tokens=cached or 0,
            output_tokens=usage.completion_tokens,
        ),
        model_ref=provider_model,
        provider_id=provider,
    )
    return price.total_price


LONG_PROMPT = "Summarise our refund policy for enterprise customers. " * 120


def test_costs_match_the_client_usage_and_genai_prices_exactly(pipeline: Pipeline) -> None:
    calls = [
        # tenant key, feature, prompt version, model, prompt, stream mode
        ("sk-acme-demo", "search", "v1", "gpt-4o-mini", "find invoices from march", None),
        ("sk-acme-demo", "search", "v1", "gpt-4o-mini", "find invoices from april", None),
        ("sk-acme-demo", "search", "v2", "gpt-4o-mini", "find invoices from march", "usage"),
        ("sk-acme-demo", "support", "v1", "gpt-4o", LONG_PROMPT, None),
        ("sk-acme-demo", "support", "v1", "gpt-4o", LONG_PROMPT, "usage"),
        ("sk-globex-demo", "summarize", "s1", "claude-3-5-sonnet", "summarise the memo", None),
        ("sk-globex-demo", "summarize", "s1", "claude-3-5-sonnet", "summarise the memo", "plain"),
        ("sk-globex-demo", "summarize", "s2", "kimi-k2", "summarise the memo briefly", "usage"),
    ]
    expected: dict[tuple[str, str, str, str], dict[str, Any]] = defaultdict(
        lambda: {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": Decimal(0)}
    )
    last_usage: dict[tuple[str, str, str], Any] = {}
    for key, feature, version, model, prompt, stream in calls:
        sdk = openai.OpenAI(
            base_url=f"{pipeline.relay}/v1",
            api_key=key,
            default_headers={"X-Feature": feature, "X-Prompt-Version": version},
        )
        messages = [{"role": "user", "content": prompt}]
        if stream is None:
            usage = sdk.chat.completions.create(model=model, messages=messages).usage
        elif stream == "usage":
            chunks = list(
                sdk.chat.completions.create(
                    model=model,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            usage = chunks[-1].usage
        else:
            # A stream without include_usage shows the client no usage: the same request
            # answered before (the simulator is deterministic) tells what it used.
            chunks = list(sdk.chat.completions.create(model=model, messages=messages, stream=True))
            assert all(chunk.usage is None for chunk in chunks)
            usage = last_usage[(key, model, prompt)]
        assert usage is not None
        last_usage[(key, model, prompt)] = usage
        tenant = key.removeprefix("sk-").removesuffix("-demo")
        row = expected[(tenant, feature, version, CATALOG[model][1])]
        row["requests"] += 1
        row["input_tokens"] += usage.prompt_tokens
        row["output_tokens"] += usage.completion_tokens
        row["cost_usd"] += expected_cost(model, usage)

    # The long prompt crosses the 1,024-token cache threshold: cached tokens must be priced.
    assert last_usage[("sk-acme-demo", "gpt-4o", LONG_PROMPT)].prompt_tokens_details.cached_tokens

    url = f"{pipeline.api}/api/costs?group_by=tenant,feature,prompt_version,model"
    body = poll(url, lambda b: sum(r["requests"] for r in b["rows"]) >= len(calls))
    actual = {
        (r["tenant"], r["feature"], r["prompt_version"], r["model"]): {
            "requests": r["requests"],
            "input_tokens": r["input_tokens"],
            "output_tokens": r["output_tokens"],
            "cost_usd": Decimal(r["cost_usd"]),
        }
        for r in body["rows"]
    }
    assert actual == dict(expected)
    assert all(isinstance(r["cost_usd"], str) for r in body["rows"])

    by_tenant = pipeline.http.get(f"{pipeline.api}/api/costs?group_by=tenant&tenant=acme").json()
    acme_total = sum(
        (v["cost_usd"] for k, v in expected.items() if k[0] == "acme"), start=Decimal(0)
    )
    assert [Decimal(r["cost_usd"]) for r in by_tenant["rows"]] == [acme_total]


def test_the_tenant_over_budget_gets_one_alert_per_threshold(pipeline: Pipeline) -> None:
    sdk = openai.OpenAI(base_url=f"{pipeline.relay}/v1", api_key="sk-globex-demo")
    for _ in range(3):
        sdk.chat.completions.create(
            model="claude-3-5-sonnet", messages=[{"role": "user", "content": LONG_PROMPT}]
        )
    body = poll(
        f"{pipeline.api}/api/alerts?tenant=globex&kind=budget",
        lambda b: any(a["state"] == "BREACH" for a in b["alerts"]),
    )
    states = sorted(a["state"] for a in body["alerts"])
    assert states == ["BREACH", "WARN"]
    breach = next(a for a in body["alerts"] if a["state"] == "BREACH")
    assert breach["scope"] == {"tenant": "globex"} and breach["period"] == "day"
    assert Decimal(breach["spend_usd"]) >= Decimal("0.0005") == Decimal(breach["limit_usd"])
    assert pipeline.http.get(f"{pipeline.api}/api/alerts?tenant=acme").json()["alerts"] == []


def test_dashboard_page_is_served(pipeline: Pipeline) -> None:
    anonymous = httpx.get(f"{pipeline.api}/")
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login?next=/"
    assert httpx.get(f"{pipeline.api}/api/costs").status_code == 401
    page = pipeline.http.get(f"{pipeline.api}/")
    assert page.status_code == 200 and "tokenops" in page.text
    script = httpx.get(f"{pipeline.api}/static/dashboard.js")  # assets need no login
    assert script.status_code == 200 and "/api/" in script.text


def test_a_hard_budget_closes_the_relay_for_that_tenant_only(pipeline: Pipeline) -> None:
    sdk = openai.OpenAI(base_url=f"{pipeline.relay}/v1", api_key="sk-initech-demo", max_retries=0)
    messages = [{"role": "user", "content": LONG_PROMPT}]
    deadline = time.monotonic() + 60
    refused: openai.RateLimitError | None = None
    while refused is None and time.monotonic() < deadline:
        try:
            sdk.chat.completions.create(model="claude-3-5-sonnet", messages=messages)
            time.sleep(0.5)
        except openai.RateLimitError as exc:
            refused = exc
    assert refused is not None, "initech was never refused"
    assert refused.code == "budget_exceeded"
    assert refused.response.headers["x-should-retry"] == "false"
    assert int(refused.response.headers["retry-after"]) <= 86_400
    blocked = httpx.post(
        f"{pipeline.relay}/v1/messages",
        json={"model": "claude-3-5-sonnet", "max_tokens": 10, "messages": messages},
        headers={"x-api-key": "sk-initech-demo"},
    )
    assert blocked.status_code == 429 and blocked.json()["error"]["type"] == "rate_limit_error"
    other = openai.OpenAI(base_url=f"{pipeline.relay}/v1", api_key="sk-acme-demo")
    assert other.chat.completions.create(model="gpt-4o-mini", messages=messages).usage


def test_ctrl_c_stops_every_component(pipeline: Pipeline) -> None:
    pipeline.process.send_signal(signal.SIGINT)
    assert pipeline.process.wait(60) == 0
    assert not any(port_is_open("127.0.0.1", port) for port in pipeline.ports)
    assert "Traceback" not in pipeline.log.read_text()
