"""The budget ledger: spend per (tenant, period), idempotent by event_id, with threshold alerts.

Pure logic over two mappings so the faust agent and the tests share it: `spend` maps a ledger key
to a decimal string, `seen` maps event ids already counted. In the worker both are faust tables
backed by changelog topics, so a restarted worker resumes with the same totals and still refuses
an event it counted before.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import UTC, datetime
from decimal import Decimal

from ingest.alert_event import AlertEvent, budget_alert_id
from ingest.budget_state import BudgetState
from ingest.usage_event import UsageEvent
from streams.budgets import PERIODS, Budget, period_start


def ledger_key(tenant: str, period: str, start: datetime) -> str:
    return f"{tenant}|{period}|{start.date().isoformat()}"


class BudgetLedger:
    def __init__(self, budgets: list[Budget]) -> None:
        self._budgets: dict[tuple[str, str], list[Budget]] = {}
        for budget in budgets:
            self._budgets.setdefault((budget.tenant, budget.period), []).append(budget)

    def apply(
        self,
        event: UsageEvent,
        spend: MutableMapping[str, str],
        seen: MutableMapping[str, bool],
        states: list[BudgetState] | None = None,
    ) -> list[AlertEvent]:
        """Count a priced event once; return the alerts for thresholds it crossed, and append
        the new state of every budget it moved to `states` (for the relay's hard gate)."""
        if event.price_status != "priced" or not event.cost_usd or seen.get(event.event_id):
            return []
        seen[event.event_id] = True
        alerts: list[AlertEvent] = []
        for period in PERIODS:
            start = period_start(event.event_time, period)
            key = ledger_key(event.tenant, period, start)
            before = Decimal(spend.get(key) or "0")
            after = before + event.cost_usd
            spend[key] = str(after)
            for budget in self._budgets.get((event.tenant, period), ()):
                alerts += self._crossed(budget, event, start, before, after)
                if states is not None:
                    states.append(
                        BudgetState(
                            tenant=budget.tenant,
                            period=budget.period,
                            period_start=start,
                            spend_usd=after,
                            limit_usd=budget.limit_usd,
                            hard=budget.hard,
                            blocked=budget.hard and after >= budget.limit_usd,
                            updated_at=datetime.now(UTC),
                        )
                    )
        return alerts

    @staticmethod
    def _crossed(
        budget: Budget, event: UsageEvent, start: datetime, before: Decimal, after: Decimal
    ) -> list[AlertEvent]:
        alerts = []
        for threshold in budget.thresholds:
            line = budget.limit_usd * threshold
            if before < line <= after:
                state = "BREACH" if threshold >= 1 else "WARN"
                alerts.append(
                    AlertEvent(
                        alert_id=budget_alert_id(budget.tenant, budget.period, start, threshold),
                        kind="budget",
                        tenant=budget.tenant,
                        scope={"tenant": budget.tenant},
                        state=state,
                        period=budget.period,
                        period_start=start,
                        threshold=threshold,
                        limit_usd=budget.limit_usd,
                        spend_usd=after,
                        created_at=datetime.now(UTC),
                        trigger_event_id=event.event_id,
                        message=(
                            f"{budget.tenant} spent ${after} of its {budget.period} budget "
                            f"${budget.limit_usd} ({threshold:.0%} threshold)"
                        ),
                    )
                )
        return alerts
