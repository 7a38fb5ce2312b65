"""Budgets at run time, on the whole pipeline: the budgets API, a hard limit under 50 concurrent
calls from the official SDK, and the alert lifecycle up to RECOVERED."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import FINANCE, Pipeline, poll, running_pipeline

pytestmark = pytest.mark.slow

LIMIT = Decimal("0.001")
# Each burst call answers exactly BURST_OUTPUT tokens (a simulator directive), so the 50 calls cost
# about $0.00166 at gpt-4o-mini's prices: over the limit even if they do not overlap at all (then
# the ledger's count, not the reservations, refuses the later ones).
BURST_OUTPUT = 50
ANSWER = f"[[sim:completion_tokens={BURST_OUTPUT}]]"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    budgets = [{"tenant": "acme", "period": "month", "limit_usd": "1000"}]
    with running_pipeline(tmp_path_factory.mktemp("budgets"), budgets) as pipeline:
        yield pipeline


def test_budgets_are_listed_created_changed_and_deleted(pipeline: Pipeline) -> None:
    api = f"{pipeline.api}/api/budgets"
    listed = pipeline.http.get(api).json()["budgets"]
    assert [b["scope"] for b in listed] == [{"tenant": "acme"}]
    assert listed[0]["current_period"]["measures"]["usd"]["limit"] == "1000"

    body = {
        "scope": {"tenant": "globex", "feature": "search"},
        "period": "week",
        "timezone": "Europe/Berlin",
        "limit_usd": "2.50",
        "thresholds": [0.5, 0.8, 1.0],
    }
    created = pipeline.http.post(api, json=body)
    assert created.status_code == 201, created.text
    budget = created.json()
    assert budget["id"] and budget["limit_usd"] == "2.50" and budget["hard"] is False
    assert budget["current_period"]["start"].endswith("+00:00")

    changed = pipeline.http.put(f"{api}/{budget['id']}", json={**body, "hard": True}).json()
    assert changed["hard"] is True and changed["id"] == budget["id"]
    assert pipeline.http.get(f"{api}/{budget['id']}").json()["hard"] is True

    bad = pipeline.http.post(api, json={**body, "period": "fortnight"})
    assert bad.status_code == 422 and "period" in bad.json()["detail"]
    assert pipeline.http.post(api, json={**body, "id": budget["id"]}).status_code == 409
    assert pipeline.http.delete(f"{api}/{budget['id']}").status_code == 204
    assert pipeline.http.get(f"{api}/{budget['id']}").status_code == 404
    assert pipeline.http.delete(f"{api}/{budget['id']}").status_code == 404


async def burst(pipeline: Pipeline, calls: int) -> list[Any]:
    sdk = openai.AsyncOpenAI(
        base_url=f"{pipeline.relay}/v1", api_key="sk-globex-demo", max_retries=0
    )

    async def one(i: int) -> Any:
        try:
            return await sdk.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"Summarise ticket {i}. {ANSWER}"}],
                max_tokens=BURST_OUTPUT,
                extra_headers={"x-feature": "burst", "x-prompt-version": "burst-v1"},
            )
        except openai.RateLimitError as exc:
            return exc

    try:
        return await asyncio.gather(*(one(i) for i in range(calls)))
    finally:
        await sdk.close()


def used(url: str) -> Decimal:
    body = httpx.get(url, headers=FINANCE).json()
    return Decimal(body["current_period"]["measures"]["usd"]["used"])


def wait_for_metric(url: str, line: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while line not in httpx.get(url).text:
        assert time.monotonic() < deadline, f"{url} never showed {line!r}"
        time.sleep(0.2)


def test_a_hard_limit_holds_under_50_concurrent_calls(pipeline: Pipeline) -> None:
    api = f"{pipeline.api}/api/budgets"
    # The relay follows the budgets topic in order: once it is back to the fixture's one budget
    # (the previous test's budget deleted), a count of two below means it knows the new one.
    wait_for_metric(f"{pipeline.relay}/metrics", "tokenops_relay_budgets 1.0")
    budget = pipeline.http.post(
        api,
        json={
            "scope": {"tenant": "globex", "feature": "burst"},
            "period": "day",
            "limit_usd": str(LIMIT),
            "thresholds": [0.1, 1.0],
            "hard": True,
        },
    ).json()
    # A budget counts the calls the ledger sees once it knows the budget: wait until both the
    # relay (its gate) and the ledger (a first call counted) have it.
    wait_for_metric(f"{pipeline.relay}/metrics", "tokenops_relay_budgets 2.0")
    sdk = openai.OpenAI(base_url=f"{pipeline.relay}/v1", api_key="sk-globex-demo", max_retries=0)
    probes = 0
    while used(f"{api}/{budget['id']}") == 0:
        assert probes < 60, "the ledger never counted a call for the new budget"
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "probe"}],
            max_tokens=5,
            extra_headers={"x-feature": "burst", "x-prompt-version": "probe"},
        )
        probes += 1
        time.sleep(0.5)
    before = Decimal(-1)
    while (counted_now := used(f"{api}/{budget['id']}")) != before:
        before = counted_now  # until the ledger has counted every probe
        time.sleep(1.5)
    results = asyncio.run(burst(pipeline, 50))
    served = [r for r in results if not isinstance(r, openai.RateLimitError)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert served and refused, f"{len(served)} served, {len(refused)} refused"
    assert {r.code for r in refused} == {"budget_exceeded"}
    assert all("x-should-retry" in r.response.headers for r in refused)

    # The ledger counts every served call once; what they cost stays within the limit.
    counted = poll(
        f"{pipeline.api}/api/costs?group_by=prompt_version&tenant=globex",
        lambda b: any(
            r["prompt_version"] == "burst-v1" and r["requests"] == len(served) for r in b["rows"]
        ),
    )
    row = next(r for r in counted["rows"] if r["prompt_version"] == "burst-v1")
    burst_cost = Decimal(row["cost_usd"])
    view = poll(
        f"{api}/{budget['id']}",
        lambda b: Decimal(b["current_period"]["measures"]["usd"]["used"]) == before + burst_cost,
    )
    assert Decimal(view["current_period"]["measures"]["usd"]["used"]) <= LIMIT

    # Once over half the limit the budget warned, once; raising the limit recovers it.
    alerts = poll(
        f"{pipeline.api}/api/alerts?tenant=globex&kind=budget",
        lambda b: any(a["budget_id"] == budget["id"] for a in b["alerts"]),
    )["alerts"]
    mine = [a for a in alerts if a["budget_id"] == budget["id"]]
    assert [a["state"] for a in mine] == ["WARN"]
    raised = {k: v for k, v in budget.items() if k not in ("id", "current_period")}
    pipeline.http.put(
        f"{api}/{budget['id']}", json={**raised, "limit_usd": "100"}
    ).raise_for_status()
    recovered = poll(
        f"{pipeline.api}/api/alerts?tenant=globex&kind=budget",
        lambda b: any(
            a["budget_id"] == budget["id"] and a["state"] == "RECOVERED" for a in b["alerts"]
        ),
        timeout_s=60,
    )
    assert sum(a["state"] == "RECOVERED" for a in recovered["alerts"]) == 1
    assert sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "again"}],
        max_tokens=10,
        extra_headers={"x-feature": "burst"},
    ).usage
