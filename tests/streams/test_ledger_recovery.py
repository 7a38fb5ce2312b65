"""The streams worker on the real broker: every event counted exactly once although each is
published twice and the worker is killed with SIGKILL mid-stream and restarted; undecodable,
wrong-version, incomplete and self-contradicting records go to the dead-letter topic."""

from __future__ import annotations

import json
import random
import signal
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from kafka import KafkaProducer

from ingest.budget_state import BudgetState
from ingest.pricing import Pricer
from ingest.topics import BUDGET_STATE, DEAD_LETTERS, USAGE_EVENTS
from ingest.usage_event import TokenCounts, UsageEvent
from streams.budgets import Budget
from tests.support import Service, end_offsets_by_partition, read_topic, usage_event

pytestmark = pytest.mark.slow

EVENTS = 3000


def ledger_state(bootstrap: str, budget_id: str) -> tuple[int, Decimal]:
    """(events, spend) the ledger has published for the budget, summed over partitions."""
    latest: dict[int, BudgetState] = {}
    for value in read_topic(bootstrap, BUDGET_STATE):
        state = BudgetState.model_validate_json(value)
        if state.budget_id == budget_id:
            current = latest.get(state.partition)
            if current is None or state.events >= current.events:
                latest[state.partition] = state
    return (
        sum(s.events for s in latest.values()),
        sum((s.spend_usd for s in latest.values()), Decimal(0)),
    )


def wait_for(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def publish(bootstrap: str, events: list[UsageEvent]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for event in events:
            producer.send(USAGE_EVENTS, key=event.kafka_key(), value=event.to_wire())
        producer.flush(30)
    finally:
        producer.close()


def publish_raw(bootstrap: str, tenant: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for value in values:
            producer.send(USAGE_EVENTS, key=tenant.encode(), value=value)
        producer.flush(30)
    finally:
        producer.close()


def test_duplicates_and_a_killed_worker_count_each_event_once(
    broker: str, tmp_path: Path, services: list[Service]
) -> None:
    tenant = f"dup-{uuid.uuid4().hex[:8]}"
    budget = Budget.model_validate(
        {"tenant": tenant, "period": "month", "limit_usd": "1000000", "hard": True}
    )
    config = tmp_path / "config"
    config.mkdir()
    (config / "budgets.yaml").write_text(
        yaml.safe_dump({"budgets": [json.loads(budget.to_wire())]})
    )
    env = {
        "TOKENOPS_KAFKA_BOOTSTRAP": broker,
        "TOKENOPS_CONFIG_DIR": str(config),
        "TOKENOPS_DATA_DIR": str(tmp_path / "data"),
        "TOKENOPS_STREAMS_APP_ID": f"streams-{tenant}",
    }
    rng = random.Random(5)
    now = datetime.now(UTC)
    events = [
        usage_event(
            TokenCounts(
                input_uncached=rng.randint(1, 5000),
                cache_read=rng.choice([0, 1024]),
                output=rng.randint(0, 900),
            ),
            tenant=tenant,
            event_time=now,
            requested_model=model,
            served_model=model,
            provider_model=model,
        )
        for model in rng.choices(["gpt-4o-mini", "gpt-4o", "gpt-4.1"], k=EVENTS)
    ]
    pricer = Pricer()
    expected = sum((pricer.price_event(e).cost_usd or Decimal(0) for e in events), Decimal(0))
    bad_from = end_offsets_by_partition(broker, DEAD_LETTERS)

    bad = [
        b"\xff\xfe not json",
        usage_event(tenant=tenant).to_wire().replace(b'"schema_version":1', b'"schema_version":9'),
        b'{"schema_version": 1, "event_id": "e-1", "tenant": "%s"}' % tenant.encode(),
        usage_event(tenant=tenant, usage_error="completion_tokens is negative").to_wire(),
    ]
    publish_raw(broker, tenant, bad)
    publish(broker, events)
    worker = Service(["streams"], env, tmp_path / "streams-1.log")
    services.append(worker)
    wait_for(
        lambda: ledger_state(broker, budget.id)[0] > 0,
        180,
        "the worker never counted anything",
    )
    publish(broker, events)  # every event a second time, while the worker is counting
    worker.stop(signal.SIGKILL)
    assert worker.process.returncode == -signal.SIGKILL
    counted_at_kill = ledger_state(broker, budget.id)[0]

    restarted = Service(["streams"], env, tmp_path / "streams-2.log")
    services.append(restarted)
    publish(broker, events[: EVENTS // 3])  # and a third time, after the restart
    # The worker reads the shared usage topic from its start (every earlier test's events too),
    # so on a slow machine in a full run this takes far longer than the 30 s it takes alone.
    wait_for(
        lambda: ledger_state(broker, budget.id)[0] >= EVENTS,
        300,
        f"the ledger did not reach {EVENTS} events (had {counted_at_kill} at the kill)",
    )
    time.sleep(3)  # anything still in flight would show up as an over-count
    assert ledger_state(broker, budget.id) == (EVENTS, expected)
    # The bad records went to the dead-letter topic with their reasons, the agent kept going.
    letters = [json.loads(v) for v in read_topic(broker, DEAD_LETTERS, since=bad_from)]
    assert {letter["payload"] for letter in letters} == {
        b.decode("utf-8", errors="replace") for b in bad
    }
    reasons = {letter["reason"] for letter in letters}
    assert any("schema_version" in r for r in reasons)
    assert any("usage invariant: completion_tokens is negative" in r for r in reasons)
    assert all(letter["source_topic"] == USAGE_EVENTS for letter in letters)
