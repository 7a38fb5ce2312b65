"""Prices added while calls exist: the running pipeline re-prices history through correction
rows (`tokenops prices add`), totals change only through them, and the original rows stay."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import openai
import pytest

from tests.e2e.conftest import Pipeline, poll, running_pipeline

pytestmark = pytest.mark.slow

CNY_FX = Decimal("0.1405")  # the demo book's CNY rate from 2026-01-01


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(tmp_path_factory.mktemp("corrections"), budgets=[]) as pipeline:
        yield pipeline


def costs_by_model(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    body = pipeline.http.get(f"{pipeline.api}/api/costs?group_by=tenant,model&tenant=acme").json()
    return {row["model"]: row for row in body["rows"]}


def test_added_prices_reprice_history_only_through_corrections(pipeline: Pipeline) -> None:
    sdk = openai.OpenAI(base_url=f"{pipeline.relay}/v1", api_key="sk-acme-demo")
    usages: dict[str, list[Any]] = {"qwen-turbo": [], "gpt-4o-mini": []}
    for model in ("qwen-turbo", "gpt-4o-mini"):
        for prompt in ("draft the release notes", "summarise the incident report"):
            answer = sdk.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}]
            )
            usages[model].append(answer.usage)

    # 1. qwen-turbo has no price: counted, visible as unpriced, never $0 silently; one alert.
    poll(
        f"{pipeline.api}/api/costs?group_by=model&tenant=acme",
        lambda b: sum(r["requests"] for r in b["rows"]) == 4,
    )
    qwen = costs_by_model(pipeline)["qwen-turbo"]
    assert (qwen["requests"], qwen["unpriced_requests"], qwen["cost_usd"]) == (2, 2, "0")
    alerts = poll(
        f"{pipeline.api}/api/alerts?kind=unpriced",
        lambda b: len(b["alerts"]) >= 1,
        timeout_s=60,
    )["alerts"]
    assert [a["scope"] for a in alerts] == [{"provider": "alibaba", "model": "qwen-turbo"}]
    list_price = Decimal(costs_by_model(pipeline)["gpt-4o-mini"]["cost_usd"])

    # 2. Finance adds the missing price (in CNY) and a back-dated contract price for acme.
    added = pipeline.tokenops(
        "prices", "add", "--provider", "alibaba", "--model", "qwen-turbo",
        "--currency", "CNY", "--input", "0.3", "--output", "0.6",
        "--effective-from", "2026-01-01", "--source", "Model Studio list price",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    contract = pipeline.tokenops(
        "prices", "add", "--provider", "openai", "--model", "gpt-4o-mini", "--tenant", "acme",
        "--input", "0.1", "--output", "0.4",
        "--effective-from", "2026-01-01", "--source", "acme agreement, amendment 2",
    )  # fmt: skip
    assert contract.returncode == 0, contract.stderr

    qwen_cny = sum(
        (Decimal(u.prompt_tokens) * Decimal("0.3") + Decimal(u.completion_tokens) * Decimal("0.6"))
        / 1_000_000
        for u in usages["qwen-turbo"]
    )
    contract_usd = sum(
        (Decimal(u.prompt_tokens) * Decimal("0.1") + Decimal(u.completion_tokens) * Decimal("0.4"))
        / 1_000_000
        for u in usages["gpt-4o-mini"]
    )
    expected = {"qwen-turbo": qwen_cny * CNY_FX, "gpt-4o-mini": contract_usd}
    body = poll(
        f"{pipeline.api}/api/costs?group_by=model&tenant=acme",
        lambda b: {r["model"]: Decimal(r["cost_usd"]) for r in b["rows"]} == expected,
        timeout_s=60,
    )
    assert all(r["unpriced_requests"] == 0 for r in body["rows"])
    assert contract_usd < list_price

    corrections = pipeline.http.get(f"{pipeline.api}/api/corrections?tenant=acme").json()[
        "corrections"
    ]
    assert len(corrections) == 4
    assert {c["price_version_id"] for c in corrections} == {
        "book:alibaba:qwen-turbo:2026-01-01:*:*",
        "book:openai:gpt-4o-mini:2026-01-01:acme:*",
    }

    # 3. After a clean stop, the warehouse file shows the original rows exactly as loaded.
    pipeline.process.send_signal(signal.SIGINT)
    assert pipeline.process.wait(60) == 0
    database = Path(pipeline.env["TOKENOPS_DATA_DIR"]) / "warehouse.duckdb"
    with duckdb.connect(str(database), read_only=True) as con:
        rows = con.execute(
            "SELECT provider_model, price_status, cost_usd FROM calls ORDER BY provider_model"
        ).fetchall()
        corrected = con.execute(
            "SELECT sum(delta_usd) FROM corrections JOIN calls USING (event_id)"
            " WHERE provider_model = 'gpt-4o-mini'"
        ).fetchone()
    assert [(m, s) for m, s, _ in rows] == [
        ("gpt-4o-mini", "priced"),
        ("gpt-4o-mini", "priced"),
        ("qwen-turbo", "unpriced"),
        ("qwen-turbo", "unpriced"),
    ]
    assert [c for m, _, c in rows if m == "qwen-turbo"] == [None, None]
    assert sum(c for m, _, c in rows if m == "gpt-4o-mini") == list_price
    assert corrected is not None and corrected[0] == contract_usd - list_price
