"""The budget ledger's arithmetic and idempotence, on plain mappings (the worker uses tables)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from ingest.usage_event import TokenCounts, UsageEvent, new_event_id
from streams.budget_ledger import BudgetLedger, ledger_key
from streams.budgets import Budget, period_start


def priced(cost: str, tenant: str = "acme", at: datetime | None = None) -> UsageEvent:
    return UsageEvent(
        event_id=new_event_id(),
        event_time=at or datetime(2026, 11, 3, 12, tzinfo=UTC),
        tenant=tenant,
        endpoint="chat.completions",
        requested_model="gpt-4o-mini",
        served_model="gpt-4o-mini",
        provider="openai",
        provider_model="gpt-4o-mini",
        tokens=TokenCounts(input_uncached=1),
        price_status="priced",
        cost_usd=Decimal(cost),
    )


BUDGET = Budget(
    tenant="acme", period="day", limit_usd=Decimal("1.00"), thresholds=(Decimal("0.5"), Decimal(1))
)


def test_each_threshold_alerts_once_when_crossed() -> None:
    ledger = BudgetLedger([BUDGET])
    spend: dict[str, str] = {}
    seen: dict[str, bool] = {}
    states = [
        [a.state for a in ledger.apply(priced(c), spend, seen)]
        for c in ("0.30", "0.19", "0.01", "0.49", "0.02", "5")
    ]
    assert states == [[], [], ["WARN"], [], ["BREACH"], []]
    day = period_start(datetime(2026, 11, 3, tzinfo=UTC), "day")
    assert Decimal(spend[ledger_key("acme", "day", day)]) == Decimal("6.01")


def test_a_redelivered_event_never_counts_twice() -> None:
    ledger = BudgetLedger([BUDGET])
    spend: dict[str, str] = {}
    seen: dict[str, bool] = {}
    event = priced("0.75")
    first = ledger.apply(event, spend, seen)
    again = ledger.apply(event, spend, seen)
    assert [a.state for a in first] == ["WARN"] and again == []
    month = period_start(event.event_time, "month")
    assert spend[ledger_key("acme", "month", month)] == "0.75"


def test_unpriced_events_and_other_tenants_do_not_move_the_budget() -> None:
    ledger = BudgetLedger([BUDGET])
    spend: dict[str, str] = {}
    seen: dict[str, bool] = {}
    unpriced = priced("0").model_copy(update={"price_status": "unpriced", "cost_usd": None})
    assert ledger.apply(unpriced, spend, seen) == []
    assert ledger.apply(priced("9", tenant="globex"), spend, seen) == []
    assert not any(key.startswith("acme|") for key in spend)


def test_alert_ids_are_stable_per_scope_period_and_threshold() -> None:
    a = BudgetLedger([BUDGET]).apply(priced("2"), {}, {})
    b = BudgetLedger([BUDGET]).apply(priced("2"), {}, {})
    assert [x.alert_id for x in a] == [x.alert_id for x in b]
    assert len({x.alert_id for x in a}) == 2


def test_periods_reset_on_calendar_boundaries() -> None:
    ledger = BudgetLedger([BUDGET])
    spend: dict[str, str] = {}
    seen: dict[str, bool] = {}
    ledger.apply(priced("0.9", at=datetime(2026, 11, 3, 23, 59, tzinfo=UTC)), spend, seen)
    alerts = ledger.apply(priced("0.9", at=datetime(2026, 11, 4, 0, 1, tzinfo=UTC)), spend, seen)
    assert [a.state for a in alerts] == ["WARN"]  # a new day: 0.9 of 1.00, not 1.8
    assert spend["acme|month|2026-11-01"] == "1.8"
