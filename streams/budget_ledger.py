"""The budget ledger: what each budget has used this period, counted once per event.

Pure logic over one mapping so the faust agent and the tests share it. The table maps
`p|budget_id|period_start|partition` to that partition's count and `e|event_id` to the marks of
an event already counted. In the worker it is a faust table whose changelog is written to the
partition of the event being processed, so a restarted or rebalanced worker resumes with the same
counts and still refuses an event it counted before (a duplicate event has the same key, tenant,
so it lands on the same partition).

A budget's total is the sum of its partials over every partition. Each (budget, period, measure,
threshold) alerts once when the total crosses it: WARN below 100 %, BREACH at or above. When a
period ends, or a raised limit leaves no threshold crossed, the budget alerts RECOVERED once.
Alert ids are deterministic, so a redelivered or replayed crossing is the same alert.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from ingest.alert_event import AlertEvent, AlertState, alert_id
from ingest.budget_state import BudgetState
from ingest.usage_event import UsageEvent
from streams.budgets import Budget, BudgetBook

MEASURES = ("usd", "tokens", "requests")
Crossing = tuple[str, Decimal]
"""(measure, threshold)"""


@dataclass
class Partial:
    spend_usd: Decimal = Decimal(0)
    tokens: int = 0
    requests: int = 0
    events: int = 0

    def encode(self) -> str:
        return f"{self.spend_usd}|{self.tokens}|{self.requests}|{self.events}"

    @classmethod
    def decode(cls, text: str | None) -> Partial:
        if not text:
            return cls()
        spend, tokens, requests, events = text.split("|")
        return cls(Decimal(spend), int(tokens), int(requests), int(events))

    def add(self, spend_usd: Decimal, tokens: int) -> None:
        self.spend_usd += spend_usd
        self.tokens += tokens
        self.requests += 1
        self.events += 1

    def measure(self, name: str) -> Decimal:
        if name == "usd":
            return self.spend_usd
        return Decimal(self.tokens if name == "tokens" else self.requests)


def partial_key(budget_id: str, start: datetime, partition: int) -> str:
    return f"p|{budget_id}|{start.isoformat()}|{partition}"


def marks_key(partition: int, batch_id: str) -> str:
    return f"m|{partition}|{batch_id}"


Marks = dict[str, int]
"""budget id -> the event count of its partial once the event was in it."""


def _encode_marks(batch: dict[str, Marks]) -> str:
    return "\n".join(
        f"{event_id} " + ",".join(f"{b}={n}" for b, n in marks.items())
        for event_id, marks in batch.items()
    )


def _decode_marks(text: str) -> dict[str, Marks]:
    batch = {}
    for line in text.splitlines():
        event_id, _, items = line.partition(" ")
        batch[event_id] = {b: int(n) for b, n in (i.rsplit("=", 1) for i in items.split(","))}
    return batch


def event_tokens(event: UsageEvent) -> int:
    return event.tokens.input_total + event.tokens.output_total


def event_usd(event: UsageEvent) -> Decimal:
    """What an event adds to USD limits: its priced cost; unpriced calls count tokens only."""
    if event.price_status == "priced" and event.cost_usd is not None:
        return event.cost_usd
    return Decimal(0)


@dataclass
class LedgerStep:
    alerts: list[AlertEvent] = field(default_factory=list)
    states: list[BudgetState] = field(default_factory=list)


class BudgetLedger:
    def __init__(self, book: BudgetBook, partitions: int) -> None:
        self.book = book
        self.partitions = partitions
        self._windows: dict[str, tuple[Budget, datetime, datetime]] = {}
        self._crossed: dict[tuple[str, datetime], set[Crossing]] = {}
        """Crossings alerted per (budget, period start), for the RECOVERED transition."""
        self._marks: dict[int, dict[str, Marks]] = {}
        """Per partition, the marks of every event counted, indexed from the table's records."""

    def forget_marks(self) -> None:
        """Re-read the marks from the table (after a rebalance may have changed it)."""
        self._marks.clear()

    def _marks_of(self, partition: int, table: MutableMapping[str, str]) -> dict[str, Marks]:
        marks = self._marks.get(partition)
        if marks is None:
            marks = {}
            prefix = f"m|{partition}|"
            for key in list(table.keys()):
                if key.startswith(prefix):
                    marks.update(_decode_marks(table[key]))
            self._marks[partition] = marks
        return marks

    def apply(
        self,
        events: Iterable[UsageEvent],
        partition: int,
        table: MutableMapping[str, str],
        batch_id: str,
        now: datetime | None = None,
    ) -> LedgerStep:
        """Count a batch of priced events from one partition; each partial it moved is written
        back once and returned as a state, with the alerts for thresholds the batch crossed.

        Counts and seen marks live in one table, so one changelog partition orders them: a batch
        writes one record with its events' marks (key `m|partition|batch_id`, batch_id unique per
        batch, e.g. its first offset) first and the partials last. A mark records the partial's
        event count that includes the event; after a crash that kept the marks but lost the
        partial's write, the restored partial's count is lower than the mark, and the event
        counts again.
        """
        now = now or datetime.now(UTC)
        step = LedgerStep()
        touched: dict[tuple[str, datetime], Partial] = {}
        moved: dict[str, Budget] = {}
        totals: dict[tuple[str, datetime], Partial] = {}
        counted: dict[tuple[str, datetime], list[str]] = {}
        known = self._marks_of(partition, table)
        batch: dict[str, Marks] = {}
        for event in events:
            budgets = self.book.matching(event)
            if not budgets:
                continue
            marks = dict(known.get(event.event_id, ()))
            usd, tokens = event_usd(event), event_tokens(event)
            for budget in budgets:
                start, _ = self._window(budget, event.event_time)
                key = (budget.id, start)
                if key not in touched:
                    touched[key] = Partial.decode(table.get(partial_key(*key, partition)))
                    totals[key] = self.total(budget.id, start, table)
                    counted[key] = []
                    moved[budget.id] = budget
                    self._seed_crossings(budget, start, totals[key])
                mark = marks.get(budget.id)
                if mark is not None and mark <= touched[key].events:
                    continue  # counted already, in this partial as it stands
                before = Partial(**totals[key].__dict__)
                touched[key].add(usd, tokens)
                totals[key].add(usd, tokens)
                marks[budget.id] = touched[key].events
                step.alerts += self._new_crossings(budget, start, before, totals[key], event, now)
                if budget.hard:
                    counted[key].append(event.event_id)
            known[event.event_id] = batch[event.event_id] = marks
        if batch:
            table[marks_key(partition, batch_id)] = _encode_marks(batch)
        for (budget_id, start), part in touched.items():
            table[partial_key(budget_id, start, partition)] = part.encode()
            budget = moved[budget_id]
            step.states.append(
                BudgetState(
                    budget_id=budget_id,
                    partition=partition,
                    period_start=start,
                    period_end=self._window(budget, start)[1],
                    spend_usd=part.spend_usd,
                    tokens=part.tokens,
                    requests=part.requests,
                    events=part.events,
                    counted=tuple(counted[(budget_id, start)]),
                    updated_at=now,
                )
            )
        return step

    def total(self, budget_id: str, start: datetime, table: MutableMapping[str, str]) -> Partial:
        total = Partial()
        for partition in range(self.partitions):
            part = Partial.decode(table.get(partial_key(budget_id, start, partition)))
            total.spend_usd += part.spend_usd
            total.tokens += part.tokens
            total.requests += part.requests
            total.events += part.events
        return total

    def review(self, table: MutableMapping[str, str], now: datetime) -> list[AlertEvent]:
        """RECOVERED for every alerted budget whose period ended, whose limits no longer
        crossed after a change, or that was deleted. Run periodically and after changes."""
        alerts = []
        for (budget_id, start), crossed in list(self._crossed.items()):
            budget = self.book.get(budget_id)
            if budget is None:
                del self._crossed[(budget_id, start)]
                continue
            if budget.window(now)[0] != start:
                reason = f"its {budget.period} period ended; the budget starts over"
            else:
                total = self.total(budget_id, start, table)
                still = self._crossings(budget, total)
                self._crossed[(budget_id, start)] = still
                if still or not crossed:
                    continue
                reason = "after the budget changed, no threshold is crossed any more"
            del self._crossed[(budget_id, start)]
            if crossed:
                top = max(threshold for _, threshold in crossed)
                alerts.append(self._alert(budget, start, "RECOVERED", None, top, None, now, reason))
        return alerts

    def _window(self, budget: Budget, at: datetime) -> tuple[datetime, datetime]:
        cached = self._windows.get(budget.id)
        if cached is not None and cached[0] is budget and cached[1] <= at < cached[2]:
            return cached[1], cached[2]
        start, end = budget.window(at)
        if start <= datetime.now(UTC) < end:
            self._windows[budget.id] = (budget, start, end)  # the current period is the usual one
        return start, end

    @staticmethod
    def _crossings(budget: Budget, total: Partial) -> set[Crossing]:
        return {
            (measure, threshold)
            for measure, limit in budget.limits()
            for threshold in budget.thresholds
            if total.measure(measure) >= limit * threshold
        }

    def _seed_crossings(self, budget: Budget, start: datetime, total: Partial) -> None:
        """After a restart, thresholds crossed before it are known without alerting again."""
        if (budget.id, start) not in self._crossed:
            self._crossed[(budget.id, start)] = self._crossings(budget, total)

    def _new_crossings(
        self,
        budget: Budget,
        start: datetime,
        before: Partial,
        after: Partial,
        event: UsageEvent,
        now: datetime,
    ) -> list[AlertEvent]:
        alerts = []
        for measure, limit in budget.limits():
            was, used = before.measure(measure), after.measure(measure)
            for threshold in budget.thresholds:
                if was < limit * threshold <= used:
                    self._crossed.setdefault((budget.id, start), set()).add((measure, threshold))
                    state: AlertState = "BREACH" if threshold >= 1 else "WARN"
                    alerts.append(
                        self._alert(budget, start, state, measure, threshold, after, now, None)
                    )
                    alerts[-1] = alerts[-1].model_copy(update={"trigger_event_id": event.event_id})
        return alerts

    def _alert(
        self,
        budget: Budget,
        start: datetime,
        state: AlertState,
        measure: str | None,
        threshold: Decimal,
        total: Partial | None,
        now: datetime,
        reason: str | None,
    ) -> AlertEvent:
        who = budget.scope.label()
        if state == "RECOVERED":
            limits = tuple(budget.limits())
            ident = alert_id("budget", budget.id, start.isoformat(), "recovered", threshold, limits)
            message = f"{who}: {budget.period} budget recovered: {reason}"
        else:
            assert measure is not None and total is not None
            ident = alert_id("budget", budget.id, start.isoformat(), measure, threshold)
            limit = dict(budget.limits())[measure]
            used = total.measure(measure)
            shown = f"${used}" if measure == "usd" else f"{used} {measure}"
            cap = f"${limit}" if measure == "usd" else f"{limit} {measure}"
            message = (
                f"{who} used {shown} of its {budget.period} budget of {cap} "
                f"({threshold:.0%} threshold{', hard limit' if budget.hard else ''})"
            )
        return AlertEvent(
            alert_id=ident,
            kind="budget",
            tenant=budget.scope.tenant or "*",
            scope=budget.scope.model_dump(exclude_none=True),
            state=state,
            period=budget.period,
            period_start=start,
            threshold=threshold,
            limit_usd=budget.limit_usd,
            spend_usd=total.spend_usd if total is not None else None,
            created_at=now,
            message=message,
            budget_id=budget.id,
        )
