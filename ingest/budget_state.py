"""Budget state: one ledger partition's count for one budget and period.

The ledger counts each budget per input partition (an organisation-wide budget sees events from
every partition), so its total for a period is the sum of its partials. Partials go on the
compacted budget-state topic keyed `budget_id|partition`: the latest record per key is all a
reader (the relay's hard gate, the budgets API) needs, and a new period replaces the old one.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from ingest.usage_event import Money


class BudgetState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    budget_id: str
    partition: int
    period_start: AwareDatetime
    period_end: AwareDatetime
    spend_usd: Money
    tokens: int
    requests: int
    events: int
    """Events counted in this partial; it only grows within a period."""
    counted: tuple[str, ...] = ()
    """Event ids counted since this partial's previous state (hard budgets only): the relay
    releases a call's reservation once the ledger has counted its event."""
    updated_at: AwareDatetime

    def key(self) -> bytes:
        return f"{self.budget_id}|{self.partition}".encode()

    def to_wire(self) -> bytes:
        return self.model_dump_json().encode()

    def measure(self, name: str) -> Decimal:
        if name == "usd":
            return self.spend_usd
        return Decimal(self.tokens if name == "tokens" else self.requests)


class BudgetUsage(BaseModel):
    """A budget's total for one period: the sum of its partials."""

    model_config = ConfigDict(frozen=True)

    period_start: datetime
    period_end: datetime
    spend_usd: Decimal = Decimal(0)
    tokens: int = 0
    requests: int = 0

    @classmethod
    def total(cls, partials: Iterable[BudgetState], start: datetime, end: datetime) -> BudgetUsage:
        current = [p for p in partials if p.period_start == start]
        return cls(
            period_start=start,
            period_end=end,
            spend_usd=sum((p.spend_usd for p in current), Decimal(0)),
            tokens=sum(p.tokens for p in current),
            requests=sum(p.requests for p in current),
        )

    def measure(self, name: str) -> Decimal:
        if name == "usd":
            return self.spend_usd
        return Decimal(self.tokens if name == "tokens" else self.requests)


class BudgetPartials:
    """The latest partial per (budget, partition), as read from the budget-state topic, and the
    totals they make. A record older than the one held (earlier period, or fewer events) is
    ignored, so reading the topic twice or out of order changes nothing."""

    def __init__(self) -> None:
        self._latest: dict[str, dict[int, BudgetState]] = {}

    def apply(self, state: BudgetState) -> None:
        partials = self._latest.setdefault(state.budget_id, {})
        current = partials.get(state.partition)
        if current is None or (state.period_start, state.events) >= (
            current.period_start,
            current.events,
        ):
            partials[state.partition] = state

    def usage(self, budget_id: str, start: datetime, end: datetime) -> BudgetUsage:
        return BudgetUsage.total(self._latest.get(budget_id, {}).values(), start, end)
