"""The relay's hard gate: reservations against the ledger's counts, settled by events, released
when the ledger counts them (the broker-fed paths are exercised end to end in tests/e2e)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from ingest.budget_state import BudgetState
from ingest.pricing import Pricer
from ingest.usage_event import TokenCounts
from relay.budget_gate import BudgetGate, CallScope, Refusal, Reservation
from relay.model_catalog import Target
from streams.budgets import Budget
from tests.support import usage_event

NOW = datetime(2026, 11, 3, 12, tzinfo=UTC)
MINI = (Target("openai", "gpt-4o-mini", "http://127.0.0.1:1", None, True),)
ACME = CallScope("acme", "acme-demo", "search", "gpt-4o-mini", "gpt-4o-mini")
BODY = {"model": "gpt-4o-mini", "max_tokens": 1000}
# gpt-4o-mini: $0.15/M input, $0.60/M output; cache writes cost as input. 1000 bytes of body and
# 1000 output tokens estimate $0.00015 + $0.0006.
ESTIMATE = Decimal("0.00075")


def gate(limit: str = "0.003", **fields: object) -> tuple[BudgetGate, Budget]:
    budget = Budget.model_validate(
        {"tenant": "acme", "period": "day", "limit_usd": limit, "hard": True, **fields}
    )
    return BudgetGate("127.0.0.1:1", [budget], Pricer, hold_ttl_s=60), budget


def state(budget: Budget, spend: str, events: int, *counted: str, partition: int = 0) -> bytes:
    start, end = budget.window(NOW)
    return BudgetState(
        budget_id=budget.id,
        partition=partition,
        period_start=start,
        period_end=end,
        spend_usd=Decimal(spend),
        tokens=0,
        requests=events,
        events=events,
        counted=counted,
        updated_at=NOW,
    ).to_wire()


def reserve(g: BudgetGate, scope: CallScope = ACME) -> Reservation | Refusal | None:
    return g.reserve(scope, MINI, BODY, 1000, now=NOW)


def test_calls_outside_every_hard_budget_reserve_nothing() -> None:
    g, _ = gate()
    assert reserve(g, CallScope("globex", None, None, "gpt-4o-mini", "gpt-4o-mini")) is None
    soft = Budget.model_validate({"tenant": "acme", "period": "day", "limit_usd": "0.000001"})
    assert BudgetGate("127.0.0.1:1", [soft], Pricer).reserve(ACME, MINI, BODY, 1000) is None


def test_concurrent_calls_are_admitted_only_while_their_estimates_fit() -> None:
    g, budget = gate("0.003")
    admitted = [reserve(g) for _ in range(6)]
    assert [isinstance(r, Reservation) for r in admitted] == [True] * 4 + [False] * 2
    first = admitted[0]
    assert isinstance(first, Reservation) and first.estimate_usd == ESTIMATE
    refusal = admitted[-1]
    assert isinstance(refusal, Refusal) and refusal.used == 4 * ESTIMATE
    assert "$0.003" in refusal.message() and refusal.period_end == budget.window(NOW)[1]


def test_a_settled_call_holds_its_actual_cost_until_the_ledger_counts_it() -> None:
    g, budget = gate("0.003")
    reservation = reserve(g)
    assert isinstance(reservation, Reservation)
    event = usage_event(TokenCounts(input_uncached=1000, output=100), event_time=NOW)
    g.settle(reservation, event)
    g.finish(reservation)
    assert g.held(budget.id) == 1  # the event's actual cost, $0.00021
    g.apply_state(state(budget, "0.00021", 1, event.event_id))
    assert g.held(budget.id) == 0
    assert g.usage(budget, NOW).spend_usd == Decimal("0.00021")
    # 0.00021 used: three more estimates fit (0.00246), a fourth would not (0.00321)
    assert [isinstance(reserve(g), Reservation) for _ in range(4)] == [True, True, True, False]


def test_the_ledger_counting_before_the_relay_settles_is_not_held_twice() -> None:
    g, budget = gate()
    reservation = reserve(g)
    assert isinstance(reservation, Reservation)
    event = usage_event(TokenCounts(input_uncached=1000), event_time=NOW)
    g.apply_state(state(budget, "0.00015", 1, event.event_id))
    g.settle(reservation, event)
    g.finish(reservation)
    assert g.held(budget.id) == 0


def test_partials_sum_and_an_older_state_never_replaces_a_newer_one() -> None:
    g, budget = gate("0.003")
    g.apply_state(state(budget, "0.001", 5, partition=0))
    g.apply_state(state(budget, "0.0012", 7, partition=1))
    g.apply_state(state(budget, "0.0005", 2, partition=1))  # late and older
    assert g.usage(budget, NOW).spend_usd == Decimal("0.0022")
    assert isinstance(reserve(g), Reservation)  # 0.0022 + 0.00075 fits 0.003
    assert isinstance(reserve(g), Refusal)
    g.apply_state(b"not json")  # ignored, never raises


def test_a_new_period_opens_the_gate_without_any_message() -> None:
    g, budget = gate("0.001")
    g.apply_state(state(budget, "0.001", 3))
    assert isinstance(reserve(g), Refusal)
    tomorrow = datetime(2026, 11, 4, 0, 1, tzinfo=UTC)
    assert isinstance(g.reserve(ACME, MINI, BODY, 1000, now=tomorrow), Reservation)


def test_request_and_token_limits_reserve_too() -> None:
    g, _ = gate(limit_usd=None, limit_requests=2)
    assert [isinstance(reserve(g), Reservation) for _ in range(3)] == [True, True, False]
    g, _ = gate(limit_usd=None, limit_tokens=2500)
    refusal = [reserve(g) for _ in range(2)][-1]
    assert isinstance(refusal, Refusal) and refusal.measure == "tokens"


def test_run_time_budget_changes_apply_and_tombstones_delete() -> None:
    g, budget = gate("0.001")
    assert isinstance(reserve(g), Reservation)
    assert isinstance(reserve(g), Refusal)
    raised = budget.model_copy(update={"limit_usd": Decimal("1")})
    g.apply_budget(budget.id.encode(), raised.to_wire())
    assert isinstance(reserve(g), Reservation)
    g.apply_budget(budget.id.encode(), None)
    assert reserve(g) is None
    g.apply_budget(b"x", b"{not a budget")  # ignored, never raises


def test_an_orphaned_reservation_expires() -> None:
    budget = Budget.model_validate(
        {"tenant": "acme", "period": "day", "limit_usd": "0.001", "hard": True}
    )
    g = BudgetGate("127.0.0.1:1", [budget], Pricer, hold_ttl_s=0.0)
    assert isinstance(reserve(g), Reservation)
    assert isinstance(reserve(g), Reservation)  # the first hold expired at once
