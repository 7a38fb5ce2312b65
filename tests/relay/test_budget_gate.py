"""The gate's cache: only a blocked state of the current period blocks."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from ingest.budget_state import BudgetState
from relay.budget_gate import BudgetGate


def state(period: str, start: datetime, blocked: bool, at: datetime) -> bytes:
    return BudgetState(
        tenant="acme",
        period=period,  # type: ignore[arg-type]
        period_start=start,
        spend_usd=Decimal("5"),
        limit_usd=Decimal("4"),
        hard=True,
        blocked=blocked,
        updated_at=at,
    ).to_wire()


def test_a_blocked_day_blocks_until_the_day_ends() -> None:
    gate = BudgetGate("127.0.0.1:1")
    nov3 = datetime(2026, 11, 3, tzinfo=UTC)
    gate.apply(state("day", nov3, True, nov3.replace(hour=9)))
    assert gate.blocked("acme", nov3.replace(hour=10)) is not None
    assert gate.blocked("globex", nov3.replace(hour=10)) is None
    assert gate.blocked("acme", datetime(2026, 11, 4, 0, 1, tzinfo=UTC)) is None


def test_older_states_never_overwrite_newer_ones() -> None:
    gate = BudgetGate("127.0.0.1:1")
    nov = datetime(2026, 11, 1, tzinfo=UTC)
    gate.apply(state("month", nov, True, nov.replace(day=20)))
    gate.apply(state("month", nov, False, nov.replace(day=2)))  # a late, older record
    assert gate.blocked("acme", nov.replace(day=21)) is not None
    gate.apply(b"not json")  # ignored, never raises
    assert gate.blocked("acme", nov.replace(day=21)) is not None
