"""The budget ledger: what each budget has used this period, counted once per event.

Pure logic over one mapping so the faust agent and the tests share it. The table maps
`p|budget_id|period_start|partition` to that partition's count and `m|partition|batch|ms` to the
marks of the events a batch counted. In the worker it is a faust table whose changelog is
written to the partition of the event being processed, so a restarted or rebalanced worker
resumes with the same counts and still refuses an event it counted before (a duplicate event has
the same key, tenant, so it lands on the same partition).

Marks are kept for a retention window (`mark_retention`, counted from the last time the event
was seen): an event redelivered or published again within it never counts twice; one that comes
back later counts again. Expired marks are deleted from the table (tombstones in its changelog),
so a worker's memory and its restore time stay bounded by the events of one window.

A budget's total is the sum of its partials over every partition. Each (budget, period, measure,
threshold) alerts once when the total crosses it: WARN below 100 %, BREACH at or above. When a
period ends, or a raised limit leaves no threshold crossed, the budget alerts RECOVERED once.
Alert ids are deterministic, so a redelivered or replayed crossing is the same alert.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ingest.alert_event import AlertEvent, AlertState, alert_id
from ingest.budget_state import BudgetState
from ingest.usage_event import UsageEvent
from streams.budgets import Budget, BudgetBook

MEASURES = ("usd", "tokens", "requests")
_NEVER = Decimal("Infinity")
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
        return self.measure_at(MEASURES.index(name))

    def measure_at(self, index: int) -> Decimal:
        """The measure at `index` in MEASURES (usd, tokens, requests)."""
        if index == 0:
            return self.spend_usd
        return Decimal(self.tokens if index == 1 else self.requests)


def partial_key(budget_id: str, start: datetime, partition: int) -> str:
    return f"p|{budget_id}|{start.isoformat()}|{partition}"


def marks_key(partition: int, batch_id: str, counted_ms: int) -> str:
    """One record per batch and time it was counted: a redelivered batch (same first offset)
    writes a record of its own, so expiring the older one never removes the newer."""
    return f"m|{partition}|{batch_id}|{counted_ms}"


Marks = dict[str, int]
"""budget id -> the event count of its partial once the event was in it."""

DEFAULT_MARK_RETENTION = timedelta(hours=6)
"""The worker's default (TOKENOPS_LEDGER_MARK_RETENTION_S)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def epoch_ms(at: datetime) -> int:
    """Milliseconds since the Unix epoch, as an exact integer."""
    return (at - _EPOCH) // _MS


def _encode_marks(batch: dict[str, Marks], counted_ms: int) -> str:
    lines = (
        f"{event_id} " + ",".join(f"{b}={n}" for b, n in marks.items())
        for event_id, marks in batch.items()
    )
    return "\n".join((f"@{counted_ms}", *lines))


def _decode_marks(text: str) -> tuple[int | None, dict[str, Marks]]:
    """(when the batch was counted, in epoch ms; its marks); records of earlier versions carry
    no time."""
    counted_ms = None
    batch = {}
    for line in text.splitlines():
        if line.startswith("@"):
            counted_ms = int(line[1:])
            continue
        event_id, _, items = line.partition(" ")
        batch[event_id] = {b: int(n) for b, n in (i.rsplit("=", 1) for i in items.split(","))}
    return counted_ms, batch


@dataclass
class _MarkRecord:
    key: str
    counted_ms: int
    event_ids: list[str]


@dataclass
class _PartitionMarks:
    """The marks of one partition: per event its marks and the record that holds them last,
    and the records oldest first, to expire."""

    by_event: dict[str, tuple[Marks, str]] = field(default_factory=dict)
    records: deque[_MarkRecord] = field(default_factory=deque)

    def add(self, key: str, counted_ms: int, batch: dict[str, Marks]) -> None:
        for event_id, marks in batch.items():
            self.by_event[event_id] = (marks, key)
        self.records.append(_MarkRecord(key, counted_ms, list(batch)))

    def expire(self, table: MutableMapping[str, str], horizon_ms: int) -> None:
        """Delete the records counted at or before `horizon`, and forget each event whose
        latest marks were in them (an event seen again since stays, with its newer record)."""
        while self.records and self.records[0].counted_ms <= horizon_ms:
            record = self.records.popleft()
            if record.key in table:
                del table[record.key]
            for event_id in record.event_ids:
                seen = self.by_event.get(event_id)
                if seen is not None and seen[1] == record.key:
                    del self.by_event[event_id]


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
    def __init__(
        self,
        book: BudgetBook,
        partitions: int,
        mark_retention: timedelta = DEFAULT_MARK_RETENTION,
    ) -> None:
        self.book = book
        self.partitions = partitions
        self.mark_retention_ms = mark_retention // _MS
        self._windows: dict[str, tuple[Budget, datetime, datetime]] = {}
        self._level_cache: dict[str, tuple[Budget, list[tuple[int, Decimal, Decimal]]]] = {}
        self._crossed: dict[tuple[str, datetime], set[Crossing]] = {}
        """Crossings alerted per (budget, period start), for the RECOVERED transition."""
        self._marks: dict[int, _PartitionMarks] = {}
        """Per partition, the marks of the events counted within the retention window, indexed
        from the table's records."""

    def forget_marks(self) -> None:
        """Re-read the marks from the table (after a rebalance may have changed it)."""
        self._marks.clear()

    def _marks_of(
        self, partition: int, table: MutableMapping[str, str], now_ms: int
    ) -> _PartitionMarks:
        """The partition's marks, read from the table the first time (a record without a time,
        written by an earlier version, counts as written now: it expires one window later)."""
        marks = self._marks.get(partition)
        if marks is None:
            marks = _PartitionMarks()
            prefix = f"m|{partition}|"
            timed, untimed = [], []
            for key in list(table.keys()):
                if key.startswith(prefix):
                    counted_ms, batch = _decode_marks(table[key])
                    if counted_ms is None:
                        untimed.append((key, batch))
                    else:
                        timed.append((counted_ms, key, batch))
            for key, batch in untimed:  # older than any timed record: newer marks win
                for event_id, event_marks in batch.items():
                    marks.by_event[event_id] = (event_marks, key)
            for counted_ms, key, batch in sorted(timed, key=lambda record: record[0]):
                marks.add(key, counted_ms, batch)
            for key, batch in untimed:  # ...but they expire last, one window from now
                marks.records.append(_MarkRecord(key, now_ms, list(batch)))
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
        first deletes the mark records older than the retention window, then writes one record
        with its events' marks (key `m|partition|batch_id|ms`, batch_id e.g. its first offset)
        and the partials last. A mark records the partial's event count that includes the
        event; after a crash that kept the marks but lost the partial's write, the restored
        partial's count is lower than the mark, and the event counts again.
        """
        now = now or datetime.now(UTC)
        step = LedgerStep()
        touched: dict[tuple[str, datetime], Partial] = {}
        moved: dict[str, Budget] = {}
        totals: dict[tuple[str, datetime], Partial] = {}
        counted: dict[tuple[str, datetime], list[str]] = {}
        watch: dict[tuple[str, datetime], tuple[Decimal, Decimal, Decimal]] = {}
        counted_ms = epoch_ms(now)
        marks_now = self._marks_of(partition, table, counted_ms)
        marks_now.expire(table, counted_ms - self.mark_retention_ms)
        known = marks_now.by_event
        record_key = marks_key(partition, batch_id, counted_ms)
        batch: dict[str, Marks] = {}
        for event in events:
            budgets = self.book.matching(event)
            if not budgets:
                continue
            seen = known.get(event.event_id)
            marks = dict(seen[0]) if seen else {}
            usd, tokens = event_usd(event), event_tokens(event)
            for budget in budgets:
                start = self._window(budget, event.event_time)[0]
                key = (budget.id, start)
                part = touched.get(key)
                if part is None:
                    part = touched[key] = Partial.decode(table.get(partial_key(*key, partition)))
                    totals[key] = self.total(budget.id, start, table)
                    counted[key] = []
                    moved[budget.id] = budget
                    self._seed_crossings(budget, start, totals[key])
                    watch[key] = self._next_levels(budget, totals[key])
                if seen is not None:
                    mark = marks.get(budget.id)
                    if mark is not None and mark <= part.events:
                        continue  # counted already, in this partial as it stands
                total = totals[key]
                part.add(usd, tokens)
                total.add(usd, tokens)
                marks[budget.id] = part.events
                usd_at, tokens_at, requests_at = watch[key]
                if (
                    total.spend_usd >= usd_at
                    or total.tokens >= tokens_at
                    or total.requests >= requests_at
                ):  # a threshold is reached: find which (rare, so the loop is here only)
                    before = (total.spend_usd - usd, total.tokens - tokens, total.requests - 1)
                    for measure, threshold, amount in self._levels(budget):
                        if before[measure] < amount <= total.measure_at(measure):
                            step.alerts.append(
                                self._crossing(budget, start, measure, threshold, total, event, now)
                            )
                    watch[key] = self._next_levels(budget, total)
                if budget.hard:
                    counted[key].append(event.event_id)
            batch[event.event_id] = marks
            known[event.event_id] = (marks, record_key)
        if batch:
            table[record_key] = _encode_marks(batch, counted_ms)
            marks_now.records.append(_MarkRecord(record_key, counted_ms, list(batch)))
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
        crossed after a change, or that was deleted; WARN or BREACH for a threshold the total
        reached without a batch of this worker crossing it (a lowered limit, or a budget across
        tenants whose other partitions this worker reads from standby copies that caught up).
        Run periodically and after changes."""
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
                for measure, threshold in sorted(still - crossed):
                    state: AlertState = "BREACH" if threshold >= 1 else "WARN"
                    alerts.append(
                        self._alert(budget, start, state, measure, threshold, total, now, None)
                    )
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
        """After a restart, thresholds a tenant's budget crossed before it are known without
        alerting again: its events all land on one partition, so its total is exact here.

        A budget across tenants sums partitions that other workers may own; this worker reads
        them from standby copies that lag, so a threshold can be crossed where no worker sees it
        cross. Such a budget starts with nothing known: `review` announces every threshold its
        total has reached, under the same deterministic alert id whichever worker or restart
        announces it (deliveries are deduplicated by that id)."""
        if (budget.id, start) not in self._crossed:
            spans_partitions = budget.scope.tenant is None and self.partitions > 1
            known = set() if spans_partitions else self._crossings(budget, total)
            self._crossed[(budget.id, start)] = known

    def _levels(self, budget: Budget) -> list[tuple[int, Decimal, Decimal]]:
        """(measure index, threshold, amount reached at it) for each limit and threshold of the
        budget, worked out once per budget version (the ledger's inner loop checks them)."""
        cached = self._level_cache.get(budget.id)
        if cached is None or cached[0] is not budget:
            levels = [
                (MEASURES.index(measure), threshold, limit * threshold)
                for measure, limit in budget.limits()
                for threshold in budget.thresholds
            ]
            cached = self._level_cache[budget.id] = (budget, levels)
        return cached[1]

    def _next_levels(self, budget: Budget, total: Partial) -> tuple[Decimal, Decimal, Decimal]:
        """Per measure (usd, tokens, requests), the lowest amount of a threshold the total has
        not reached yet (infinity when none): the ledger looks closer only once one is reached."""
        lowest = [_NEVER, _NEVER, _NEVER]
        for measure, _, amount in self._levels(budget):
            if amount > total.measure_at(measure) and amount < lowest[measure]:
                lowest[measure] = amount
        return lowest[0], lowest[1], lowest[2]

    def _crossing(
        self,
        budget: Budget,
        start: datetime,
        measure_at: int,
        threshold: Decimal,
        total: Partial,
        event: UsageEvent,
        now: datetime,
    ) -> AlertEvent:
        measure = MEASURES[measure_at]
        self._crossed.setdefault((budget.id, start), set()).add((measure, threshold))
        state: AlertState = "BREACH" if threshold >= 1 else "WARN"
        alert = self._alert(budget, start, state, measure, threshold, total, now, None)
        return alert.model_copy(update={"trigger_event_id": event.event_id})

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
